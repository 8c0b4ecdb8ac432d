"""Performance issue: fast exact sweep == naive loop, resumable sweeps, attribution screening, device maps.

Ray is tested in tests/test_performance_ray.py (one test: starting Ray is the slow part).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import interp
from interp.core.errors import InterpError
from interp.core.heads import Head
from interp.engine.attribution import EXACT_SCORES, attribute, head_delta, screen_then_verify, top_heads
from interp.engine.checkpoint import CheckpointError
from interp.engine.hookpoints import v_name, z_name
from interp.engine.prefix import shared_prefix_length, split_prefix
from interp.engine.run import capture, make_intervention
from interp.engine.sweep import kl_per_prompt, plan_blocks, plan_passes, sweep
from interp.model.tiny import build_tiny
from interp.testing.reference import naive_group_readout, naive_sweep

# Different lengths, so passes trim padding differently.
PROMPTS = ["hello world", "the cat sat on the mat", "abc", "what is this thing?", "a much longer prompt here"]


# ---------------------------------------------------------------------------------------------------------
# Fast exact == naive
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zero", "uniform", "mean", "resample", "scale"])
def test_fast_exact_equals_naive(tiny_model: interp.LoadedModel, kind: str) -> None:
    alpha = 2.5 if kind == "scale" else None
    # The naive loop recomputes mean/resample values per head, one prompt at a time: fewer prompts there.
    prompts = PROMPTS if kind in ("zero", "uniform", "scale") else PROMPTS[:3]
    naive = naive_sweep(tiny_model, prompts, kl_per_prompt, kind=kind, alpha=alpha or 1.0)
    # batch_size 5 and prompt_chunk 2: many passes, several start layers and trimmed widths per chunk.
    fast = sweep(
        tiny_model, prompts, kl_per_prompt, kind=kind, alpha=alpha, batch_size=5, prompt_chunk=2, progress=False
    )
    assert fast.per_prompt is not None and naive.per_prompt is not None
    assert np.abs(fast.per_prompt - naive.per_prompt).max() <= 1e-5
    assert np.abs(fast.scores - naive.scores).max() <= 1e-5
    assert naive.scores.max() > 1e-4  # the comparison is not between zeros


def test_fast_exact_equals_naive_hidden_readout(tiny_llama: interp.LoadedModel) -> None:
    def dist(base: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return (base - new).norm(dim=-1)

    naive = naive_sweep(tiny_llama, PROMPTS, dist, readout="hidden", kind="zero")
    fast = sweep(tiny_llama, PROMPTS, dist, readout="hidden", kind="zero", batch_size=7, progress=False)
    assert np.abs(fast.per_prompt - naive.per_prompt).max() <= 1e-5


def test_plan_passes_never_mixes_start_layers() -> None:
    start = [0, 0, 1, 1, 1, 2]  # start layer per group
    lengths = [5, 3, 9]  # per prompt
    rows = [(g, p) for g in range(6) for p in range(3)]
    passes = plan_passes(rows, start, lengths, batch_size=4)
    flat = [r for part in passes for r in part]
    assert sorted(flat) == sorted(rows)  # every row exactly once
    assert all(len(part) <= 4 for part in passes)
    assert all(len({start[g] for g, _ in part}) == 1 for part in passes)


# ---------------------------------------------------------------------------------------------------------
# Shared prefix (a chat template's system prompt run once per group, suffixes against its KV cache)
# ---------------------------------------------------------------------------------------------------------
SYSTEM = "<|system|>You are a careful, helpful assistant.<|end|>\n<|user|>"
CHAT = [SYSTEM + p + "<|end|>\n<|assistant|>" for p in PROMPTS]  # shared prefix, different lengths (padding)
SAME_LENGTH = ["hello you!", "the cat sa", "what is it", "quick fox?"]
CHAT_SAME_LENGTH = [SYSTEM + p + "<|end|>\n<|assistant|>" for p in SAME_LENGTH]  # no padding


@pytest.mark.parametrize("kind", ["zero", "uniform", "mean", "scale", "resample"])
@pytest.mark.parametrize("prompts", [CHAT, CHAT_SAME_LENGTH], ids=["padded", "unpadded"])
def test_shared_prefix_equals_naive(tiny_model: interp.LoadedModel, kind: str, prompts: list[str]) -> None:
    alpha = 2.5 if kind == "scale" else None
    if kind in ("mean", "resample"):  # the naive loop recomputes their values per head: fewer prompts
        prompts = prompts[:3]
    naive = naive_sweep(tiny_model, prompts, kl_per_prompt, kind=kind, alpha=alpha or 1.0, template="raw")
    batch = tiny_model.tokenize(prompts, "raw")
    assert bool(batch.attention_mask.all()) == (prompts[0] in CHAT_SAME_LENGTH)
    # batch_size 5 and prompt_chunk 2: chunks split the set (the last one holds a single prompt), groups
    # straddle passes, and every start layer occurs; chunk=None: all prompts at once.
    for chunk in (2, None):
        fast = sweep(
            tiny_model,
            prompts,
            kl_per_prompt,
            kind=kind,
            alpha=alpha,
            template="raw",
            batch_size=5,
            prompt_chunk=chunk,
            shared_prefix=True,
            progress=False,
        )
        if kind == "resample":  # per-prompt values at every position: runs without a shared prefix
            assert fast.shared_prefix == [0] * len(fast.shared_prefix)
        else:
            assert min(fast.shared_prefix) >= len(SYSTEM)  # the byte tokenizer: one token per character
        assert np.abs(fast.per_prompt - naive.per_prompt).max() <= 1e-5
        assert np.abs(fast.scores - naive.scores).max() <= 1e-5
    assert naive.scores.max() > 1e-4


def _dist(base: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    return (base - new).norm(dim=-1)


@pytest.mark.parametrize("kind", ["zero", "uniform", "mean", "scale"])
def test_shared_prefix_hidden_readout_equals_naive(tiny_llama: interp.LoadedModel, kind: str) -> None:
    alpha = 0.5 if kind == "scale" else None
    prompts = CHAT[:3] if kind == "mean" else CHAT
    naive = naive_sweep(tiny_llama, prompts, _dist, readout="hidden", kind=kind, alpha=alpha or 1.0, template="raw")
    fast = sweep(
        tiny_llama,
        prompts,
        _dist,
        readout="hidden",
        kind=kind,
        alpha=alpha,
        template="raw",
        batch_size=7,
        prompt_chunk=3,
        shared_prefix=True,
        progress=False,
    )
    assert min(fast.shared_prefix) > 0
    assert np.abs(fast.per_prompt - naive.per_prompt).max() <= 1e-5
    assert naive.per_prompt.max() > 1e-3


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("kind", ["uniform", "scale"])
def test_fixed_heads_equal_one_plain_forward_per_group(tiny_model: interp.LoadedModel, kind: str, shared: bool) -> None:
    """sweep(fixed=G): every row has G and its own head intervened on together; passes start at the row's own
    layer from residuals cached with G intervened on. Checked against one plain forward per group."""
    alpha = 0.0 if kind == "scale" else None
    fixed = [Head(1, 2), Head(2, 0)]
    heads = [h for h in tiny_model.heads() if h not in fixed]
    base = naive_group_readout_safe(tiny_model, CHAT, [], kind)
    fast = sweep(
        tiny_model,
        CHAT,
        _dist,
        readout="hidden",
        heads=heads,
        fixed=fixed,
        kind=kind,
        alpha=alpha,
        template="raw",
        batch_size=6,
        prompt_chunk=3,
        shared_prefix=shared,
        progress=False,
    )
    assert (min(fast.shared_prefix) > 0) == shared
    assert torch.allclose(fast.base, base, atol=1e-5)  # the base readout is the unintervened one
    expected = np.stack(
        [_dist(base, naive_group_readout_safe(tiny_model, CHAT, [*fixed, h], kind)).numpy() for h in heads]
    )
    assert np.abs(fast.per_prompt - expected).max() <= 1e-5
    assert [g for (g,) in fast.groups] == heads  # reported per group as given, without the fixed heads


def naive_group_readout_safe(model: interp.LoadedModel, prompts: list[str], heads: list[Head], kind: str):
    """The final hidden states with `heads` intervened on together (kind "scale" with alpha 0)."""
    return naive_group_readout(model, prompts, heads, kind=kind, alpha=0.0, template="raw")


def test_auto_shares_only_a_worthwhile_prefix(tiny_llama: interp.LoadedModel) -> None:
    chat = sweep(tiny_llama, CHAT, kl_per_prompt, heads=["L2H0"], template="raw", shared_prefix=None, progress=False)
    plain = sweep(
        tiny_llama, PROMPTS, kl_per_prompt, heads=["L2H0"], template="raw", shared_prefix=None, progress=False
    )
    off = sweep(tiny_llama, CHAT, kl_per_prompt, heads=["L2H0"], template="raw", shared_prefix=False, progress=False)
    # The byte tokenizer adds BOS: the plain prompts share that one token, too few to be worth it.
    assert chat.shared_prefix == [len(SYSTEM) + 1] and plain.shared_prefix == [0] and off.shared_prefix == [0]
    assert np.abs(chat.scores - off.scores).max() <= 1e-5


def test_split_prefix_layout(tiny_llama: interp.LoadedModel) -> None:
    batch = tiny_llama.tokenize(CHAT[:3], "raw")
    n = shared_prefix_length(batch)
    prefix, suffixes = split_prefix(batch, n)
    assert tiny_llama.tokenizer.decode(prefix.input_ids[0], skip_special_tokens=True) == SYSTEM
    assert prefix.input_ids.shape == (1, n) and bool(prefix.attention_mask.all())
    seq = batch.input_ids.shape[1]
    for i, length in enumerate(batch.lengths.tolist()):
        real = suffixes.input_ids[i][suffixes.attention_mask[i].bool()]
        # prefix + the row's real suffix tokens = the row's own unpadded tokens
        assert torch.equal(torch.cat([prefix.input_ids[0], real]), batch.input_ids[i, seq - length :])
    assert bool(suffixes.attention_mask[:, -1].all())  # the readout column is real in every row
    # a prompt equal to the prefix of another: the prefix stops one token short of it
    short = tiny_llama.tokenize([SYSTEM, SYSTEM + "more"], "raw")
    assert shared_prefix_length(short) == short.lengths.min().item() - 1


def test_plan_blocks_cover_every_row_once() -> None:
    start = [0, 0, 1, 1, 1, 2]
    rows = [(g, p) for g in range(6) for p in range(3)]
    blocks = plan_blocks(rows, start, [5, 3, 9], batch_size=4, max_groups=lambda layer: 2)
    flat = [r for _, _, passes in blocks for part in passes for r in part]
    assert sorted(flat) == sorted(rows)
    for layer, groups, passes in blocks:
        assert len(groups) <= 2 and all(start[g] == layer for g in groups)
        assert {g for part in passes for g, _ in part} == set(groups)
        assert all(len(part) <= 4 for part in passes)


# ---------------------------------------------------------------------------------------------------------
# Resumable sweeps
# ---------------------------------------------------------------------------------------------------------
class Crash(RuntimeError):
    pass


def crashing_kl(after: int):
    """kl_per_prompt that raises on its call number `after` (a sweep killed mid-run)."""
    calls = {"n": 0}

    def score(base: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == after:
            raise Crash("simulated interruption")
        return kl_per_prompt(base, new)

    score.__qualname__ = "kl_per_prompt"  # the same score function as far as the checkpoint is concerned
    score.__module__ = kl_per_prompt.__module__
    return score


def test_interrupted_sweep_resumes_without_recomputing(tiny_llama: interp.LoadedModel, tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    full = sweep(tiny_llama, PROMPTS, kl_per_prompt, batch_size=6, progress=False)
    with pytest.raises(Crash):
        sweep(tiny_llama, PROMPTS, crashing_kl(5), batch_size=6, checkpoint=ckpt, checkpoint_every=0, progress=False)
    # A stray temporary file from a hard kill must be ignored.
    (ckpt / ".part-000099.npz.xyz.tmp").write_bytes(b"half a file")
    first = np.zeros_like(full.per_prompt, dtype=bool)
    for part in sorted(ckpt.glob("part-*.npz")):
        with np.load(part) as data:
            first[data["groups"], data["prompts"]] = True
    n_finished = int(first.sum())
    # Layer 0's 4 heads x 5 prompts = 20 rows run as 4 passes of 5 (batch_size 6, split evenly); the crash
    # comes in the 5th pass, so exactly those 20 rows are on disk.
    assert n_finished == 20

    resumed = sweep(tiny_llama, PROMPTS, kl_per_prompt, batch_size=6, checkpoint=ckpt, progress=False)
    assert resumed.resumed_rows == n_finished
    assert resumed.computed is not None
    assert int((resumed.computed & first).sum()) == 0  # finished rows: recomputed 0 times
    assert resumed.forward_rows == first.size - n_finished
    finished_heads = first.all(1)
    assert finished_heads.sum() == 4  # whole heads were finished, and none of them ran again
    assert not resumed.computed[finished_heads].any()
    assert np.abs(resumed.per_prompt - full.per_prompt).max() <= 1e-6

    again = sweep(tiny_llama, PROMPTS, kl_per_prompt, batch_size=6, checkpoint=ckpt, progress=False)
    assert again.forward_rows == 0 and again.resumed_rows == first.size
    assert np.array_equal(again.per_prompt, resumed.per_prompt)


def test_dataset_level_sweep_resumes(tiny_gpt2: interp.LoadedModel, tmp_path) -> None:
    def spread(base: torch.Tensor, new: torch.Tensor) -> torch.Tensor:  # dataset-level: a scalar
        return (base - new).norm()

    full = sweep(tiny_gpt2, PROMPTS, spread, readout="hidden", dataset_level=True, batch_size=4, progress=False)
    calls = {"n": 0}
    module = importlib.import_module("interp.engine.sweep")  # the module (interp.engine.sweep is also the function)
    original = module.readout_of

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Crash("simulated interruption")
        return original(*args, **kwargs)

    kw = dict(readout="hidden", dataset_level=True, batch_size=4, checkpoint=tmp_path / "c", checkpoint_every=0)
    module.readout_of = flaky
    try:
        with pytest.raises(Crash):
            sweep(tiny_gpt2, PROMPTS, spread, progress=False, **kw)
    finally:
        module.readout_of = original
    resumed = sweep(tiny_gpt2, PROMPTS, spread, progress=False, **kw)
    assert resumed.resumed_rows == 4 * 4  # passes 2-5 finished (pass 1 is the base run)
    assert np.abs(resumed.scores - full.scores).max() <= 1e-5


def test_checkpoint_of_another_sweep_is_refused(tiny_llama: interp.LoadedModel, tmp_path) -> None:
    sweep(tiny_llama, PROMPTS[:2], kl_per_prompt, heads=["L0H0"], checkpoint=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="kind"):
        sweep(tiny_llama, PROMPTS[:2], kl_per_prompt, heads=["L0H0"], kind="uniform", checkpoint=tmp_path)
    with pytest.raises(CheckpointError, match="prompts"):
        sweep(tiny_llama, PROMPTS[1:3], kl_per_prompt, heads=["L0H0"], checkpoint=tmp_path)


def test_ablation_kl_checkpoint_option(tiny_llama: interp.LoadedModel, tmp_path) -> None:
    a = interp.scan("ablation-kl", tiny_llama, PROMPTS, checkpoint=str(tmp_path / "k"), progress=False)
    b = interp.scan("ablation-kl", tiny_llama, PROMPTS, checkpoint=str(tmp_path / "k"), progress=False)
    assert b.extras["resumed_rows"] == 12 * len(PROMPTS)
    assert np.array_equal(a.scores, b.scores)


# ---------------------------------------------------------------------------------------------------------
# Attribution
# ---------------------------------------------------------------------------------------------------------
def _exact(model: interp.LoadedModel, metric: str, **kw) -> np.ndarray:
    return sweep(model, PROMPTS, EXACT_SCORES[metric], progress=False, **kw).per_prompt_grid(3, 4)


@pytest.mark.parametrize("metric", ["margin", "logprob"])
def test_first_order_attribution_matches_small_ablations(tiny_model: interp.LoadedModel, metric: str) -> None:
    # Scaling heads by 0.99 is a small change: first order must be accurate to O(1%).
    exact = _exact(tiny_model, metric, kind="scale", alpha=0.99)
    est = attribute(tiny_model, PROMPTS, metric=metric, kind="scale", alpha=0.99).per_prompt
    assert np.abs(est - exact).max() <= 0.05 * np.abs(exact).max()


def test_fisher_attribution_is_second_order_accurate(tiny_llama: interp.LoadedModel) -> None:
    errors = []
    for alpha in (0.8, 0.95):
        exact = _exact(tiny_llama, "kl", kind="scale", alpha=alpha)
        est = attribute(tiny_llama, PROMPTS, kind="scale", alpha=alpha, fisher_rank=64, fisher_tokens=10_000)
        errors.append(np.abs(est.per_prompt - exact).max() / exact.max())
        assert est.diagnostics["fisher_captured"] > 0.999  # full rank, all tokens: the whole Fisher
    assert errors[1] < 0.15
    assert errors[1] < 0.5 * errors[0]  # the relative error shrinks with the size of the change


def test_uniform_delta_is_the_change_under_uniform_attention(tiny_llama: interp.LoadedModel) -> None:
    # GQA: 4 query heads read 2 K/V heads; the running mean must use each query head's own K/V group.
    batch = tiny_llama.tokenize(PROMPTS)
    base = capture(tiny_llama, batch, [z_name(1), v_name(1)])
    ablated = capture(
        tiny_llama, batch, [z_name(1)], rows=make_intervention(tiny_llama, "L1H0,L1H1,L1H2,L1H3", "uniform")
    )
    delta = head_delta("uniform", base[z_name(1)], base[v_name(1)], batch.attention_mask)
    want = (ablated[z_name(1)] - base[z_name(1)]) * batch.attention_mask[:, :, None, None]
    assert (delta - want).abs().max() <= 1e-5
    assert want.abs().max() > 1e-2


@pytest.mark.parametrize("kind", ["zero", "uniform"])
def test_attribution_ranks_like_exact_on_tiny_models(tiny_model: interp.LoadedModel, kind: str) -> None:
    from scipy.stats import spearmanr

    exact = sweep(tiny_model, PROMPTS, kl_per_prompt, kind=kind, progress=False).grid(3, 4)
    est = attribute(tiny_model, PROMPTS, kind=kind, fisher_rank=16).scores
    assert spearmanr(exact.ravel(), est.ravel()).statistic >= 0.8


def planted_model(head: Head, others: float = 0.0) -> interp.LoadedModel:
    """tiny-llama in which only `head` writes to the residual stream (every other head's output projection
    is scaled by `others`), so knocking it out moves the output most."""
    hf, tok = build_tiny("llama")
    d_head = hf.config.hidden_size // hf.config.num_attention_heads
    cols = slice(head.head * d_head, (head.head + 1) * d_head)
    with torch.no_grad():
        for layer in hf.model.layers:
            keep = layer.self_attn.o_proj.weight[:, cols].clone()
            layer.self_attn.o_proj.weight *= others
            if layer is hf.model.layers[head.layer]:
                layer.self_attn.o_proj.weight[:, cols] = keep
    return interp.wrap_model(hf, tok, "tiny-llama-planted")


def test_planted_head_is_ranked_first_by_attribution_and_screen() -> None:
    target = Head(1, 2)
    model = planted_model(target)
    exact = sweep(model, PROMPTS, kl_per_prompt, progress=False).grid(3, 4)
    assert top_heads(exact, 1) == [target]
    assert exact[target] > 1e-3 and np.delete(exact.ravel(), 4 * 1 + 2).max() < 1e-6
    assert top_heads(attribute(model, PROMPTS).scores, 1) == [target]
    screened = screen_then_verify(model, PROMPTS, top_k=3)
    assert screened.verified[0] == target and len(screened.verified) == 3
    grid = screened.exact.grid(3, 4)
    assert top_heads(grid, 1) == [target]
    # The verified heads carry their exact scores.
    for h in screened.verified:
        assert grid[h.layer, h.head] == pytest.approx(exact[h.layer, h.head], abs=1e-6)


def test_ablation_kl_methods_and_errors(tiny_llama: interp.LoadedModel) -> None:
    attr = interp.scan("ablation-kl", tiny_llama, PROMPTS, method="attribution", progress=False)
    assert attr.extras["method"] == "attribution" and not np.isnan(attr.scores).any()
    screen = interp.scan("ablation-kl", tiny_llama, PROMPTS, method="screen", top_k=4, progress=False)
    assert int((~np.isnan(screen.scores)).sum()) == 4
    assert len(screen.extras["verified"]) == 4 and np.array(screen.extras["attribution"]).shape == (3, 4)
    effect = interp.scan("ablation-effect", tiny_llama, PROMPTS, method="attribution", score="margin", progress=False)
    assert effect.metric == "ablation-effect"
    with pytest.raises(InterpError, match="method"):
        interp.scan("ablation-kl", tiny_llama, PROMPTS, method="fast")
    with pytest.raises(InterpError, match="resample"):
        interp.scan("ablation-kl", tiny_llama, PROMPTS, method="attribution", kind="resample")
    with pytest.raises(InterpError, match="metric"):
        attribute(tiny_llama, PROMPTS, metric="entropy")


# ---------------------------------------------------------------------------------------------------------
# Device maps (accelerate): on CPU, one layer offloaded to disk exercises the dispatch hooks
# ---------------------------------------------------------------------------------------------------------
def test_device_map_model_gives_the_same_sweep_and_attribution(tmp_path) -> None:
    hf, tok = build_tiny("llama")
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    mapped = interp.load_model(tmp_path / "m", device_map=device_map, offload_folder=tmp_path / "offload")
    assert mapped.hf_model.hf_device_map["model.layers.1"] == "disk"
    plain = interp.load_model(tmp_path / "m")
    for kind in ("zero", "uniform"):
        a = sweep(plain, PROMPTS, kl_per_prompt, kind=kind, progress=False)
        b = sweep(mapped, PROMPTS, kl_per_prompt, kind=kind, progress=False)
        assert np.abs(a.per_prompt - b.per_prompt).max() <= 1e-6
    x, y = attribute(plain, PROMPTS).per_prompt, attribute(mapped, PROMPTS).per_prompt
    assert np.abs(x - y).max() <= 1e-6 * max(1.0, np.abs(x).max())
