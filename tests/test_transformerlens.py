"""Bring your own model: a TransformerBridge booted with TransformerLens' own API, or an HF model object, gives
the same scores as load_model of the same weights; it is wrapped once; the user's hooks stay; value-bias
folding (docs/transformerlens.md) changes zero ablation only; the app takes a model object from Python."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, AutoTokenizer

import interp
from interp.core.errors import InterpError
from interp.engine.hookpoints import hook_count, z_name
from interp.lines.entropy.metrics import EntropyConfig, attention_entropy
from interp.model.loaded import WRAPPER_ATTR
from interp.model.tiny import build_tiny

PROMPTS = ["hello world", "the cat sat on the mat", "abc"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    hf, tok = build_tiny("llama")
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(llama_dir: Path) -> interp.LoadedModel:
    return interp.load_model(str(llama_dir))


def boot(path: Path) -> TransformerBridge:
    """A bridge as a TransformerLens user builds it (TransformerLens loads the weights and the tokenizer)."""
    return TransformerBridge.boot_transformers(str(path), device="cpu")


def kl(model, **options) -> np.ndarray:
    return interp.scan("ablation-kl", model, PROMPTS, progress=False, **options).scores


# ---------------------------------------------------------------------------------------------------------
# The same scores from any model object
# ---------------------------------------------------------------------------------------------------------
def test_a_bridge_booted_by_transformerlens_scores_like_load_model(llama_dir, reference):
    bridge = boot(llama_dir)
    for kind in ("zero", "mean"):
        np.testing.assert_allclose(kl(bridge, kind=kind), kl(reference, kind=kind), rtol=0, atol=1e-6)
    effect = interp.scan("ablation-effect", bridge, PROMPTS, progress=False).scores
    np.testing.assert_allclose(effect, interp.scan("ablation-effect", reference, PROMPTS, progress=False).scores,
                               atol=1e-5)  # fmt: skip
    assert np.nanmax(kl(reference)) > 1e-3  # scores that could differ


def test_an_hf_model_object_with_its_tokenizer_scores_like_load_model(llama_dir, reference):
    hf = AutoModelForCausalLM.from_pretrained(llama_dir)
    tok = AutoTokenizer.from_pretrained(llama_dir)
    by_keyword = interp.scan("ablation-kl", hf, PROMPTS, tokenizer=tok, progress=False).scores
    np.testing.assert_allclose(by_keyword, kl(reference), atol=1e-6)
    assert interp.as_loaded_model((hf, tok)) is interp.as_loaded_model(hf, tokenizer=tok)
    iv = interp.make_intervention((hf, tok), "L1H2,L2H0", "zero")
    ref_iv = interp.make_intervention(reference, "L1H2,L2H0", "zero")
    assert interp.generate((hf, tok), PROMPTS, iv, max_new_tokens=6) == interp.generate(
        reference, PROMPTS, ref_iv, max_new_tokens=6
    )


def test_every_entry_point_takes_a_bridge(llama_dir, reference):
    bridge = boot(llama_dir)
    batch = reference.tokenize(PROMPTS)
    direct = attention_entropy(bridge, PROMPTS, EntropyConfig(), False)  # an analyzer called directly
    np.testing.assert_allclose(direct.scores, interp.scan("entropy", reference, PROMPTS, progress=False).scores)
    score = lambda base, ablated: (base - ablated).abs().sum(-1)  # noqa: E731  (L1 distance of the logits)
    swept = interp.sweep(bridge, PROMPTS, score, kind="scale", alpha=2.0, progress=False)
    expected = interp.sweep(reference, PROMPTS, score, kind="scale", alpha=2.0, progress=False)
    np.testing.assert_allclose(swept.scores, expected.scores, atol=1e-4)
    torch.testing.assert_close(interp.head_outputs(bridge, batch), interp.head_outputs(reference, batch))
    iv = interp.make_intervention(bridge, "L0H1", "mean", reference=PROMPTS)
    with interp.intervene(bridge, iv), torch.no_grad():
        steered = bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
    ref_iv = interp.make_intervention(reference, "L0H1", "mean", reference=PROMPTS)
    with interp.intervene(reference, ref_iv), torch.no_grad():
        expected_logits = reference.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
    torch.testing.assert_close(steered, expected_logits)


# ---------------------------------------------------------------------------------------------------------
# Wrapped once; the user's hooks left alone
# ---------------------------------------------------------------------------------------------------------
def test_a_bridge_is_wrapped_once_and_never_rebooted(llama_dir):
    bridge = boot(llama_dir)
    first = interp.as_loaded_model(bridge)
    assert first.bridge is bridge and first.hf_model is bridge.original_model
    assert interp.as_loaded_model(bridge) is first and interp.as_loaded_model(first) is first
    kl(bridge)
    assert vars(bridge)[WRAPPER_ATTR] is first  # the scan used the same wrapper
    hf, tok = build_tiny("llama")
    wrapped = interp.as_loaded_model((hf, tok))
    assert interp.as_loaded_model(hf) is wrapped and interp.as_loaded_model(hf, tok) is wrapped
    assert interp.wrap_model(hf, tok, "again").bridge is wrapped.bridge  # no second bridge over the same model
    hf2, tok2 = build_tiny("llama")
    tok2.pad_token = None  # e.g. GPT-2's tokenizer: interp pads a copy and leaves the user's tokenizer alone
    wrapped2 = interp.as_loaded_model(hf2, tok2)
    assert tok2.pad_token is None and wrapped2.tokenizer.pad_token == wrapped2.tokenizer.eos_token
    assert wrapped2.uses_tokenizer(tok2) and interp.as_loaded_model((hf2, tok2)) is wrapped2


def test_the_users_hooks_stay_attached_and_run_during_interps_passes(llama_dir):
    bridge = boot(llama_dir)
    seen: list[tuple[int, ...]] = []
    bridge.add_hook(z_name(2), lambda z, hook: seen.append(tuple(z.shape)))
    kl(bridge)
    iv = interp.make_intervention(bridge, "L2H1", "zero")
    interp.generate(bridge, ["hello"], iv, max_new_tokens=2)
    assert seen, "the user's hook never ran"
    assert hook_count(interp.as_loaded_model(bridge)) == 1  # still attached; interp's own hooks are gone
    assert len(bridge.hook_dict[z_name(2)]._forward_hooks) == 1


def test_a_model_object_interp_cannot_use_is_a_clear_error():
    with pytest.raises(InterpError, match="Expected a LoadedModel, a TransformerLens TransformerBridge, or an HF"):
        interp.scan("ablation-kl", 42, PROMPTS)
    hf, _ = build_tiny("llama")
    with pytest.raises(InterpError, match="An HF model needs its tokenizer"):
        interp.make_intervention(hf, "L0H0")
    with pytest.raises(InterpError, match=r"load it first, model = interp.load_model\('tiny-llama'\)"):
        interp.sweep("tiny-llama", PROMPTS, lambda a, b: a.sum(-1))


# ---------------------------------------------------------------------------------------------------------
# Value-bias folding: the HookedTransformer-era default, exposed as load_model(..., fold_value_biases=True)
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_with_value_biases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny GPT-2 whose q/k/v biases are non-zero (GPT-2's init sets them to 0), seeded."""
    path = tmp_path_factory.mktemp("tiny-gpt2-bias")
    hf, tok = build_tiny("gpt2")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.endswith("attn.c_attn.bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_folding_value_biases_changes_zero_ablation_only(gpt2_with_value_biases):
    raw = interp.load_model(str(gpt2_with_value_biases))
    folded = interp.load_model(str(gpt2_with_value_biases), fold_value_biases=True)
    assert raw.value_bias_layers == [0, 1, 2] and folded.value_bias_layers == []
    assert "value biases folded" in folded.source
    batch = raw.tokenize(PROMPTS)
    with torch.no_grad():  # the same function: the next-token distributions agree
        a = raw.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1].log_softmax(-1)
        b = folded.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1].log_softmax(-1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    zero_raw, zero_folded = kl(raw), kl(folded)
    assert np.nanmax(np.abs(zero_raw - zero_folded)) > 0.1 * np.nanmax(zero_raw)  # zero ablation removes less
    for kind in ("mean", "resample", "uniform"):  # b_V is constant under any attention pattern: no change
        np.testing.assert_allclose(kl(raw, kind=kind), kl(folded, kind=kind), atol=1e-5)
    # TransformerLens' full HookedTransformer-style processing (LayerNorm folding, centering, value biases)
    # gives the zero-ablation scores of value-bias folding alone: the other steps leave hook_z unchanged.
    compat = boot(gpt2_with_value_biases)
    compat.enable_compatibility_mode(disable_warnings=True)
    np.testing.assert_allclose(kl(compat), zero_folded, atol=1e-5)
    assert "weights processed by TransformerLens" in interp.as_loaded_model(compat).source


def test_a_model_without_value_biases_is_unchanged_by_folding(llama_dir, reference):
    assert reference.value_bias_layers == []
    np.testing.assert_allclose(kl(interp.load_model(str(llama_dir), fold_value_biases=True)), kl(reference), atol=1e-6)


def test_a_transformerlens_activation_cache_for_the_same_prompts(reference):
    """docs/transformerlens.md: run_with_cache on interp's batch; cache names are interp's hook names."""
    batch = reference.tokenize(PROMPTS)
    _, cache = reference.bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
    z = interp.head_outputs(reference, batch)  # [n_layers, batch, pos, n_heads, d_head]
    for layer in range(reference.n_layers):
        torch.testing.assert_close(cache[z_name(layer)], z[layer])
    result = interp.scan("ablation-kl", reference, PROMPTS, progress=False)
    best = result.top_heads(1)[0]
    assert result.scores[best.layer, best.head] == result.top(1)["score"].iloc[0]
    assert cache[z_name(best.layer)][:, -1, best.head].shape == (len(PROMPTS), reference.d_head)


# ---------------------------------------------------------------------------------------------------------
# The app, launched from Python on a model object
# ---------------------------------------------------------------------------------------------------------
def test_the_app_page_opens_on_a_model_object_handed_over_from_python(llama_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from interp.app import support as sup

    bridge = boot(llama_dir)
    monkeypatch.setattr(sup, "_LAUNCHED", {})
    key = sup.launch_model(interp.as_loaded_model(bridge))
    assert sup.launch_model(interp.as_loaded_model(bridge)) == key  # the same object: one entry
    at = AppTest.from_file(str(ROOT / "apps" / "head_explorer.py"), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="model_choice").value == key
    assert any(str(llama_dir) in str(c.value) for c in at.sidebar.caption)  # the bridge's model, not "default"


SERVE = r"""
import sys, urllib.request
import interp.app
from interp.model.tiny import build_tiny
server = interp.app.serve(build_tiny("llama"), port=int(sys.argv[1]), block=False)
assert urllib.request.urlopen(server.url + "/_stcore/health").read() == b"ok"
assert b"<script" in urllib.request.urlopen(server.url).read()
server.stop()
print("served", server.model_key, server.running)
"""


def test_serve_runs_the_app_in_this_process_on_a_model_object():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-c", SERVE, str(port)], capture_output=True, text=True, timeout=600,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "served LlamaForCausalLM (from Python) False" in out.stdout
