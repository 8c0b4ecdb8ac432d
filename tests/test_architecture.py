"""The architecture's promises: one definition per intervention kind, registries that refuse duplicates,
direction-aware ranking, and the private TransformerLens API we rely on (a clear failure if an upgrade drops it)."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch

import interp
from interp.core.errors import InterpError
from interp.core.registry import _METRICS, get_metric, register_metric
from interp.core.results import HeadScores
from interp.engine import interventions
from interp.engine.hookpoints import hook_count, v_name, z_name
from interp.engine.interventions import Kind, head_delta, register_kind
from interp.engine.sweep import kl_per_prompt
from interp.lines.ablation.metrics import AblationKLConfig
from interp.model.registry import ModelEntry, register_model

PROMPTS = ["hello world", "the cat sat on the mat", "abc"]


def test_kind_literal_lists_exactly_the_registered_kinds():
    assert set(get_args(interventions.InterventionKind)) == set(interventions._KINDS)
    assert get_args(interventions.InterventionKind) == interventions.KINDS


class Negate(Kind):
    """A sixth kind, as docs/architecture.md adds it: the head's output is multiplied by -1."""

    name = "negate"

    def z_mul(self, iv):
        return -1.0

    def delta(self, z, v, mask, *, alpha=0.0, mean=None):
        return -2.0 * z


@pytest.fixture
def negate_kind():
    register_kind(Negate)
    try:
        yield
    finally:
        interventions._KINDS.pop("negate")


def test_a_new_kind_is_one_class_and_works_in_the_batched_sweep(tiny_llama, negate_kind):
    """The engine's batched sweep with the new kind equals a plain loop with a hand-written hook per head."""
    fast = interp.sweep(tiny_llama, PROMPTS, kl_per_prompt, kind="negate", progress=False)
    batch = tiny_llama.tokenize(PROMPTS)
    with torch.no_grad():
        base = torch.log_softmax(tiny_llama.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1], -1)
    for (head,), score in zip(fast.groups, fast.scores, strict=True):

        def negate(z, hook, h=head.head):
            z = z.clone()
            z[:, :, h] = -z[:, :, h]
            return z

        with torch.no_grad():
            logits = tiny_llama.bridge.run_with_hooks(
                batch.input_ids, attention_mask=batch.attention_mask, fwd_hooks=[(z_name(head.layer), negate)]
            )
        expected = float(kl_per_prompt(base, torch.log_softmax(logits[:, -1], -1)).mean())
        assert score == pytest.approx(expected, abs=1e-5)
    assert hook_count(tiny_llama) == 0


def test_a_new_kind_gives_its_attribution_delta(tiny_llama, negate_kind):
    batch = tiny_llama.tokenize(PROMPTS)
    acts = interp.capture(tiny_llama, batch, [z_name(1), v_name(1)])
    delta = head_delta("negate", acts[z_name(1)], acts[v_name(1)], batch.attention_mask)
    mask = batch.attention_mask[:, :, None, None].to(delta)
    torch.testing.assert_close(delta, -2.0 * acts[z_name(1)] * mask)


def test_a_duplicate_kind_is_refused():
    class Zero2(Kind):
        name = "zero"

    with pytest.raises(InterpError, match="already registered"):
        register_kind(Zero2)


def test_a_duplicate_metric_name_is_refused():
    before = get_metric("ablation-kl")
    with pytest.raises(InterpError, match="'ablation-kl' is already registered"):
        register_metric("ablation-kl", AblationKLConfig, "again")(lambda *a: None)
    assert _METRICS["ablation-kl"] is before


def test_a_duplicate_model_name_is_refused():
    entry = ModelEntry("tiny-llama", "again", "test", "tiny", lambda: None)
    with pytest.raises(InterpError, match="'tiny-llama' is already registered"):
        register_model(entry)
    alias = ModelEntry("brand-new-name", "again", "test", "tiny", lambda: None, aliases=("default",))
    with pytest.raises(InterpError, match="'default' is already registered"):
        register_model(alias)
    assert interp.model.registry.get_entry("tiny-llama").description != "again"


def test_top_ranks_by_the_metrics_direction():
    scores = np.array([[0.5, -2.0], [-0.1, 1.0]])
    effect = HeadScores(scores, metric="ablation-effect", model="m")
    assert get_metric("ablation-effect").direction == "low"
    assert list(effect.top(2)["label"]) == ["L0H1", "L1H0"]  # most negative first
    kl = HeadScores(scores, metric="ablation-kl", model="m")
    assert list(kl.top(2)["label"]) == ["L1H1", "L0H0"]  # largest first
    assert list(effect.top(1, ascending=False)["label"]) == ["L1H1"]  # an explicit order still wins


# ---------------------------------------------------------------------------------------------------------
# Private TransformerLens API (interp/model/bridge.py, interp/engine/hookpoints.py)
# ---------------------------------------------------------------------------------------------------------
def _need(obj: object, attr: str, where: str) -> None:
    assert hasattr(obj, attr), (
        f"TransformerLens no longer has {where}.{attr}, which interp relies on (see interp/model/bridge.py's "
        "docstring); adapt interp/model/bridge.py / interp/engine/hookpoints.py to the new TransformerLens."
    )


def test_private_transformerlens_api_still_exists(tiny_llama):
    from transformer_lens.model_bridge.sources.transformers import source

    _need(source, "load_modality_processor", "transformer_lens.model_bridge.sources.transformers.source")
    _need(tiny_llama.bridge, "_teardown_start_at_layer", "TransformerBridge")
    hook_point = next(iter(tiny_llama.bridge.hook_dict.values()))
    _need(hook_point, "_forward_hooks", "HookPoint")
    _need(tiny_llama.bridge.adapter, "component_mapping", "TransformerBridge.adapter")
    blocks = tiny_llama.bridge.adapter.component_mapping["blocks"]
    _need(blocks, "name", 'component_mapping["blocks"]')
    layers = tiny_llama.hf_model.get_submodule(blocks.name)
    assert len(layers) == tiny_llama.n_layers, f"component_mapping['blocks'].name={blocks.name!r} is not the layers"
