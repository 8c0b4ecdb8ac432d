"""Every intervention kind against a hand computation on an independent plain-transformers copy of the model."""

import pytest
import torch

import interp
from interp.core.errors import InterpError
from interp.core.heads import Head
from interp.engine.hookpoints import hook_count
from interp.engine.interventions import HeadIntervention, intervene
from interp.engine.run import forward_last, generate, head_outputs, make_intervention
from interp.model.tiny import build_tiny
from tests.conftest import PROMPTS

LAYER, HEAD = 1, 3  # head 3 shares KV head 1 with head 2 in tiny-llama (4 query heads, 2 KV heads)


@pytest.fixture(scope="module")
def plain():
    """The same weights as tiny-llama, run by plain transformers (no bridge, no interp hooks)."""
    model, _ = build_tiny("llama")
    return model


def _o_input_hook(plain, layer, fn):
    """Replace the o_proj input of `layer` by fn(x) where x: [batch, pos, n_heads, d_head]."""
    cfg = plain.config
    d_head = cfg.hidden_size // cfg.num_attention_heads

    def pre_hook(module, args):
        (x,) = args
        z = x.view(*x.shape[:-1], cfg.num_attention_heads, d_head).clone()
        return (fn(z).reshape(x.shape),)

    return plain.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(pre_hook)


def _plain_last_logits(plain, ids, mask, layer=None, fn=None):
    handle = _o_input_hook(plain, layer, fn) if fn is not None else None
    try:
        with torch.no_grad():
            return plain(ids, attention_mask=mask).logits[:, -1]
    finally:
        if handle is not None:
            handle.remove()


def _plain_z(plain, ids, mask, layer):
    """Head outputs [batch, pos, n_heads, d_head] at `layer` from the plain model."""
    store = {}

    def keep(z):
        store["z"] = z.clone()
        return z

    _plain_last_logits(plain, ids, mask, layer, keep)
    return store["z"]


def _ours(model, batch, iv):
    return forward_last(model, batch, iv).logits


def test_zero_and_scale(tiny_llama, plain):
    batch = tiny_llama.tokenize(PROMPTS)
    for iv, fn in [
        (make_intervention(tiny_llama, "L1H3", "zero"), lambda z: z.index_fill(2, torch.tensor([HEAD]), 0.0)),
        (make_intervention(tiny_llama, "L1H3", "scale", alpha=2.5), lambda z: _scale_head(z, 2.5)),
    ]:
        expected = _plain_last_logits(plain, batch.input_ids, batch.attention_mask, LAYER, fn)
        assert torch.allclose(_ours(tiny_llama, batch, iv), expected, atol=1e-5), iv.kind


def _scale_head(z, alpha):
    z[:, :, HEAD] *= alpha
    return z


def test_mean_ablation_uses_the_reference_mean(tiny_llama, plain):
    reference = ["some reference text", "another one, longer than the first", "x"]
    iv = make_intervention(tiny_llama, "L1H3", "mean", reference=reference)
    # Hand computation: every real token of every reference prompt, one prompt at a time (no padding).
    outs = []
    for text in reference:
        ref = tiny_llama.tokenize([text])
        outs.append(_plain_z(plain, ref.input_ids, ref.attention_mask, LAYER)[0, :, HEAD])
    mean = torch.cat(outs).mean(0)  # [d_head]
    assert torch.allclose(iv.values[LAYER, HEAD], mean, atol=1e-6)

    def fill(z):
        z[:, :, HEAD] = mean
        return z

    batch = tiny_llama.tokenize(PROMPTS)
    expected = _plain_last_logits(plain, batch.input_ids, batch.attention_mask, LAYER, fill)
    assert torch.allclose(_ours(tiny_llama, batch, iv), expected, atol=1e-5)


