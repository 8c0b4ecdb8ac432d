"""Every TransformerLens / transformers workaround in one place, each with the reason it exists.

- `boot_bridge`: wrap an already-loaded HF model in a TransformerBridge without any hub access.
- `_no_processor_download`: TransformerLens' boot would fetch a multimodal processor from the hub.
- `quiet`: transformers / TransformerLens print progress bars and warnings while loading.
- `check_supported`: a clear error before TransformerLens fails deep inside on an unknown architecture.
- `fold_value_bias`: TransformerLens' own weight processing, value-bias folding only (`load_model(...,
  fold_value_biases=True)`), for results comparable with HookedTransformer-era zero ablations.

Private TransformerLens API used by the toolkit (tests/test_bridge_api.py fails with a clear message if an
upgrade removes any of it): here `source.load_modality_processor`; in interp/engine/hookpoints.py the hook
points' `_forward_hooks` (counting attached hooks), the bridge's `_teardown_start_at_layer` (a pass stopped
early by an exception leaves start_at_layer state behind) and the HF layer-list swap (skipping the blocks
below a cached residual).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from interp.core.errors import ModelLoadError


def check_supported(architectures: Sequence[str], where: Path) -> None:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    if not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        examples = ", ".join(sorted(a for a in SUPPORTED_ARCHITECTURES if a.endswith("ForCausalLM"))[:12])
        raise ModelLoadError(
            f"Unsupported architecture {', '.join(architectures)} in {where}: TransformerLens's bridge "
            f"supports e.g. {examples}, … ({len(SUPPORTED_ARCHITECTURES)} in all)."
        )


def boot_bridge(hf_model: Any, tokenizer: Any, name: str) -> Any:
    """A TransformerBridge over an already-loaded HF model (no hub access; the model keeps its device/dtype)."""
    from transformer_lens.model_bridge import TransformerBridge

    param = next(hf_model.parameters())
    # Bridge over a tokenizer of our own: TransformerLens may re-load the tokenizer by its path to add
    # BOS handling, and we always tokenize ourselves (TokenBatch) anyway.
    with quiet(), _no_processor_download():
        return TransformerBridge.boot_transformers(
            name, hf_model=hf_model.eval(), tokenizer=tokenizer, device=param.device, dtype=param.dtype
        )


def fold_value_bias(bridge: Any, name: str) -> None:
    """Fold every head's value bias into the attention output bias, in place (TransformerLens' process_weights).

    Only fold_value_biases: LayerNorm folding and weight centering are off because they leave hook_z, and so
    every ablation, unchanged, but rewrite the weights a user may read. TransformerLens runs this through
    enable_compatibility_mode, which also turns on its legacy hook aliases; the hook points interp uses keep
    their values (tests/test_transformerlens.py checks the scores)."""
    if getattr(bridge, "_weights_processed", False):
        raise ModelLoadError(f"{name}: the bridge's weights are already processed; fold value biases only once.")
    with quiet():
        try:
            bridge.enable_compatibility_mode(
                disable_warnings=True,
                fold_ln=False,
                center_writing_weights=False,
                center_unembed=False,
                fold_value_biases=True,
            )
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            raise ModelLoadError(f"Could not fold the value biases of {name}: {exc}") from exc


def value_bias_layers(bridge: Any) -> list[int] | None:
    """Layers whose attention has a non-zero value bias (b_V); None when the bridge cannot tell."""
    layers = []
    try:
        for layer, block in enumerate(bridge.blocks):
            b_v = block.attn.b_V  # [n_heads, d_head] or None (a bias-free value projection)
            if b_v is not None and bool((b_v != 0).any()):
                layers.append(layer)
    except (AttributeError, RuntimeError, TypeError):
        return None
    return layers


@contextlib.contextmanager
def _no_processor_download() -> Iterator[None]:
    """Keep TransformerLens from fetching a multimodal processor while booting the bridge.

    For multimodal configs its boot calls AutoProcessor.from_pretrained(model name), which would go to the
    hub, and on failure tries to pip-install torchvision. We load the processor ourselves from local files
    (or build it in code), so that step is replaced by a no-op for the duration of the boot.
    """
    from transformer_lens.model_bridge.sources.transformers import source

    original = source.load_modality_processor
    source.load_modality_processor = lambda *args, **kwargs: None
    try:
        yield
    finally:
        source.load_modality_processor = original


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the progress bars and chatter of transformers / TransformerLens during loading."""
    from transformers.utils import logging as hf_logging

    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:  # the caller's settings come back as they were (a user who turned progress bars off keeps them off)
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
