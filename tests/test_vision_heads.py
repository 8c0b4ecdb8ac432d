"""VHD, T-VHD and VHR on tiny random LLaVA models: brute-force equality, planted ground truth, loading, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import interp
from interp.core.errors import InterpError, MetricNotApplicableError, ModelLoadError, PromptError
from interp.core.heads import Head
from interp.engine.hookpoints import z_name
from interp.engine.interventions import HeadIntervention
from interp.engine.run import generate_batch
from interp.lines.vision.metrics import (
    VHRConfig,
    make_pairs,
    parse_layers,
    resolve_images,
    select_layer,
    token_vhd,
    vhd,
    vhr_generate,
    vhr_interventions,
)
from interp.model.zoo.tiny_llava import build_tiny_llava

PROMPTS = ["what is this?", "hi"]


def _images(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_llava() -> interp.LoadedModel:
    return interp.load_model("tiny-llava")


# ---------------------------------------------------------------------------------------------------------
# Brute force: one forward pass per head, unbatched, inputs built straight from the processor
# ---------------------------------------------------------------------------------------------------------
def _inputs(model: interp.LoadedModel, image: np.ndarray, prompt: str) -> tuple[dict, torch.Tensor]:
    enc = model.processor(text=[f"<image>\n{prompt}"], images=[image], return_tensors="pt")
    ids = enc.pop("input_ids")
    enc.pop("attention_mask")
    text_ids = ids[ids != model.image_token_id][None]  # the image tokens removed
    return {"input_ids": ids, **enc}, text_ids


def _head_z(model: interp.LoadedModel, layer: int, head: int, pos: int, **inputs) -> torch.Tensor:
    store = {}

    def grab(z, hook):
        store["z"] = z[0, pos, head].detach().clone()

    ids = inputs.pop("input_ids")
    with model.bridge.hooks(fwd_hooks=[(z_name(layer), grab)]):
        model.bridge(ids, **inputs)
    return store["z"]


def brute_vhd(model: interp.LoadedModel, image: np.ndarray, prompt: str, pos: int = -1) -> torch.Tensor:
    with_image, text_ids = _inputs(model, image, prompt)
    out = torch.zeros(model.n_layers, model.n_heads)
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            zi = _head_z(model, layer, head, pos, **dict(with_image))
            zt = _head_z(model, layer, head, pos, input_ids=text_ids)
            out[layer, head] = (zi - zt).norm()
    return out


def test_vhd_equals_brute_force_per_head(tiny_llava):
    images = _images(2)
    result = vhd(tiny_llava, images, PROMPTS, template="raw", batch_size=3)
    expected = torch.stack([brute_vhd(tiny_llava, img, p) for img in images for p in PROMPTS])  # cross pairs
    assert result.per_prompt.shape == (4, 3, 4)
    np.testing.assert_allclose(result.per_prompt, expected.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.scores, expected.mean(0).numpy(), atol=1e-5, rtol=0)
    assert result.scores.min() > 0  # every head of a random model sees the image somewhat


def test_vhd_equals_brute_force_on_llava_next_and_clip_towers():
    for kwargs, size in (({"next_version": True}, (32, 64)), ({"vision": "clip"}, (32, 32))):
        hf, processor = build_tiny_llava(**kwargs)
        model = interp.wrap_model(hf, processor, "tiny-variant")
        image = np.random.default_rng(3).integers(0, 256, (*size, 3), dtype=np.uint8)
        result = vhd(model, [image], ["what"], template="raw")
        np.testing.assert_allclose(result.scores, brute_vhd(model, image, "what").numpy(), atol=1e-5, rtol=0)


def test_vhd_is_zero_for_a_head_that_cannot_see_the_image_and_batching_does_not_matter(tiny_llava):
    images = _images(3, seed=1)
    a = vhd(tiny_llava, images, ["abc"], template="raw", batch_size=1)
    b = vhd(tiny_llava, images, ["abc"], template="raw", batch_size=8)
    np.testing.assert_allclose(a.per_prompt, b.per_prompt, atol=1e-5)
    c = vhd(tiny_llava, images[:2], ["x", "y"], pairing="zip", template="raw")
    assert c.per_prompt.shape[0] == 2
    np.testing.assert_allclose(c.per_prompt[0], vhd(tiny_llava, images[:1], ["x"], template="raw").scores, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Planted ground truth: a head whose attention reads only image tokens, and carries an image marker
# ---------------------------------------------------------------------------------------------------------
PLANT = Head(2, 1)  # last layer; query heads 0 and 1 share KV head 0


def planted_llava() -> interp.LoadedModel:
    """Residual dim 62 is 1 on every token, dim 63 is 4 on image tokens only (0 on text); nothing below the
    planted layer writes to either. Head 1 of layer 2 queries dim 62 and keys on dim 63 through the
    lowest-frequency RoPE pair (dims 7 / 15: ~3e-4 rad per token, so position barely matters): it attends
    to image tokens only. Its KV head's values read dim 63. Head 0 (same KV head) keys negatively on the
    image, so it reads text only."""
    hf, processor = build_tiny_llava(seed=5)
    lm = hf.model.language_model
    with torch.no_grad():
        lm.embed_tokens.weight[:, 62] = 1.0
        lm.embed_tokens.weight[:, 63] = 0.0
        proj = hf.model.multi_modal_projector.linear_2
        proj.weight[62:64] = 0.0
        proj.bias[62], proj.bias[63] = 1.0, 4.0
        for layer in lm.layers[:2]:
            layer.self_attn.o_proj.weight[62:64] = 0.0
            layer.mlp.down_proj.weight[62:64] = 0.0
        attn = lm.layers[2].self_attn
        d = 16
        for head, sign in ((1, 1.0), (0, -1.0)):
            attn.q_proj.weight[head * d + 7] = 0.0
            attn.q_proj.weight[head * d + 15] = 0.0
            attn.q_proj.weight[head * d + 7, 62] = 30.0 * sign
        attn.k_proj.weight[7] = 0.0
        attn.k_proj.weight[15] = 0.0
        attn.k_proj.weight[7, 63] = 30.0
        attn.v_proj.weight[0:d, 63] += 5.0
    return interp.wrap_model(hf, processor, "tiny-llava-planted")


def test_planted_image_reading_head_ranks_first():
    model = planted_llava()
    images = _images(3, seed=2)
    batch = model.tokenize_images(["what is this?"], images[:1], "raw")
    pattern = interp.capture(model, batch, ["blocks.2.attn.hook_pattern"])["blocks.2.attn.hook_pattern"]
    on_image = pattern[0, :, -1][:, batch.image_mask[0]].sum(-1)  # [n_heads] attention mass on image tokens
    assert on_image[PLANT.head] > 0.999  # the planted head reads image tokens only
    assert on_image[0] < 0.001  # its KV sibling reads text only
    result = vhd(model, images, ["what is this?", "describe it"], template="raw")
    assert result.top_heads(1) == [PLANT]
    assert result.scores[PLANT] > 2 * np.sort(result.scores.ravel())[-2]


# ---------------------------------------------------------------------------------------------------------
# T-VHD: every answer step against a step-by-step brute force
# ---------------------------------------------------------------------------------------------------------
def test_token_vhd_equals_step_by_step_brute_force(tiny_llava):
    image, prompt = _images(1, seed=4)[0], "go"
    result = token_vhd(tiny_llava, [image], [prompt], template="raw", max_new_tokens=4, top_k=2)
    with_image, text_ids = _inputs(tiny_llava, image, prompt)
    gen = tiny_llava.hf_model.generate(
        **with_image, max_new_tokens=4, do_sample=False, pad_token_id=0, temperature=None, top_p=None, top_k=None
    )[0, with_image["input_ids"].shape[1] :]
    ends = {tiny_llava.tokenizer.eos_token_id, tiny_llava.tokenizer.pad_token_id}
    gen = gen[: next((i for i, t in enumerate(gen.tolist()) if t in ends), len(gen))]
    assert len(gen) >= 2  # a random model rarely stops at once; the test needs several steps
    steps = []
    for t in range(len(gen)):
        img_ids = torch.cat([with_image["input_ids"], gen[:t][None]], 1)
        txt_ids = torch.cat([text_ids, gen[:t][None]], 1)
        out = torch.zeros(tiny_llava.n_layers, tiny_llava.n_heads)
        for layer in range(tiny_llava.n_layers):
            for head in range(tiny_llava.n_heads):
                zi = _head_z(tiny_llava, layer, head, -1, **{**with_image, "input_ids": img_ids})
                zt = _head_z(tiny_llava, layer, head, -1, input_ids=txt_ids)
                out[layer, head] = (zi - zt).norm()
        steps.append(out)
    steps_t = torch.stack(steps)  # [T, L, H]
    np.testing.assert_allclose(result.scores, steps_t.mean(0).numpy(), atol=1e-5, rtol=0)
    expected_tvhd = steps_t.topk(2, dim=-1).values.sum((-1, -2))
    np.testing.assert_allclose(result.extras["t_vhd"][0], expected_tvhd.numpy(), atol=1e-4, rtol=0)
    assert len(result.extras["tokens"][0]) == len(gen)


# ---------------------------------------------------------------------------------------------------------
# VHR
# ---------------------------------------------------------------------------------------------------------
def test_select_layer_applies_outlier_rule_then_median():
    vhd_l = torch.tensor([1.0, 2.0, 3.0, 10.0, 4.0])
    norm = torch.tensor([1.0, 1.0, 1.0, 10.0, 1.0])
    assert select_layer(vhd_l, norm, "median", 3, 1.0) == [2, 4]  # head 3 is an outlier: score zeroed
    assert select_layer(vhd_l, norm, "median", 3, None) == [3, 4]
    low_norm = torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0])  # big VHD alone is not an outlier
    assert select_layer(vhd_l, low_norm, "median", 3, 1.0) == [3, 4]
    assert select_layer(vhd_l, norm, "top_k", 2, 1.0) == [2, 4]


def test_parse_layers_auto_all_lists_and_errors():
    assert parse_layers("auto", 32) == [1, *range(18, 32)]  # the paper's LLaVA-1.5 setting
    assert parse_layers("auto", 30) == [1, *range(17, 30)]
    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("0, 2-3", 5) == [0, 2, 3]
    with pytest.raises(InterpError, match="out of range"):
        parse_layers("1,9", 3)
    with pytest.raises(InterpError, match="auto"):
        parse_layers("one", 3)


def _scaling(heads: list[Head], alpha: float, first: int) -> list:
    """Plain hooks (no engine intervention code): z of `heads` times alpha at positions >= first."""

    def hook(z, hook, head):
        z = z.clone()
        z[:, first:, head] = z[:, first:, head] * alpha
        return z

    from functools import partial

    return [(z_name(h.layer), partial(hook, head=h.head)) for h in heads]


def _brute_select(model, image, prompt, layers, alpha, positions) -> list[Head]:
    """VHR's selection with full forward passes (one per layer and input, no resumed residuals), earlier
    layers' heads reinforced by plain hooks at every position ("all") or only at the last prompt position
    ("generation")."""
    with_image, text_ids = _inputs(model, image, prompt)
    chosen: list[Head] = []
    for layer in layers:
        zs = {"image": [], "text": []}
        for kind, inputs in (("image", dict(with_image)), ("text", {"input_ids": text_ids})):
            first = 0 if positions == "all" else inputs["input_ids"].shape[1] - 1
            store = {}

            def grab(z, hook, store=store):
                store["z"] = z[0, -1].detach().clone()  # [n_heads, d_head] at the last position

            ids = inputs.pop("input_ids")
            with model.bridge.hooks(fwd_hooks=[*_scaling(chosen, alpha, first), (z_name(layer), grab)]):
                model.bridge(ids, **inputs)
            zs[kind] = store["z"]
        zi, zt = zs["image"], zs["text"]
        chosen += [Head(layer, h) for h in select_layer((zi - zt).norm(dim=-1), zt.norm(dim=-1), "median", 3, 1.0)]
    return chosen


@pytest.mark.parametrize("positions", ["generation", "all"])
def test_vhr_selects_layer_by_layer_with_earlier_reinforcement_in_place(tiny_llava, positions):
    images, prompts = _images(2, seed=6), ["what is this?", "hi"]
    config = VHRConfig(layers="all", alpha=3.0, template="raw", positions=positions)
    batch = tiny_llava.tokenize_images(prompts, images, "raw")  # left-padded: the two prompts differ in length
    got = vhr_interventions(tiny_llava, batch, config)
    for i in range(2):
        chosen = _brute_select(tiny_llava, images[i], prompts[i], range(tiny_llava.n_layers), 3.0, positions)
        assert got[i] is not None and list(got[i].heads) == chosen
        assert got[i].kind == "scale" and got[i].alpha == 3.0
        assert got[i].positions == {"generation": "last", "all": "all"}[positions]


def _brute_vhr_generate(model, image, prompt, heads, alpha, positions, steps) -> list[int]:
    """Greedy decoding with no cache: every step recomputes the whole sequence, the heads reinforced at every
    position ("all") or at the positions that predicted a token: the last prompt position and after."""
    with_image, _ = _inputs(model, image, prompt)
    n_prompt = with_image["input_ids"].shape[1]
    first = 0 if positions == "all" else n_prompt - 1
    ids = with_image.pop("input_ids")
    for _ in range(steps):
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=_scaling(heads, alpha, first)):
            logits = model.bridge(ids, **with_image)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[0, n_prompt:].tolist()


def test_vhr_generation_matches_a_per_step_brute_force_for_both_position_choices(tiny_llava):
    """The paper's choice (positions="generation", the default) and ours ("all") each equal a no-cache
    per-step implementation, selection included; and the two choices are different generations."""
    image, prompt, alpha, steps = _images(1, seed=11)[0], "look", 4.0, 6
    got = {}
    for positions in ("generation", "all"):
        config = VHRConfig(layers="0-2", alpha=alpha, template="raw", positions=positions)
        batch = tiny_llava.tokenize_images([prompt], [image], "raw")
        _, new = generate_batch(
            tiny_llava, batch, vhr_interventions(tiny_llava, batch, config), max_new_tokens=steps, return_ids=True
        )
        heads = _brute_select(tiny_llava, image, prompt, [0, 1, 2], alpha, positions)
        want = _brute_vhr_generate(tiny_llava, image, prompt, heads, alpha, positions, steps)
        got[positions] = new[0].tolist()
        assert got[positions] == want, positions
        _, used = vhr_generate(tiny_llava, [image], [prompt], config, max_new_tokens=steps)
        assert list(used[0].heads) == heads
    assert VHRConfig().positions == "generation"
    batch = tiny_llava.tokenize_images([prompt], [image], "raw")
    logits = {
        p: interp.engine.run.forward_last(
            tiny_llava,
            batch,
            HeadIntervention(
                tuple(Head(layer, h) for layer in range(3) for h in range(2)), "scale", alpha, positions=p
            ),
        ).logits
        for p in ("last", "all")
    }
    assert (logits["last"] - logits["all"]).abs().max() > 1e-3  # the prefill choice changes the prediction


def test_vhr_generation_with_alpha_one_is_the_base_generation(tiny_llava):
    from interp.lines.vision.metrics import generate_images

    images, prompts = _images(2, seed=7), ["abc", "de"]
    base = generate_images(tiny_llava, images, prompts, template="raw", max_new_tokens=5)
    same, used = vhr_generate(tiny_llava, images, prompts, VHRConfig(alpha=1.0, template="raw"), max_new_tokens=5)
    assert same == base and all(iv is not None for iv in used)
    batch = tiny_llava.tokenize_images(prompts[:1], images[:1], "raw")
    iv = vhr_interventions(tiny_llava, batch, VHRConfig(alpha=4.0, template="raw"))[0]
    base_logits = interp.engine.run.forward_last(tiny_llava, batch).logits
    vhr_logits = interp.engine.run.forward_last(tiny_llava, batch, iv).logits
    assert (base_logits - vhr_logits).abs().max() > 1e-3  # reinforcement changes the prediction


def test_vhr_metric_counts_selections_only_in_vhr_layers(tiny_llava):
    result = interp.run_metric("vhr", tiny_llava, ["what"], images="scenes", n_images=2, layers="2", progress=False)
    assert np.isnan(result.scores[:2]).all() and not np.isnan(result.scores[2]).any()
    assert result.per_prompt.shape == (2, 3, 4)
    assert ((result.per_prompt == 0) | (result.per_prompt == 1)).all()


# ---------------------------------------------------------------------------------------------------------
# Loading, registry, errors, CLI
# ---------------------------------------------------------------------------------------------------------
def test_tiny_llava_saved_with_save_pretrained_loads_from_its_directory(tmp_path, tiny_llava):
    hf, processor = build_tiny_llava()
    hf.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = interp.load_model(str(tmp_path))
    assert loaded.is_multimodal and type(loaded.hf_model).__name__ == "LlavaForConditionalGeneration"
    assert (loaded.n_layers, loaded.n_heads, loaded.n_kv_heads) == (3, 4, 2)
    images = _images(2, seed=8)
    a = vhd(tiny_llava, images, ["what"], template="raw")
    b = vhd(loaded, images, ["what"], template="raw")
    np.testing.assert_allclose(a.per_prompt, b.per_prompt, atol=1e-6)
    (tmp_path / "processor_config.json").unlink(missing_ok=True)
    (tmp_path / "preprocessor_config.json").unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="image processor"):
        interp.load_model(str(tmp_path))


def test_vhd_on_a_text_only_model_is_a_clear_error(tiny_llama):
    with pytest.raises(MetricNotApplicableError, match="vision-language model; tiny-llama is text-only"):
        interp.run_metric("vhd", tiny_llama, ["hello"])
    with pytest.raises(MetricNotApplicableError):
        vhd(tiny_llama, _images(1), ["hello"])
    with pytest.raises(PromptError, match="text-only"):
        tiny_llama.tokenize_images(["hi"], [None])


def test_bad_inputs_name_the_problem(tiny_llava, tmp_path):
    with pytest.raises(PromptError, match="zip"):
        make_pairs(_images(2), ["a"], "zip")
    with pytest.raises(PromptError, match="does not exist"):
        resolve_images(str(tmp_path / "nope"))
    with pytest.raises(PromptError, match="holds no images"):
        resolve_images(str(tmp_path))
    with pytest.raises(PromptError, match=r"\[H, W, 3\]"):
        vhd(tiny_llava, [np.zeros((4, 4, 3, 2))], ["a"])
    with pytest.raises(PromptError, match="one image"):
        tiny_llava.tokenize_images(["a", "b"], _images(1))
    with pytest.raises(InterpError, match="alpha"):
        VHRConfig(alpha=0)
    with pytest.raises(InterpError, match="pairing"):
        interp.get_metric("vhd").make_config({"pairing": "all"})


def test_cli_scan_vhd_with_images_folder_and_errors(tmp_path, tiny_llava):
    from interp.cli import app
    from interp.lines.vision.scenes import make_scenes, save_scenes

    save_scenes(make_scenes(2, seed=3), tmp_path / "imgs")
    out = tmp_path / "vhd.json"
    runner = CliRunner()
    args = ["scan", "vhd", "--model", "tiny-llava", "--images", str(tmp_path / "imgs"), "--prompt", "what"]
    res = runner.invoke(app, [*args, "--out", str(out), "--no-progress", "--set", "template=raw"])
    assert res.exit_code == 0, res.output
    saved = interp.HeadScores.load(out, metric="vhd", model="tiny-llava")
    images = resolve_images(str(tmp_path / "imgs"))
    np.testing.assert_allclose(saved.scores, vhd(tiny_llava, images, ["what"], template="raw").scores, atol=1e-6)
    bad = runner.invoke(app, ["scan", "vhd", "--model", "tiny-llama", "--no-progress"])
    assert bad.exit_code == 2 and "text-only" in bad.output
    bad = runner.invoke(app, ["scan", "ablation-kl", "--model", "tiny-llama", "--images", "x"])
    assert bad.exit_code == 2 and "vision metrics" in bad.output
    res = runner.invoke(app, ["scan", "ablation-kl", "--model", "tiny-llama", "--no-progress", "--limit", "2"])
    assert res.exit_code == 0, res.output  # text metrics still scan as before


def test_cli_generate_with_vhr(tmp_path):
    from interp.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["scenes", "--out", str(tmp_path), "--n", "2"])
    assert res.exit_code == 0 and json.loads((tmp_path / "scenes.json").read_text())[0]["caption"]
    res = runner.invoke(
        app,
        [
            *("generate", "--model", "tiny-llava", "--image", str(tmp_path / "scene_000.png"), "--prompt", "hi"),
            *("--vhr", "--max-new-tokens", "3", "--layers", "1-2", "--template", "raw"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "VHR" in res.output and "L1H" in res.output + "L2H"
    res = runner.invoke(app, ["generate", "--model", "tiny-llama", "--prompt", "hi", "--vhr"])
    assert res.exit_code == 2 and "needs images" in res.output


# ---------------------------------------------------------------------------------------------------------
# The co-occurrence testbed's controls and detector statistics (the recorded run: docs/vision_heads.md)
# ---------------------------------------------------------------------------------------------------------
def test_random_head_control_uses_the_same_alpha_positions_layers_and_counts(tiny_llava):
    from interp.lines.vision.cooccur import random_rows

    config = VHRConfig(layers="all", alpha=1.5, template="raw")
    batch = tiny_llava.tokenize_images(["what is this?", "hi", "go"], _images(3, seed=9), "raw")
    vhr_rows = vhr_interventions(tiny_llava, batch, config)
    for seed in (0, 1):
        rows = random_rows(tiny_llava, vhr_rows, config, np.random.default_rng(seed))
        for vhr_iv, iv in zip(vhr_rows, rows, strict=True):
            assert iv is not None and vhr_iv is not None
            assert (iv.kind, iv.alpha, iv.positions) == ("scale", 1.5, "last")
            per_layer = lambda heads: sorted(h.layer for h in heads)  # noqa: E731
            assert per_layer(iv.heads) == per_layer(vhr_iv.heads)  # same layers, same number per layer
            for layer in {h.layer for h in vhr_iv.heads}:
                mine = {h.head for h in vhr_iv.heads if h.layer == layer}
                if len(mine) <= tiny_llava.n_heads / 2:  # enough other heads: none of VHR's are drawn
                    assert not mine & {h.head for h in iv.heads if h.layer == layer}


def test_auroc_and_a_tiny_cooccur_run_end_to_end(tmp_path):
    from interp.lines.vision.cooccur import CooccurConfig, auroc, run

    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert auroc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    out = tmp_path / "cooccur.json"
    cfg = CooccurConfig(
        model="tiny-llava", out=str(out), n_scenes=3, qa_scenes=1, alphas=("2",), random_seeds=1,
        vhr_layers="1-2", max_caption_tokens=3, bootstrap=20, batch_size=2,
    )  # fmt: skip
    run(cfg)
    saved = json.loads(out.read_text())
    assert saved["status"] == "complete"
    assert [r["setting"] for r in saved["settings"]] == ["base", "vhr alpha=2", "random alpha=2 seed=0"]
    for row in saved["settings"]:
        assert len(row["captions"]) == 3 and {"shape", "colour+shape", "absent_partner", "qa"} <= set(row)
    assert saved["settings"][1]["mean_heads_reinforced"] == saved["settings"][2]["mean_heads_reinforced"] > 0
    # A run cut short resumes: finished settings are kept as they are, the rest computed as before.
    cut = {**saved, "status": "running", "settings": saved["settings"][:2]}
    cut["settings"][0]["seconds"] = -1.0  # a marker that only survives if the setting is not recomputed
    del cut["config"]["baseline_only"]  # a file written before that field existed (it is at its default)
    out.write_text(json.dumps(cut))
    run(cfg)
    resumed = json.loads(out.read_text())
    assert resumed["status"] == "complete" and resumed["settings"][0]["seconds"] == -1.0
    assert [r["captions"] for r in resumed["settings"]] == [r["captions"] for r in saved["settings"]]
    with pytest.raises(InterpError, match="alphas"):
        CooccurConfig(alphas=("x",))
