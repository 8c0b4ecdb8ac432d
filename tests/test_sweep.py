"""The batched sweep engine against the naive one-forward-per-head loop, and planted ground truth."""

import numpy as np
import pytest
import torch

import interp
from interp.core.errors import InterpError
from interp.core.heads import Head
from interp.engine.sweep import kl_per_prompt, resample_sources, sweep
from interp.model.tiny import build_tiny
from interp.testing.reference import naive_sweep
from tests.conftest import PROMPTS

KINDS = [("zero", {}), ("scale", {"alpha": 2.0}), ("uniform", {}), ("mean", {}), ("resample", {})]


@pytest.mark.parametrize(("kind", "extra"), KINDS)
def test_batched_sweep_equals_naive_loop(tiny_model, kind, extra):
    naive = naive_sweep(tiny_model, PROMPTS, kl_per_prompt, kind=kind, **extra)
    # Odd batch size and prompt chunks so rows of different heads and prompts share passes.
    fast = sweep(tiny_model, PROMPTS, kl_per_prompt, kind=kind, batch_size=7, prompt_chunk=3, progress=False, **extra)
    assert fast.per_prompt.shape == (tiny_model.n_layers * tiny_model.n_heads, len(PROMPTS))
    assert np.max(np.abs(fast.scores - naive.scores)) <= 1e-5
    assert np.max(np.abs(fast.per_prompt - naive.per_prompt)) <= 1e-5
    assert np.all(fast.scores > 0)


def test_prefix_reuse_is_exact(tiny_llama):
    with_reuse = sweep(tiny_llama, PROMPTS, kl_per_prompt, kind="zero", progress=False)
    without = sweep(tiny_llama, PROMPTS, kl_per_prompt, kind="zero", reuse_prefix=False, progress=False)
    assert np.max(np.abs(with_reuse.scores - without.scores)) <= 1e-6


def test_hidden_readout_and_dataset_level_scores(tiny_llama):
    def mean_shift(base, ablated):  # a dataset-level score: one number per head
        return (base.mean(0) - ablated.mean(0)).norm()

    result = sweep(tiny_llama, PROMPTS, mean_shift, readout="hidden", dataset_level=True, progress=False)
    assert result.per_prompt is None and result.base.shape == (len(PROMPTS), tiny_llama.d_model)
    naive = naive_sweep(tiny_llama, PROMPTS, mean_shift, readout="hidden")
    assert np.max(np.abs(result.scores - naive.scores)) <= 1e-5


def test_groups_are_intervened_on_together(tiny_llama):
    groups = [["L0H1", "L2H3"], ["L1H0"]]
    result = sweep(tiny_llama, PROMPTS, kl_per_prompt, groups=groups, progress=False)
    batch = tiny_llama.tokenize(PROMPTS)
    base = torch.log_softmax(interp.engine.run.forward_last(tiny_llama, batch).logits, -1)
    for group, score in zip(groups, result.scores, strict=True):
        iv = interp.make_intervention(tiny_llama, group, "zero")
        ablated = torch.log_softmax(interp.engine.run.forward_last(tiny_llama, batch, iv).logits, -1)
        assert abs(score - float(kl_per_prompt(base, ablated).mean())) <= 1e-5
    grid = result.grid(tiny_llama.n_layers, tiny_llama.n_heads)
    assert np.isnan(grid[0, 1]) and grid[1, 0] == pytest.approx(result.scores[1])


def test_heads_subset_leaves_others_unscored(tiny_llama):
    result = interp.scan("ablation-kl", tiny_llama, PROMPTS, progress=False)
    subset = sweep(tiny_llama, PROMPTS, kl_per_prompt, heads=["L2H1", "L0H0"], progress=False)
    grid = subset.grid(tiny_llama.n_layers, tiny_llama.n_heads)
    assert np.isnan(grid).sum() == tiny_llama.n_layers * tiny_llama.n_heads - 2
    assert grid[2, 1] == pytest.approx(result["L2H1"], abs=1e-6)


def test_planted_decisive_head_ranks_first():
    """Scale one head's slice of W_O so that head dominates the residual stream: zeroing it must move the
    next-token distribution more than zeroing any other head."""
    model, tok = build_tiny("llama")
    d_head = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight[:, 2 * d_head : 3 * d_head] *= 30.0
    planted = interp.wrap_model(model, tok, "planted")
    result = interp.scan("ablation-kl", planted, PROMPTS, progress=False)
    assert result.top_heads(1) == [Head(1, 2)]
    assert result["L1H2"] > 2 * result.top(2).score.iloc[1]


def test_sweep_input_errors(tiny_llama):
    with pytest.raises(InterpError, match="batch_size"):
        sweep(tiny_llama, PROMPTS, kl_per_prompt, batch_size=0)
    with pytest.raises(InterpError, match="at least 2 prompts"):
        sweep(tiny_llama, PROMPTS[:1], kl_per_prompt, kind="resample", progress=False)
    with pytest.raises(InterpError, match="out of range"):
        sweep(tiny_llama, PROMPTS, kl_per_prompt, heads=["L9H0"], progress=False)


def test_resample_sources_are_a_seeded_derangement():
    a = resample_sources(6, seed=3)
    assert a == resample_sources(6, seed=3)
    assert sorted(a) == list(range(6)) and all(i != j for i, j in enumerate(a))


def test_ablation_kl_records_config_and_provenance(tiny_llama):
    result = interp.scan("ablation-kl", tiny_llama, PROMPTS, kind="scale", alpha=0.5, progress=False)
    assert result.metric == "ablation-kl" and result.model == "tiny-llama"
    assert result.config["kind"] == "scale" and result.config["alpha"] == 0.5
    assert result.provenance["n_prompts"] == len(PROMPTS) and result.provenance["template"] == "raw"
    assert result.provenance["prompts_hash"].startswith("sha256:")
    assert "torch" in result.provenance["versions"]
    assert result.per_prompt.shape == (len(PROMPTS), 3, 4)
    assert np.allclose(result.per_prompt.mean(0), result.scores)


def test_progress_callback_reaches_the_total(tiny_llama):
    calls = []
    interp.scan("ablation-kl", tiny_llama, PROMPTS, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))
