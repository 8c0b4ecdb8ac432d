"""Streamlit AppTest tests: each part of the head explorer driven on tiny-llama, asserting on what the page shows.

What the page shows is compared with the same library calls made here directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import interp
from interp.app import support as sup
from interp.core.config import Config
from interp.core.registry import _METRICS, register_metric
from interp.engine import compare as effects
from interp.model import registry as model_registry
from interp.model.loaded import LoadedModel
from interp.model.tiny import build_tiny

APP = str(Path(__file__).resolve().parent.parent / "apps" / "head_explorer.py")
SHORT2 = interp.load_prompts("short", 2)


def start(monkeypatch: pytest.MonkeyPatch, model: str = "tiny-llama") -> AppTest:
    monkeypatch.setenv(sup.MODEL_ENV, model)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def run_scan_button(at: AppTest):
    return next(b for b in at.button if b.label == "▶ Run scan")


# ---- a toy analyzer and a fake vision model, to check that the app is generic over the registry ------------
@dataclass(frozen=True)
class ToyConfig(Config):
    mode: Literal["first", "second"] = "first"
    steps: int = 2
    rate: float = 0.5
    flag: bool = False
    tag: str = "hi"
    cap: int | None = None
    images: str = ""


SEEN: list[ToyConfig] = []


def toy(model: interp.LoadedModel, prompts, config: ToyConfig, progress) -> interp.HeadScores:
    SEEN.append(config)
    scores = np.arange(model.n_layers * model.n_heads, dtype=float).reshape(model.n_layers, model.n_heads)
    return interp.HeadScores(scores * config.steps, "toy-app-test", model.name, config=config.to_dict())


@pytest.fixture
def toy_metrics() -> Iterator[None]:
    register_metric("toy-app-test", ToyConfig, "a toy analyzer registered by the app tests")(toy)
    register_metric("toy-vision-test", ToyConfig, "a toy vision analyzer", modality="vision")(toy)
    SEEN.clear()
    try:
        yield
    finally:
        _METRICS.pop("toy-app-test", None)
        _METRICS.pop("toy-vision-test", None)


# ---- 1. model ---------------------------------------------------------------------------------------------
def test_first_page_shows_model_facts_and_a_quick_look(monkeypatch, tiny_llama):
    at = start(monkeypatch)
    assert [metric(at, "Layers"), metric(at, "Heads / layer"), metric(at, "Parameters")] == ["3", "4", "0.1M"]
    assert at.title[0].value == "Head explorer"
    assert at.selectbox(key="model_choice").value == "tiny-llama"
    assert "smollm2-135m-instruct" in at.selectbox(key="model_choice").options  # the default model, installed
    quick = sup.attention_entropy(tiny_llama, SHORT2)
    assert at.selectbox(key="shown").value.startswith("#1 quick look: entropy · tiny-llama · 2 prompts")
    assert at.selectbox(key="head").value == quick.top_heads(1)[0].label
    shown = at.dataframe[0].value
    np.testing.assert_allclose(shown["score"], quick.top(10)["score"], atol=1e-6)
    line, flagged = sup.entropy_classes(quick)  # the per-head collapse/overload classes under the top heads
    assert any(line in m for m in texts(at.markdown))
    classes = at.dataframe[1].value
    assert classes["label"].tolist() == flagged["label"].tolist()
    assert classes["class"].tolist() == flagged["class"].tolist()
    assert not at.error


def test_bad_model_path_and_name_show_a_clear_message(monkeypatch):
    at = start(monkeypatch, "no-such-model")
    assert at.selectbox(key="model_choice").value == "Local path…"
    assert any('Unknown model "no-such-model"' in e for e in texts(at.error))
    at.text_input(key="model_path").set_value("/nonexistent/dir/model.gguf").run()
    assert not at.exception
    assert texts(at.error) == ["Model path /nonexistent/dir/model.gguf does not exist."]
    at.selectbox(key="model_choice").set_value("tiny-gpt2").run()
    assert not at.error and metric(at, "Layers") == "3"


# ---- 2. prompts -------------------------------------------------------------------------------------------
def test_prompts_from_set_paste_and_upload(monkeypatch):
    at = start(monkeypatch)
    at.number_input(key="prompt_limit").set_value(5).run()
    assert "5 prompt(s) in use." in texts(at.sidebar.caption)
    at.radio(key="prompt_source").set_value("Paste").run()
    at.text_area(key="prompt_text").set_value("one\ntwo\n\nthree").run()
    assert "3 prompt(s) in use." in texts(at.sidebar.caption)
    at.radio(key="prompt_source").set_value("Upload").run()
    at.file_uploader(key="prompt_file").set_value(("mine.txt", b"alpha\nbeta\n", "text/plain")).run()
    assert "2 prompt(s) in use." in texts(at.sidebar.caption)
    at.file_uploader(key="prompt_file").set_value(("bad.jsonl", b"{oops\n", "application/json")).run()
    assert not at.exception
    assert any("bad.jsonl, line 1: not valid JSON" in e for e in texts(at.error))


# ---- 3. scores --------------------------------------------------------------------------------------------
def test_scan_form_runs_the_metric_and_shows_its_heatmap_and_top_heads(monkeypatch, tiny_llama):
    at = start(monkeypatch)
    at.selectbox(key="template").set_value("raw").run()  # the form's template follows the sidebar's
    assert at.selectbox(key="opt-ablation-kl-template").value == "raw"
    at.selectbox(key="opt-ablation-kl-kind").set_value("uniform")
    at.number_input(key="opt-ablation-kl-batch_size").set_value(5)
    run_scan_button(at).click().run()
    assert not at.exception and not at.error
    assert texts(at.success) == ["Scanned 12 heads on 2 prompt(s)."]
    assert at.selectbox(key="shown").value.startswith(
        "#3 scan: ablation-kl · tiny-llama · 2 prompts"
    )  # #2: raw quick look
    expected = interp.run_metric(
        "ablation-kl", tiny_llama, SHORT2, kind="uniform", batch_size=5, template="raw", progress=False
    )
    top = at.dataframe[0].value
    assert top["label"].tolist() == expected.top(10)["label"].tolist()
    np.testing.assert_allclose(top["score"], expected.top(10)["score"], rtol=1e-6)
    # Export shows the command that reproduces it.
    command = "interp scan ablation-kl --model tiny-llama --prompts short --limit 2 --set kind=uniform"
    command += " --set template=raw --set batch_size=5"
    assert f"{command} --out ablation-kl.json" in texts(at.code)


def test_any_registered_analyzer_gets_a_form_from_its_config(monkeypatch, toy_metrics):
    at = start(monkeypatch)
    at.selectbox(key="metric").set_value("toy-app-test").run()
    assert "a toy analyzer registered by the app tests" in texts(at.caption)
    at.selectbox(key="opt-toy-app-test-mode").set_value("second")
    at.number_input(key="opt-toy-app-test-steps").set_value(7)
    at.number_input(key="opt-toy-app-test-rate").set_value(0.25)
    at.checkbox(key="opt-toy-app-test-flag").check()
    at.text_input(key="opt-toy-app-test-tag").set_value("yo")
    at.text_input(key="opt-toy-app-test-cap").set_value("4")
    run_scan_button(at).click().run()
    assert not at.exception and not at.error
    assert SEEN == [ToyConfig("second", 7, 0.25, True, "yo", 4, "")]  # noqa: SIM300
    assert at.dataframe[0].value["score"].iloc[0] == 11 * 7
    at.number_input(key="opt-toy-app-test-steps").set_value(-1)
    at.text_input(key="opt-toy-app-test-cap").set_value("four")
    run_scan_button(at).click().run()
    assert not at.exception
    assert texts(at.error) == ["Option cap must be an integer, got 'four'."]


def test_vision_analyzer_on_a_text_model_is_a_clear_message(monkeypatch, toy_metrics):
    at = start(monkeypatch)
    at.selectbox(key="metric").set_value("toy-vision-test").run()
    assert any("needs a vision-language model; tiny-llama is text-only" in e for e in texts(at.error))
    assert run_scan_button(at).disabled
    assert not [u for u in at.get("file_uploader") if "Images" in u.label]


def test_vision_analyzer_on_a_vision_model_takes_uploaded_images(monkeypatch, toy_metrics):
    model_registry.register_model(
        model_registry.ModelEntry("tiny-fake-vlm", "tiny llama posing as multimodal", "test", "tiny", build_tiny)
    )
    init = LoadedModel.__init__

    def multimodal_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.is_multimodal = self.name == "tiny-fake-vlm"

    monkeypatch.setattr(LoadedModel, "__init__", multimodal_init)
    try:
        at = start(monkeypatch, "tiny-fake-vlm")
        at.selectbox(key="metric").set_value("toy-vision-test").run()
        assert not at.error
        uploader = next(u for u in at.get("file_uploader") if "Images" in u.label)
        uploader.set_value([("scene.png", b"\x89PNG fake", "image/png")]).run()
        run_scan_button(at).click().run()
        assert not at.exception and not at.error
        folder = Path(SEEN[-1].images)
        assert [p.name for p in folder.iterdir()] == ["scene.png"]
    finally:
        model_registry._REGISTRY.pop("tiny-fake-vlm", None)


# ---- 4. head detail ---------------------------------------------------------------------------------------
def test_head_detail_shows_pattern_top_tokens_scores_and_entropy_class(monkeypatch, tiny_llama):
    at = start(monkeypatch)
    at.selectbox(key="head").set_value("L1H2").run()
    at.selectbox(key="detail_prompt").set_value(1).run()
    assert "Head L1H2" in texts(at.subheader)
    pattern, tokens = sup.attention_pattern(tiny_llama, SHORT2[1], interp.Head(1, 2))
    # the head detail's top-attended table (others: the scores tab's top heads, the entropy overview's classes)
    shown = next(d.value for d in at.dataframe if "from last token" in d.value.columns)
    expected = sup.top_attended(pattern, tokens, 8)
    assert shown["token"].tolist() == expected["token"].tolist()
    np.testing.assert_allclose(shown["from last token"], expected["from last token"], atol=1e-6)
    quick = sup.attention_entropy(tiny_llama, SHORT2)
    assert metric(at, "Entropy class") == sup.entropy_class(quick["L1H2"])
    assert metric(at, "Normalized entropy") == f"{quick['L1H2']:.3f}"
    assert any("Score across prompts" in m for m in texts(at.markdown))


# ---- 5. intervention playground ---------------------------------------------------------------------------
def test_intervention_playground_side_by_side_and_next_token_table(monkeypatch, tiny_llama):
    at = start(monkeypatch)
    at.selectbox(key="head").set_value("L0H1").run()
    assert at.text_input(key="iv_heads").value == "L0H1"  # the selected head is the playground's target
    at.text_input(key="iv_heads").set_value("L0H1,L2H3")
    at.selectbox(key="iv_kind").set_value("scale").run()
    at.number_input(key="iv_alpha").set_value(3.0)
    at.number_input(key="iv_tokens").set_value(6)
    at.number_input(key="iv_topk").set_value(4)
    at.button(key="iv_run").click().run()
    assert not at.exception and not at.error
    iv = interp.make_intervention(tiny_llama, "L0H1,L2H3", "scale", alpha=3.0)
    base, changed = effects.generate_pair(tiny_llama, SHORT2[0], iv, 6)
    assert texts(at.text) == [base, changed]
    table, kl = effects.next_token_table(tiny_llama, SHORT2[0], iv, 4)
    assert metric(at, "KL(base ‖ intervened), next token") == f"{kl:.4g} nats"
    shown = at.dataframe[-1].value
    assert shown["base token"].tolist() == table["base token"].tolist()
    np.testing.assert_allclose(shown["p intervened"], table["p intervened"], atol=1e-9)
    assert any("interp ablate --model tiny-llama --heads L0H1,L2H3 --kind scale" in c for c in texts(at.code))
    at.text_input(key="iv_heads").set_value("L9H0")
    at.button(key="iv_run").click().run()
    assert not at.exception
    assert texts(at.error) == ['Head "L9H0" is out of range: the model has 3 layers (L0 … L2).']


# ---- 3/6. load, compare, export ---------------------------------------------------------------------------
def test_load_and_compare_saved_results(monkeypatch, tiny_llama):
    at = start(monkeypatch)
    assert any("at least two results" in i for i in texts(at.info))
    quick = sup.attention_entropy(tiny_llama, SHORT2)
    flipped = interp.HeadScores(-quick.scores, "flipped", "tiny-llama")
    at.file_uploader(key="result_file").set_value(
        ("flipped.json", sup.result_json(flipped).encode(), "application/json")
    )
    at.run()
    assert at.selectbox(key="shown").value.startswith("#2 file: flipped · tiny-llama")
    assert metric(at, "Spearman rank correlation") == "-1.000"
    assert metric(at, "Top-10 overlap") == f"{quick.rank_agreement(flipped, 10)['top10_overlap']:.0%}"
    assert any("different metrics" in c for c in texts(at.caption))
    small = interp.HeadScores(np.ones((2, 2)), "small", "another-model")
    at.file_uploader(key="result_file").set_value(("small.json", sup.result_json(small).encode(), "application/json"))
    at.run()
    assert not at.exception
    assert any("not the loaded model" in w for w in texts(at.warning))
    assert any("same layers and heads" in e for e in texts(at.error))
    at.file_uploader(key="result_file").set_value(("broken.json", b"{", "application/json")).run()
    assert any("broken.json is corrupt: not valid JSON" in e for e in texts(at.error))


def test_export_offers_downloads_and_the_reproducing_code(monkeypatch):
    at = start(monkeypatch)
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Results (JSON)", "Results (CSV)", "Heatmap (HTML)", "Download this figure (HTML)"} <= set(labels)
    assert any(
        "interp.load_prompts('short', 2)" in c and "interp.scan(\"entropy\", model, prompts, template='auto')" in c
        for c in texts(at.code)
    )
