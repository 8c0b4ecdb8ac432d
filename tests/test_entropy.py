"""The `entropy` analyzer: brute-force equality, padding, planted heads, config errors, the default model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import interp
from interp.core.errors import InterpError
from interp.core.results import HeadScores
from interp.engine.hookpoints import pattern_name
from interp.engine.run import capture, make_intervention
from interp.lines.entropy.metrics import entropy_grids, entropy_per_prompt, prompt_means, row_entropy

PROMPTS = ["hello world", "the cat sat on the mat", "abc", "what is this thing?", "a"]


def brute_force(model: interp.LoadedModel, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Plain loops over prompts, layers, heads and rows on the captured full patterns (one padded batch)."""
    batch = model.tokenize(prompts, "raw")
    names = [pattern_name(layer) for layer in range(model.n_layers)]
    pats = capture(model, batch, names)  # name -> [batch, n_heads, q, k], not reduced
    mask = batch.attention_mask.tolist()
    raw = np.zeros((len(prompts), model.n_layers, model.n_heads))
    norm = np.zeros_like(raw)
    for b in range(len(prompts)):
        for layer, name in enumerate(names):
            p = pats[name][b].double().tolist()
            for h in range(model.n_heads):
                h_raw, h_norm = [], []
                for i in range(len(mask[b])):
                    keys = [j for j in range(i + 1) if mask[b][j] == 1]
                    if mask[b][i] == 0 or len(keys) < 2:
                        continue
                    total = sum(p[h][i][j] for j in keys)
                    ent = -sum(p[h][i][j] / total * math.log(p[h][i][j] / total) for j in keys if p[h][i][j] > 0)
                    h_raw.append(ent)
                    h_norm.append(ent / math.log(len(keys)))
                raw[b, layer, h] = sum(h_raw) / len(h_raw)
                norm[b, layer, h] = sum(h_norm) / len(h_norm)
    return raw, norm


def test_entropy_equals_brute_force(tiny_model: interp.LoadedModel) -> None:
    result = interp.scan("entropy", tiny_model, PROMPTS, template="raw", batch_size=len(PROMPTS), progress=False)
    raw_bf, norm_bf = brute_force(tiny_model, PROMPTS)
    raw, norm = entropy_grids(result)
    assert result.metric == "entropy" and result.scores.shape == (tiny_model.n_layers, tiny_model.n_heads)
    np.testing.assert_allclose(raw, raw_bf.mean(0), atol=1e-6, rtol=0)
    np.testing.assert_allclose(norm, norm_bf.mean(0), atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.scores, norm, atol=0, rtol=0)  # value="normalized" is the default
    np.testing.assert_allclose(result.per_prompt, norm_bf, atol=1e-6, rtol=0)
    # Heads must differ (a random tiny model), or equality above would say little.
    assert np.ptp(norm) > 0.05
    raw_result = interp.scan("entropy", tiny_model, PROMPTS, template="raw", value="raw", progress=False)
    np.testing.assert_allclose(raw_result.scores, raw_bf.mean(0), atol=1e-6, rtol=0)
    # rows counted: every real token but the first of each prompt
    assert result.extras["rows"] == sum(len(tiny_model.tokenize([p], "raw").input_ids[0]) - 1 for p in PROMPTS)


def test_padding_and_batching_do_not_change_entropy(tiny_llama: interp.LoadedModel) -> None:
    one_by_one = np.stack([entropy_per_prompt(tiny_llama, [p], "raw")[1][0] for p in PROMPTS])
    batched = entropy_per_prompt(tiny_llama, PROMPTS, "raw", batch_size=3)[1]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)


def test_row_entropy_skips_padding_and_single_key_rows() -> None:
    # One prompt of 3 real tokens after 2 pads; one head. Pads carry junk weight that must be ignored.
    pattern = torch.zeros(1, 1, 5, 5)
    pattern[0, 0, 2, 2] = 1.0  # first real token: one visible key -> skipped
    pattern[0, 0, 3, :4] = torch.tensor([0.3, 0.3, 0.2, 0.2])  # 0.6 on pads -> renormalized to [0.5, 0.5]
    pattern[0, 0, 4, 2:] = torch.tensor([1.0, 0.0, 0.0])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    rows = row_entropy(pattern, mask)
    assert rows.valid.tolist() == [[False, False, False, True, True]]
    assert rows.raw[0, 0].tolist() == pytest.approx([0, 0, 0, math.log(2), 0], abs=1e-12)
    assert rows.normalized[0, 0, 3].item() == pytest.approx(1.0, abs=1e-12)
    means = prompt_means(pattern, mask)
    assert means[:, 0, 0].tolist() == pytest.approx([math.log(2) / 2, 0.5], abs=1e-12)
    # A prompt with a single real token has no row to average: NaN, not 0.
    assert torch.isnan(prompt_means(pattern, torch.tensor([[0, 0, 0, 0, 1]]))).all()
    with pytest.raises(InterpError, match="q == k"):
        row_entropy(torch.zeros(1, 1, 2, 3))