def test_resample_patches_the_source_outputs_aligned_at_the_end(tiny_llama, plain):
    source = "the source prompt is long enough"
    iv = make_intervention(tiny_llama, "L1H3", "resample", source=source)
    src_batch = tiny_llama.tokenize([source])
    src = _plain_z(plain, src_batch.input_ids, src_batch.attention_mask, LAYER)[0, :, HEAD]  # [src_pos, d_head]
    batch = tiny_llama.tokenize(["short", "a target longer than the source prompt is, really"])
    seq = batch.input_ids.shape[1]
    assert seq > src.shape[0]  # so the mean-fill branch is exercised

    def fill(z):
        for k in range(seq):
            j = src.shape[0] - (seq - k)
            z[:, k, HEAD] = src[j] if j >= 0 else src.mean(0)
        return z

    expected = _plain_last_logits(plain, batch.input_ids, batch.attention_mask, LAYER, fill)
    assert torch.allclose(_ours(tiny_llama, batch, iv), expected, atol=1e-5)


def test_uniform_attention_outputs_the_prefix_mean_of_values(tiny_llama, plain):
    batch = tiny_llama.tokenize(PROMPTS)
    cfg = plain.config
    d_head = cfg.hidden_size // cfg.num_attention_heads
    kv_head = HEAD // (cfg.num_attention_heads // cfg.num_key_value_heads)
    store = {}
    handle = plain.model.layers[LAYER].self_attn.v_proj.register_forward_hook(
        lambda m, a, out: store.__setitem__("v", out.detach().clone())
    )
    try:
        _plain_last_logits(plain, batch.input_ids, batch.attention_mask)
    finally:
        handle.remove()
    v = store["v"].view(*store["v"].shape[:-1], cfg.num_key_value_heads, d_head)[:, :, kv_head]  # [batch, pos, d]
    mask = batch.attention_mask.float()
    causal = torch.tril(torch.ones(mask.shape[1], mask.shape[1]))  # [q, k]
    weights = causal[None] * mask[:, None, :]  # visible real keys per query
    # Padding queries see no real key; any finite value does (nothing real attends to them).
    uniform_z = (weights @ v) / weights.sum(-1, keepdim=True).clamp_min(1)  # [batch, pos, d_head]

    def fill(z):
        z[:, :, HEAD] = uniform_z
        return z

    expected = _plain_last_logits(plain, batch.input_ids, batch.attention_mask, LAYER, fill)
    iv = make_intervention(tiny_llama, "L1H3", "uniform")
    assert torch.allclose(_ours(tiny_llama, batch, iv), expected, atol=1e-5)
    # GQA: head 2 shares head 3's K/V head, and the uniform route leaves it untouched.
    z_base, z_uniform = head_outputs(tiny_llama, batch), head_outputs(tiny_llama, batch, iv)
    assert torch.equal(z_base[LAYER, :, :, 2], z_uniform[LAYER, :, :, 2])
    real = batch.attention_mask.bool()
    assert torch.allclose(z_uniform[LAYER, :, :, HEAD][real], uniform_z[real], atol=1e-5)


def test_rows_carry_different_interventions(tiny_llama):
    batch = tiny_llama.tokenize(PROMPTS[:3])
    ivs = [
        make_intervention(tiny_llama, "L0H1", "zero"),
        None,
        make_intervention(tiny_llama, "L2H0,L1H2", "scale", alpha=3.0),
    ]
    together = forward_last(tiny_llama, batch, ivs).logits
    for i, iv in enumerate(ivs):
        alone = forward_last(tiny_llama, tiny_llama.tokenize([PROMPTS[i]]), iv).logits[0]
        assert torch.allclose(together[i], alone, atol=1e-5)


