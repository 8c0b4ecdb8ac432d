"""The head explorer's logic (interp.app.support), checked against independent computations on tiny models."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import interp
from interp.app import support as sup
from interp.cli import app as cli_app
from interp.core.config import Config
from interp.core.errors import HeadLabelError, InterpError, PromptError, ResultsFileError
from interp.engine import compare as effects
from interp.model.tiny import build_tiny

PROMPTS = ["hello world", "the cat sat on the mat"]


@dataclass(frozen=True)
class FormConfig(Config):
    mode: Literal["a", "b"] = "b"
    steps: int = 3
    rate: float = 0.5
    """Learning rate of the thing."""
    flag: bool = True
    name: str = "x"
    cap: int | None = None
    layers: tuple[int, ...] = field(default=(1, 2))


def eager_patterns(prompts: list[str]) -> tuple[interp.LoadedModel, list[tuple[torch.Tensor, ...]]]:
    """tiny-llama plus HF's own eager attention weights per prompt (per layer [1, H, q, k]), computed before the
    bridge wraps the model (the bridged model no longer returns them)."""
    hf, tok = build_tiny("llama")
    hf.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = [hf(**tok([p], return_tensors="pt"), output_attentions=True).attentions for p in prompts]
    return interp.wrap_model(hf, tok, "tiny-llama-eager"), attentions


# ---- start-up and forms ------------------------------------------------------------------------------------
def test_startup_model_prefers_the_command_line_then_the_environment():
    assert sup.startup_model(["--model", "tiny-gpt2"], {sup.MODEL_ENV: "tiny-llama"}) == "tiny-gpt2"
    assert sup.startup_model(["-q", "tests"], {sup.MODEL_ENV: "tiny-llama"}) == "tiny-llama"
    assert sup.startup_model([], {}) == "default"
    assert sup.canonical_model_name("default") == "smollm2-135m-instruct"
    assert sup.canonical_model_name("/some/dir") is None


def test_config_fields_turn_annotations_into_widgets():
    specs = {s.name: s for s in sup.config_fields(FormConfig)}
    assert [specs[n].kind for n in FormConfig.field_names()] == [
        "choice",
        "int",
        "float",
        "bool",
        "str",
        "text",
        "text",
    ]
    assert specs["mode"].choices == ("a", "b") and specs["mode"].default == "b"
    assert specs["rate"].help == "Learning rate of the thing."
    assert specs["cap"].optional and specs["cap"].text_default == ""
    assert specs["layers"].text_default == "1,2"


def test_ablation_config_form_round_trip():
    info = interp.get_metric("ablation-kl")
    specs = {s.name: s for s in sup.config_fields(info.config_cls)}
    assert specs["kind"].choices == ("zero", "mean", "resample", "uniform", "scale")
    assert 'kind="scale"' in specs["alpha"].help
    config = info.make_config({"kind": "scale", "alpha": 2.0, "batch_size": 8})
    assert (config.kind, config.alpha, config.batch_size) == ("scale", 2.0, 8)
    assert sup.changed_options(config) == {"kind": "scale", "alpha": 2.0, "batch_size": 8}
    with pytest.raises(InterpError, match="choose one of"):
        info.make_config({"kind": "nope"})
    with pytest.raises(InterpError, match="batch_size"):
        info.make_config({"batch_size": 0})


def test_scan_command_reproduces_the_app_result(tmp_path, monkeypatch):
    model = interp.load_model("tiny-llama")
    info = interp.get_metric("ablation-kl")
    config = info.make_config({"kind": "uniform", "batch_size": 5})
    app_result = interp.run_metric("ablation-kl", model, interp.load_prompts("short", 2), config=config, progress=False)
    out = tmp_path / "r.json"
    command = sup.scan_command("ablation-kl", "tiny-llama", "short", sup.changed_options(config), limit=2, out=str(out))
    assert command == (
        f"interp scan ablation-kl --model tiny-llama --prompts short --limit 2 --set kind=uniform --set batch_size=5 "
        f"--out {out}"
    )
    run = CliRunner().invoke(cli_app, [*shlex.split(command)[1:], "--no-progress"])
    assert run.exit_code == 0, run.output
    np.testing.assert_array_equal(interp.HeadScores.load(out).scores, app_result.scores)


def test_ablate_command_names_every_setting():
    model = interp.load_model("tiny-llama")
    iv = interp.make_intervention(model, "L1H2,L0H0", "scale", alpha=2.5)
    command = sup.ablate_command(
        "tiny-llama", iv, "Why is it so?", max_new_tokens=12, template="raw", top_tokens=5, source=None
    )
    assert shlex.split(command) == [
        *("interp", "ablate", "--model", "tiny-llama", "--heads", "L1H2,L0H0", "--kind", "scale"),
        *("--prompt", "Why is it so?", "--alpha", "2.5", "--max-new-tokens", "12", "--template", "raw"),
        *("--top-tokens", "5"),
    ]


# ---- prompts and files --------------------------------------------------------------------------------------
def test_prompts_from_text_and_uploads():
    assert sup.prompts_from_text("a b\n\n# note\n c \n") == ["a b", "c"]
    jsonl = b'{"prompt": "one"}\n{"prompt": "two"}\n'
    assert sup.prompts_from_upload(jsonl, "mine.jsonl") == ["one", "two"]
    with pytest.raises(PromptError, match=r"mine\.jsonl, line 1"):
        sup.prompts_from_upload(b"not json\n", "mine.jsonl")
    with pytest.raises(PromptError, match=r"upload a \.txt"):
        sup.prompts_from_upload(b"x", "mine.csv")
    with pytest.raises(PromptError, match="holds no prompts"):
        sup.prompts_from_text("\n# only a comment\n")


def test_result_upload_round_trip_and_clear_errors():
    scores = np.arange(12.0).reshape(3, 4)
    result = interp.HeadScores(scores, "m", "tiny-llama", per_prompt=np.stack([scores, scores + 1]))
    loaded = sup.result_from_upload(sup.result_json(result).encode(), "saved.json")
    assert loaded == result
    with pytest.raises(ResultsFileError, match=r"saved\.json is corrupt"):
        sup.result_from_upload(b"{", "saved.json")
    with pytest.raises(ResultsFileError, match="missing key"):
        sup.result_from_upload(json.dumps({"metric": "m"}).encode(), "saved.json")
    csv = sup.result_csv(result).splitlines()
    assert csv[0] == "layer,head,label,score" and csv[1] == "0,0,L0H0,0.0" and len(csv) == 13
    assert "plotly" in sup.figure_html(result.heatmap()).lower()


# ---- attention patterns and entropy ---------------------------------------------------------------------
def test_attention_pattern_equals_hf_eager_attention():
    model, (attentions,) = eager_patterns(["hello world"])
    for layer, head in [(0, 0), (1, 2), (2, 3)]:
        pattern, tokens = sup.attention_pattern(model, "hello world", interp.Head(layer, head))
        np.testing.assert_allclose(pattern, attentions[layer][0, head].numpy(), atol=1e-6)
    assert tokens == ["<s>", "h", "e", "l", "l", "o", "␣", "w", "o", "r", "l", "d"]
    with pytest.raises(HeadLabelError, match="3 layers"):
        sup.attention_pattern(model, "hello", interp.Head(3, 0))


def test_attention_entropy_equals_a_loop_over_eager_patterns():
    prompts = ["hello world", "abc def"]
    model, per_prompt = eager_patterns(prompts)
    result = sup.attention_entropy(model, prompts, template="raw")
    expected = np.zeros((len(prompts), model.n_layers, model.n_heads))
    raw = np.zeros_like(expected)
    for p, attentions in enumerate(per_prompt):
        for layer in range(model.n_layers):
            for head in range(model.n_heads):
                a = attentions[layer][0, head].double().numpy()
                rows = [-(a[i, : i + 1] * np.log(a[i, : i + 1])).sum() for i in range(1, a.shape[0])]
                expected[p, layer, head] = np.mean([h / np.log(i + 1) for i, h in enumerate(rows, start=1)])
                raw[p, layer, head] = np.mean(rows)
    np.testing.assert_allclose(result.per_prompt, expected, atol=1e-5)
    np.testing.assert_allclose(result.scores, expected.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(result.extras["raw"]), raw.mean(0), atol=1e-5)
    assert result.metric == sup.QUICK_LOOK and result.model == "tiny-llama-eager"


def test_planted_uniform_head_is_overloaded_and_ranks_first(fresh_tiny_llama):
    model = fresh_tiny_llama
    attn = model.hf_model.model.layers[1].self_attn
    d_head = model.d_head
    with torch.no_grad():  # zero queries of head 2: every score is 0, so attention is exactly uniform
        attn.q_proj.weight[2 * d_head : 3 * d_head] = 0
    result = sup.attention_entropy(model, PROMPTS)
    assert result.top_heads(1) == [interp.Head(1, 2)]
    assert result["L1H2"] == pytest.approx(1.0, abs=1e-6)
    assert sup.entropy_class(result["L1H2"]) == "overloaded"
    assert [sup.entropy_class(v) for v in (0.05, 0.5, 0.9, float("nan"))] == [
        "collapsed",
        "normal",
        "overloaded",
        "unknown",
    ]
    line, flagged = sup.entropy_classes(result)
    assert flagged.loc[flagged["class"] == "overloaded", "label"].iloc[0] == "L1H2"  # uniform: the most overloaded
    classes = [sup.entropy_class(v) for v in result.scores.ravel()]
    assert len(flagged) == sum(c in ("collapsed", "overloaded") for c in classes)
    assert line.startswith(f"12 heads: {classes.count('collapsed')} collapsed") and "overloaded (> 0.75 of max)" in line


def test_top_attended_and_pattern_figure_on_a_hand_made_pattern():
    pattern = np.array([[1.0, 0, 0], [0.25, 0.75, 0], [0.1, 0.2, 0.7]])
    top = sup.top_attended(pattern, ["<s>", "a", "b"], k=2)
    assert top["token"].tolist() == ["b", "a"]
    np.testing.assert_allclose(top["from last token"], [0.7, 0.2])
    np.testing.assert_allclose(top["mean over queries"], [0.7, (0.75 + 0.2) / 2])
    fig = sup.pattern_figure(pattern, ["<s>", "a", "b"], "t")
    assert list(fig.layout.xaxis.ticktext) == ["&lt;s&gt;", "a", "b"]  # escaped: plotly reads labels as HTML
    assert fig.data[0].z[0][1] is None and fig.data[0].z[2][1] == 0.2  # the causal upper triangle is blank
    assert effects.show_token(" the\n") == "␣the⏎"


def test_per_prompt_frame():
    scores = np.arange(12.0).reshape(3, 4)
    result = interp.HeadScores(scores, "m", "x", per_prompt=np.stack([scores, -scores]))
    frame = sup.per_prompt_frame(result, interp.Head(1, 2), ["p0", "p1"])
    assert frame["score"].tolist() == [6.0, -6.0] and frame["prompt"].tolist() == ["p0", "p1"]
    assert sup.per_prompt_frame(interp.HeadScores(scores, "m", "x"), interp.Head(0, 0), None) is None


# ---- intervention playground ----------------------------------------------------------------------------
def test_next_token_table_matches_separate_forward_passes(tiny_llama):
    from interp.engine.run import forward_last

    iv = interp.make_intervention(tiny_llama, "L1H2,L2H0", "zero")
    table, kl = effects.next_token_table(tiny_llama, "hello", iv, k=5)
    batch = tiny_llama.tokenize(["hello"])
    p_base = torch.softmax(forward_last(tiny_llama, batch).logits[0].double(), -1)
    p_new = torch.softmax(forward_last(tiny_llama, batch, iv).logits[0].double(), -1)
    ids = p_base.topk(5).indices
    np.testing.assert_allclose(table["p base"], p_base[ids].numpy(), atol=1e-6)
    np.testing.assert_allclose(table["p intervened"], p_new[ids].numpy(), atol=1e-6)
    np.testing.assert_allclose(table["p (intervened top)"], p_new.topk(5).values.numpy(), atol=1e-6)
    assert kl == pytest.approx(float((p_base * (p_base.log() - p_new.log())).sum()), rel=1e-6)
    assert kl > 0
    same, kl_same = effects.next_token_table(
        tiny_llama, "hello", interp.make_intervention(tiny_llama, "L0H0", "scale", alpha=1)
    )
    assert kl_same == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(same["change"], 0.0, atol=1e-9)


def test_generate_pair_equals_separate_generations(tiny_llama):
    iv = interp.make_intervention(tiny_llama, "L0H1", "scale", alpha=3.0)
    base, changed = effects.generate_pair(tiny_llama, "the cat", iv, max_new_tokens=6)
    assert base == interp.generate(tiny_llama, ["the cat"], max_new_tokens=6)[0]
    assert changed == interp.generate(tiny_llama, ["the cat"], iv, max_new_tokens=6)[0]
    assert base != changed


# ---- comparing results -------------------------------------------------------------------------------------
def test_agreement_and_difference_figure():
    rng = np.random.default_rng(0)
    a = interp.HeadScores(rng.normal(size=(3, 4)), "m1", "x")
    b = interp.HeadScores(a.scores * 2 + 1, "m2", "x")
    assert sup.agreement(a, b, k=3) == a.rank_agreement(b, 3)
    assert sup.agreement(a, b, k=3)["spearman"] == pytest.approx(1.0)
    fig = sup.difference_figure(a, b)
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), b.scores - a.scores)
    other = interp.HeadScores(np.zeros((2, 2)), "m", "y")
    with pytest.raises(InterpError, match="same layers and heads"):
        sup.agreement(a, other)
    with pytest.raises(InterpError, match="same layers and heads"):
        sup.difference_figure(a, other)


def test_clickable_heatmap_has_one_marker_per_head_with_the_exact_value():
    scores = np.arange(12.0).reshape(3, 4) / 7
    scores[2, 3] = np.nan
    fig = sup.clickable_heatmap(interp.HeadScores(scores, "m", "x"))
    heat, markers = fig.data
    assert heat.hoverinfo == "skip" and markers.type == "scatter"
    assert (markers.x[6], markers.y[6]) == (2, 1)  # layer-major: cell 6 is L1H2
    assert list(markers.customdata[6]) == ["L1H2", f"{6 / 7:.6g}"]
    assert list(markers.customdata[11]) == ["L2H3", "not scored"]
    assert tuple(fig.layout.xaxis.range) == (-0.5, 3.5) and tuple(fig.layout.yaxis.range) == (2.5, -0.5)