def _q_rows(model: interp.LoadedModel, layer: int, head: int) -> torch.Tensor:
    q = model.hf_model.model.layers[layer].self_attn.q_proj.weight  # [n_heads * d_head, d_model]
    return q.data[head * model.d_head : (head + 1) * model.d_head]


def test_planted_uniform_and_one_token_heads(fresh_tiny_llama: interp.LoadedModel) -> None:
    model = fresh_tiny_llama
    _q_rows(model, 1, 2).zero_()  # queries 0 -> all logits equal -> uniform over the visible keys
    _q_rows(model, 2, 1).mul_(1e4)  # logits x1e4 -> softmax ~ argmax -> one key per query
    result = interp.scan("entropy", model, PROMPTS, template="raw", progress=False)
    raw, norm = entropy_grids(result)
    assert norm[1, 2] == pytest.approx(1.0, abs=1e-6)
    assert norm[2, 1] < 0.02
    assert result.top_heads(1)[0] == (1, 2)
    assert result.top_heads(1, ascending=True)[0] == (2, 1)
    # Uniform attention's raw entropy is exactly the mean of log(#visible keys) over the rows.
    expected = np.mean(
        [np.mean([math.log(n) for n in range(2, len(model.tokenize([p], "raw").input_ids[0]) + 1)]) for p in PROMPTS]
    )
    assert raw[1, 2] == pytest.approx(expected, abs=1e-6)


def test_uniform_intervention_gives_normalized_one(tiny_gpt2: interp.LoadedModel) -> None:
    iv = make_intervention(tiny_gpt2, "L0H3", "uniform")
    _, norm, _ = entropy_per_prompt(tiny_gpt2, PROMPTS, "raw", rows=iv)
    _, base, _ = entropy_per_prompt(tiny_gpt2, PROMPTS, "raw")
    np.testing.assert_allclose(norm[:, 0, 3], 1.0, atol=1e-6)
    assert base[:, 0, 3].mean() < 0.99  # the head is not uniform on its own
    np.testing.assert_allclose(norm[:, 0, :3], base[:, 0, :3], atol=1e-9)  # other heads of layer 0 untouched


def test_entropy_result_round_trips(tiny_gpt2: interp.LoadedModel, tmp_path) -> None:
    result = interp.scan("entropy", tiny_gpt2, PROMPTS[:3], progress=False)
    loaded = HeadScores.load(result.save(tmp_path / "e.json"))
    assert loaded == result
    raw, norm = entropy_grids(loaded)
    assert np.all((norm >= 0) & (norm <= 1)) and np.all(raw >= 0)
    assert loaded.provenance["n_prompts"] == 3 and loaded.provenance["seconds"] >= 0


def test_bad_options_and_wrong_results(tiny_gpt2: interp.LoadedModel) -> None:
    with pytest.raises(InterpError, match="batch_size"):
        interp.scan("entropy", tiny_gpt2, PROMPTS, batch_size=0)
    with pytest.raises(InterpError, match="normalized, raw"):
        interp.scan("entropy", tiny_gpt2, PROMPTS, value="bits")
    other = HeadScores(np.zeros((3, 4)), metric="ablation-kl", model="m")
    with pytest.raises(InterpError, match='metric "entropy"'):
        entropy_grids(other)


@pytest.mark.default_model
def test_default_model_all_heads(default_model: interp.LoadedModel) -> None:
    prompts = interp.load_prompts("short", limit=4)
    result = interp.scan("entropy", default_model, prompts, progress=False)
    _, norm = entropy_grids(result)
    assert result.scores.shape == (30, 9)
    assert not np.isnan(result.scores).any()
    assert np.all((norm >= 0) & (norm <= 1 + 1e-9))
    # A trained model has both sharp and diffuse heads.
    assert norm.min() < 0.1 and norm.max() > 0.6