def test_hooks_are_removed_after_exceptions(tiny_llama):
    batch = tiny_llama.tokenize(PROMPTS)
    iv = make_intervention(tiny_llama, "L1H3", "zero")
    assert hook_count(tiny_llama) == 0
    with pytest.raises(RuntimeError, match="user code failed"), intervene(tiny_llama, iv):
        assert hook_count(tiny_llama) > 0
        raise RuntimeError("user code failed")
    assert hook_count(tiny_llama) == 0
    # A failure inside a hook during the forward pass (2 intervention rows for a batch of 4).
    with pytest.raises(InterpError, match="2 rows but the batch has 4"):
        forward_last(tiny_llama, batch, [iv, iv])
    assert hook_count(tiny_llama) == 0
    # And the model is unchanged afterwards.
    assert torch.allclose(forward_last(tiny_llama, batch).logits, forward_last(tiny_llama, batch, None).logits)


def test_intervention_validation(tiny_llama):
    with pytest.raises(InterpError, match="choose one of"):
        make_intervention(tiny_llama, "L0H0", "shuffle")
    with pytest.raises(InterpError, match="needs alpha"):
        make_intervention(tiny_llama, "L0H0", "scale")
    with pytest.raises(InterpError, match="reference prompts"):
        make_intervention(tiny_llama, "L0H0", "mean")
    with pytest.raises(InterpError, match="source prompt"):
        make_intervention(tiny_llama, "L0H0", "resample")
    with pytest.raises(InterpError, match="3 layers"):
        make_intervention(tiny_llama, "L7H0", "zero")
    with pytest.raises(InterpError, match="values"):
        HeadIntervention((Head(0, 0),), "mean")


def _plain_greedy(plain, tok, prompt, max_new, fn, layer):
    """No KV cache, no padding: recompute the whole sequence each step."""
    ids = tok([prompt], return_tensors="pt").input_ids
    prompt_len = ids.shape[1]
    for _ in range(max_new):
        logits = _plain_last_logits(
            plain, ids, torch.ones_like(ids), layer, (lambda z: fn(z, prompt_len)) if fn else None
        )
        nxt = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        if int(nxt) == tok.eos_token_id:
            break
    return tok.decode(ids[0, prompt_len:], skip_special_tokens=True)


def test_generation_keeps_the_intervention_for_every_token(tiny_llama, plain):
    tok = tiny_llama.tokenizer
    source = "a source prompt for resampling"
    src_batch = tiny_llama.tokenize([source])
    src = _plain_z(plain, src_batch.input_ids, src_batch.attention_mask, LAYER)[0, :, HEAD]

    def resample_fill(z, prompt_len):
        for k in range(z.shape[1]):
            if k < prompt_len:  # prompt positions: aligned at the prompt's end
                j = src.shape[0] - (prompt_len - k)
                z[:, k, HEAD] = src[j] if j >= 0 else src.mean(0)
            else:  # generated positions take the source's last output
                z[:, k, HEAD] = src[-1]
        return z

    cases = [
        (None, None),
        (make_intervention(tiny_llama, "L1H3", "scale", alpha=4.0), lambda z, n: _scale_head(z, 4.0)),
        (make_intervention(tiny_llama, "L1H3", "resample", source=source), resample_fill),
    ]
    prompts = ["hello there", "the cat"]
    for iv, fn in cases:
        ours = generate(tiny_llama, prompts, iv, max_new_tokens=6)
        expected = [_plain_greedy(plain, tok, p, 6, fn, LAYER) for p in prompts]
        assert ours == expected, iv
    assert hook_count(tiny_llama) == 0


def test_generate_checks_rows_against_prompts(tiny_llama):
    iv = make_intervention(tiny_llama, "L0H0", "zero")
    with pytest.raises(InterpError, match="one per prompt"):
        generate(tiny_llama, ["a", "b"], [iv], max_new_tokens=2)
    with pytest.raises(InterpError, match="max_new_tokens"):
        generate(tiny_llama, ["a"], iv, max_new_tokens=0)


def test_capture_rejects_unknown_hooks(tiny_llama):
    with pytest.raises(InterpError, match="Unknown hook point"):
        interp.capture(tiny_llama, tiny_llama.tokenize(["a"]), ["blocks.0.attn.hook_nope"])
