"""Random-feature probes of head outputs: planted ground truth, reference loops, labels files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from typer.testing import CliRunner

import interp
from interp.cli import app
from interp.core.errors import InterpError, PromptError, UnknownNameError
from interp.core.results import HeadScores
from interp.lines.rfa.metrics import (
    ProbeConfig,
    ProbeResult,
    collect_head_outputs,
    held_out_correct,
    load_labelled,
    probe_heads,
)
from interp.model.tiny import build_tiny

PLANTED = (0, 2)  # layer, head


def planted_gpt2(layer: int = PLANTED[0], head: int = PLANTED[1]) -> interp.LoadedModel:
    """tiny-gpt2 where one head copies the label token ("A" or "B") to every later position.

    The label tokens' embeddings get a large `marker` direction (+- a `sign` direction). The planted head's
    query is a constant (weights 0, bias along e0), its key reads the marker, so it attends to the label token;
    its value reads the sign, so its output z is +- a fixed vector. Its rows of the output projection are zeroed,
    so no later head can read the copied label: only this head carries it in clean form."""
    hf, tok = build_tiny("gpt2", seed=0)
    d, dh = hf.config.n_embd, hf.config.n_embd // hf.config.n_head
    gen = torch.Generator().manual_seed(123)
    marker, sign = torch.randn(2, d, generator=gen)
    marker, sign = marker - marker.mean(), sign - sign.mean()  # zero-mean directions survive LayerNorm centering
    marker = marker / marker.norm()
    sign = sign - (sign @ marker) * marker
    sign = sign / sign.norm()
    ids = {c: tok.convert_tokens_to_ids(c) for c in "AB"}
    e0 = torch.zeros(dh)
    e0[0] = 1.0
    with torch.no_grad():
        hf.transformer.wte.weight[ids["A"]] += marker + sign
        hf.transformer.wte.weight[ids["B"]] += marker - sign
        attn = hf.transformer.h[layer].attn
        w, b = attn.c_attn.weight, attn.c_attn.bias  # [d, 3d] (x @ w), [3d]: q | k | v
        q, k, v = (slice(i * d + head * dh, i * d + (head + 1) * dh) for i in range(3))
        w[:, q], b[q] = 0.0, 4.0 * e0
        w[:, k], b[k] = 2.0 * torch.outer(marker, e0), 0.0
        w[:, v], b[v] = torch.outer(sign, torch.ones(dh) / dh**0.5), 0.0
        attn.c_proj.weight[head * dh : (head + 1) * dh] = 0.0
    return interp.wrap_model(hf, tok, "tiny-gpt2-planted")


def label_prompts(n: int = 80, seed: int = 0) -> tuple[list[str], list[str]]:
    """Random lowercase text with the label character A or B somewhere before the last position."""
    rng = np.random.default_rng(seed)
    prompts, labels = [], []
    for i in range(n):
        length = int(rng.integers(12, 25))
        chars = list(rng.choice(list("abcdefghijklmnopqrstuvwxyz "), size=length))
        chars.insert(int(rng.integers(0, length - 1)), "AB"[i % 2])
        prompts.append("".join(chars))
        labels.append("AB"[i % 2])
    return prompts, labels


@pytest.fixture(scope="module")
def planted() -> interp.LoadedModel:
    return planted_gpt2()


@pytest.mark.parametrize("control", ["random-init", "shuffled"])
def test_planted_copy_head_has_the_top_selectivity(planted, control):
    prompts, labels = label_prompts()
    config = ProbeConfig(control=control, n_components=64, folds=4, template="raw")
    result = probe_heads(planted, prompts, labels, config, progress=False)
    top = result.table(2)
    assert (top["layer"][0], top["head"][0]) == PLANTED
    assert result.accuracy.scores[PLANTED] >= 0.95
    assert top.selectivity[0] - top.selectivity[1] > 0.15  # a clear margin, not a tie broken by order
    np.testing.assert_allclose(result.selectivity.scores, result.accuracy.scores - result.control.scores)
    assert result.selectivity.extras["control_kind"] == control
    if control == "shuffled":  # chance level: no head should decode shuffled labels well
        assert result.control.scores.max() < 0.75


def z_by_hand(arch: str, prompt: str, position: str) -> np.ndarray:
    """One prompt alone (no padding) through a fresh, un-bridged copy of the tiny HF model (same seed, so the
    same weights): the input of each layer's output projection, split into heads, read with plain PyTorch
    hooks (no TransformerLens): [n_layers, n_heads, d_head]."""
    hf, tok = build_tiny(arch)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    if arch == "gpt2":
        projections = [block.attn.c_proj for block in hf.transformer.h]
    else:
        projections = [layer.self_attn.o_proj for layer in hf.model.layers]
    store = {}
    handles = [
        proj.register_forward_pre_hook(lambda m, a, i=i: store.__setitem__(i, a[0].detach()))
        for i, proj in enumerate(projections)
    ]
    try:
        with torch.no_grad():
            hf(ids)
    finally:
        for h in handles:
            h.remove()
    n_heads = hf.config.num_attention_heads
    out = []
    for i in range(len(projections)):
        z = store[i][0].reshape(ids.shape[1], n_heads, -1)  # [pos, n_heads, d_head]
        out.append(z[-1] if position == "last" else z.mean(0))
    return torch.stack(out).double().numpy()


@pytest.mark.parametrize("position", ["last", "mean"])
def test_head_outputs_equal_plain_hooks_one_prompt_at_a_time(tiny_model, position):
    prompts = ["hello world", "the cat sat on the mat", "abc", "why?"]  # different lengths: padding matters
    fast = collect_head_outputs(tiny_model, prompts, position, template="raw", batch_size=3)
    assert fast.shape == (tiny_model.n_layers, tiny_model.n_heads, len(prompts), tiny_model.d_head)
    for p, prompt in enumerate(prompts):
        arch = tiny_model.name.removeprefix("tiny-")
        np.testing.assert_allclose(fast[:, :, p], z_by_hand(arch, prompt, position), atol=2e-5, rtol=1e-4)


def test_probe_equals_a_hand_written_fold_loop():
    rng = np.random.default_rng(0)
    y = np.array(["a", "b"] * 15)
    x = rng.normal(size=(30, 6)) + (y == "a")[:, None] * 0.8
    config = ProbeConfig(n_components=20, folds=3, seed=4, C=0.5)
    fast = held_out_correct(x, y, config)
    slow = np.zeros(30)
    for train, test in StratifiedKFold(3, shuffle=True, random_state=4).split(x, y):
        mean, std = x[train].mean(0), x[train].std(0)
        w_rng = np.random.RandomState(4)
        weight = w_rng.standard_normal((20, 6)) * np.sqrt(1.0 / 6)
        offset = w_rng.standard_normal(20)
        feats = lambda rows: np.maximum(((x[rows] - mean) / std) @ weight.T + offset, 0) / np.sqrt(20)  # noqa: E731, B023
        clf = LogisticRegression(C=0.5, max_iter=1000).fit(feats(train), y[train])
        slow[test] = clf.predict(feats(test)) == y[test]
    np.testing.assert_array_equal(fast, slow)
    assert 0.6 < fast.mean() <= 1.0


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_labels_files_and_their_errors(tmp_path):
    _, labels = load_labelled("harmful-harmless")
    assert labels.count("harmful") == labels.count("harmless") == 100  # balanced to the smaller set
    assert load_labelled("harmful-harmless", limit=5)[1] == ["harmful"] * 5 + ["harmless"] * 5
    good = write_jsonl(tmp_path / "l.jsonl", [{"prompt": f"p{i}", "label": i % 3} for i in range(9)])
    p, lab = load_labelled(good, limit=2)
    assert p == ["p0", "p1", "p2", "p3", "p4", "p5"] and lab == ["0", "1", "2"] * 2
    with pytest.raises(PromptError, match='line 2: expected an object with a string "prompt" and a "label"'):
        load_labelled(write_jsonl(tmp_path / "b.jsonl", [{"prompt": "x", "label": 1}, {"prompt": "y"}]))
    with pytest.raises(PromptError, match="does not exist"):
        load_labelled(tmp_path / "missing.jsonl")
    with pytest.raises(UnknownNameError, match="harmful-harmless"):
        load_labelled("harmful-harmles")
    model = interp.load_model("tiny-llama")
    with pytest.raises(InterpError, match="at least two classes"):
        probe_heads(model, ["a", "b", "c"], ["x", "x", "x"], progress=False)
    with pytest.raises(InterpError, match="at least folds=5 prompts"):
        probe_heads(model, ["a", "b", "c", "d"], ["x", "y", "x", "y"], progress=False)
    with pytest.raises(InterpError, match="folds must be >= 2"):
        ProbeConfig(folds=1)


def test_cli_probe_and_scan_probe(tmp_path):
    prompts, labels = label_prompts(24, seed=1)
    labels_file = write_jsonl(
        tmp_path / "ab.jsonl", [{"prompt": p, "label": y} for p, y in zip(prompts, labels, strict=True)]
    )
    runner = CliRunner()
    out = tmp_path / "probe.json"
    common = ["--model", "tiny-gpt2", "--set", "n_components=16", "--set", "folds=3", "--set", "template=raw"]
    res = runner.invoke(app, ["probe", "--labels", str(labels_file), *common, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "selectivity" in res.output and "A: 12, B: 12" in res.output
    saved = HeadScores.load(out, metric="probe-selectivity")
    rebuilt = ProbeResult.from_scores(saved)
    np.testing.assert_allclose(rebuilt.selectivity.scores, saved.scores)
    scan_out = tmp_path / "scan.json"
    res = runner.invoke(
        app,
        ["scan", "probe", *common, "--set", f"labels={labels_file}", "--set", "control=shuffled", "--set",
         "report=accuracy", "--out", str(scan_out), "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    scanned = HeadScores.load(scan_out)
    assert scanned.metric == "probe-accuracy" and scanned.per_prompt.shape == (24, 3, 4)
    np.testing.assert_allclose(scanned.per_prompt.mean(0), scanned.scores)
    bad = runner.invoke(app, ["probe", "--labels", str(tmp_path / "nope.jsonl"), "--model", "tiny-gpt2"])
    assert bad.exit_code == 1 and "does not exist" in bad.output  # 1: a file problem, 2: a usage error
