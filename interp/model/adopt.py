"""Bring your own model: `as_loaded_model` turns whatever model object a user already has into a LoadedModel.

Every public entry point (`interp.scan`, `sweep`, `make_intervention`, `intervene`, `generate`, `capture`, the
registered analyzers, `interp.app.serve`) calls it, so each accepts

- a `LoadedModel` (returned as is);
- a `TransformerBridge` built with TransformerLens' own API (`TransformerBridge.boot_transformers(...)`): used
  as it is, never re-booted. Its tokenizer is TransformerLens' (pass `tokenizer=` to use another); hooks the
  user attached stay attached (and run during interp's passes, like any hook on that bridge); interp's own
  hooks are added and removed around each pass;
- an HF `PreTrainedModel` with its tokenizer (or multimodal processor): `(model, tokenizer)` or
  `as_loaded_model(model, tokenizer=tok)`. A bridge is booted over it once (TransformerLens replaces the
  model's attention modules with hooked components and switches it to eager attention, in place);

and wraps each object once: the LoadedModel is kept on the object (interp.model.loaded.WRAPPER_ATTR), so a
second call, from any entry point, returns the same wrapper with the same bridge.
"""

from __future__ import annotations

import copy
from typing import Any

from interp.core.errors import InterpError
from interp.model.loaded import LoadedModel, cached_wrapper, remember_wrapper
from interp.model.loading import wrap_model

ModelLike = Any
"""What the public entry points take: LoadedModel | TransformerBridge | PreTrainedModel | (model, tokenizer)."""

MODEL_KINDS = "a LoadedModel, a TransformerLens TransformerBridge, or an HF PreTrainedModel with its tokenizer"


def as_loaded_model(obj: Any, tokenizer: Any = None) -> LoadedModel:
    """The LoadedModel for `obj` (see the module doc); wraps once and caches the wrapper on the object.

    tokenizer: for an HF model, its tokenizer or processor (also accepted as obj=(model, tokenizer)); for a
    bridge, a tokenizer to use instead of the bridge's own.
    """
    if isinstance(obj, tuple):
        if len(obj) != 2:
            raise InterpError(f"A model tuple is (model, tokenizer); got {len(obj)} items.")
        if tokenizer is not None:
            raise InterpError("Pass the tokenizer once: either in the (model, tokenizer) tuple or as tokenizer=.")
        obj, tokenizer = obj
    if isinstance(obj, LoadedModel):
        if tokenizer is not None and not obj.uses_tokenizer(tokenizer):
            raise InterpError(f"{obj.name} is already a LoadedModel with its own tokenizer; drop tokenizer=.")
        return obj
    if isinstance(obj, str):
        raise InterpError(
            f"Got the name {obj!r} where a model object belongs: load it first, model = interp.load_model({obj!r})."
        )
    if _is_bridge(obj):
        return _from_bridge(obj, tokenizer)
    if _is_hf_model(obj):
        return _from_hf(obj, tokenizer)
    raise InterpError(f"Expected {MODEL_KINDS}; got {type(obj).__module__}.{type(obj).__name__}.")


def _is_bridge(obj: Any) -> bool:
    from transformer_lens.model_bridge import TransformerBridge

    return isinstance(obj, TransformerBridge)


def _is_hf_model(obj: Any) -> bool:
    from transformers import PreTrainedModel

    return isinstance(obj, PreTrainedModel)


def _from_bridge(bridge: Any, tokenizer: Any) -> LoadedModel:
    cached = cached_wrapper(bridge)
    if cached is not None and (tokenizer is None or cached.uses_tokenizer(tokenizer)):
        return cached
    hf_model = bridge.original_model
    processor = getattr(bridge, "processor", None)
    if tokenizer is not None and hasattr(tokenizer, "image_processor"):
        processor, tokenizer = tokenizer, tokenizer.tokenizer
    given = tokenizer
    tokenizer = tokenizer if tokenizer is not None else bridge.tokenizer
    if tokenizer is None:
        raise InterpError("This TransformerBridge has no tokenizer: pass one, as_loaded_model(bridge, tokenizer=tok).")
    if tokenizer.pad_token is None:  # left-padded batches need one; a copy, so the caller's tokenizer stays as is
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    name = str(getattr(bridge.cfg, "model_name", None) or getattr(hf_model.config, "name_or_path", "") or "bridge")
    processed = " (weights processed by TransformerLens)" if getattr(bridge, "_weights_processed", False) else ""
    hf_model.eval()  # dropout off: scores must not depend on a random mask
    loaded = LoadedModel(bridge, hf_model, tokenizer, name, f"TransformerBridge in memory{processed}")
    loaded.given_tokenizer = given
    if processor is not None and hasattr(processor, "image_processor"):
        loaded.processor = processor
    if cached is not None:  # another tokenizer on a bridge already wrapped: keep the first as the cached one
        return loaded
    return remember_wrapper(loaded)


def _from_hf(hf_model: Any, tokenizer: Any) -> LoadedModel:
    cached = cached_wrapper(hf_model)
    if cached is not None and (tokenizer is None or cached.uses_tokenizer(tokenizer)):
        return cached
    if tokenizer is None:
        raise InterpError(
            f"An HF model needs its tokenizer: pass (model, tokenizer) or tokenizer=… ({type(hf_model).__name__})."
        )
    name = str(getattr(hf_model.config, "name_or_path", "") or type(hf_model).__name__)
    return wrap_model(hf_model.eval(), tokenizer, name, source="HF model in memory")
