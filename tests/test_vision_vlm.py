"""The offline VLM: generated scenes, CHAIR, the LoRA/parts plumbing, and the shipped scenes-VLM itself."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import interp
from interp.core.errors import InterpError
from interp.lines.vision.scenes import (
    COLOURS,
    SHAPES,
    CooccurSpec,
    Scene,
    SceneObject,
    absent_partner_rate,
    chair,
    first_word,
    load_scene_file,
    make_cooccur_scenes,
    make_scenes,
    mentioned_objects,
    pair_breaking_scenes,
    pairing_counts,
    parse_pairs,
    save_scenes,
)
from interp.model.zoo import scenes_vlm as build
from interp.model.zoo.tiny_llava import build_tiny_llava


# ---------------------------------------------------------------------------------------------------------
# Scenes and CHAIR
# ---------------------------------------------------------------------------------------------------------
def test_scenes_are_seeded_unambiguous_and_drawn_where_they_say(tmp_path):
    a, b = make_scenes(30, seed=4), make_scenes(30, seed=4)
    assert a == b and make_scenes(30, seed=5) != a
    assert all(np.array_equal(x.render(), y.render()) for x, y in zip(a[:3], b[:3], strict=True))
    for scene in a:
        assert 1 <= len(scene.objects) <= 4
        assert len({o.shape for o in scene.objects}) == len(scene.objects)  # distinct shapes
        assert len({o.colour for o in scene.objects}) == len(scene.objects)  # distinct colours
        cells = [(o.row, o.col) for o in scene.objects]
        assert cells == sorted(set(cells))  # one object per cell, reading order
        pixels = scene.render()
        for o in scene.objects:  # every shape covers its centre: the pixel there has the object's colour
            got = pixels[int(o.cy), int(o.cx)].astype(int)
            assert np.abs(got - np.array(COLOURS[o.colour])).max() < 50, (o, got)
        qs = scene.questions()
        assert {q.answer for q in qs if q.kind == "colour"} == {o.colour for o in scene.objects}
        assert {q.answer for q in qs if q.kind == "shape"} == {o.shape for o in scene.objects}
    save_scenes(a[:3], tmp_path)
    assert load_scene_file(tmp_path) == a[:3]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["scene_000.png", "scene_001.png", "scene_002.png"]


def _scene(*objects: tuple[str, str]) -> Scene:
    return Scene(tuple(SceneObject(s, c, i // 2, i % 2, 10.0, 10.0, 5.0) for i, (c, s) in enumerate(objects)), 40, 0)


def test_captions_and_chair_against_hand_counts():
    scene = _scene(("red", "circle"), ("blue", "square"), ("green", "triangle"))
    assert scene.caption() == "a red circle, a blue square and a green triangle."
    assert mentioned_objects("Two red circles and a cross.") == [("red", "circle"), (None, "cross")]
    captions = [
        "a red circle, a blue square and a green triangle.",  # correct
        "a red circle and a yellow cross.",  # cross is hallucinated
        "a blue circle.",  # right shape, wrong colour
    ]
    scenes = [scene, scene, scene]
    result = chair(captions, scenes)
    assert (result.n_mentions, result.n_hallucinated) == (3 + 2 + 1, 1)
    assert result.chair_i == pytest.approx(1 / 6) and result.chair_s == pytest.approx(1 / 3)
    assert result.recall == pytest.approx((3 + 1 + 1) / 9)
    strict = chair(captions, scenes, match="colour+shape")
    assert strict.n_hallucinated == 2 and strict.chair_s == pytest.approx(2 / 3)
    with pytest.raises(InterpError, match="one caption per scene"):
        chair(captions[:2], scenes)
    assert first_word(" Red.") == "red" and first_word("") == ""
    assert set(SHAPES) >= {o.shape for s in make_scenes(50) for o in s.objects}


# ---------------------------------------------------------------------------------------------------------
# Co-occurrence-biased scenes
# ---------------------------------------------------------------------------------------------------------
def test_cooccur_scenes_have_the_stated_pairing_counts_exactly():
    spec = CooccurSpec("circle:square,triangle:diamond", pair_rate=0.9, hidden_rate=0.3)
    scenes = make_cooccur_scenes(400, seed=3, spec=spec)
    assert scenes == make_cooccur_scenes(400, seed=3, spec=spec) and scenes != make_cooccur_scenes(400, 4, spec)
    counts = pairing_counts(scenes, spec)
    for cue, partner in spec.pair_list:
        c = counts[f"{cue}:{partner}"]
        # exact quotas, not Bernoulli draws: round(rate * n) of the cue scenes, then of the pairs
        assert c["cue_and_partner"] == round(0.9 * c["cue"]) and c["cue"] > 100
        assert c["partner_hidden"] == round(0.3 * c["cue_and_partner"])
        # recount by hand from the objects
        cue_scenes = [s for s in scenes if any(o.shape == cue for o in s.objects)]
        both = [s for s in cue_scenes if any(o.shape == partner for o in s.objects)]
        assert (len(cue_scenes), len(both)) == (c["cue"], c["cue_and_partner"])
        assert sum(any(o.shape == partner and o.hidden for o in s.objects) for s in both) == c["partner_hidden"]
    for scene in scenes:  # still valid scenes: distinct shapes, colours, cells; hidden objects are not drawn
        assert 1 <= len(scene.objects) <= 4
        assert len({o.shape for o in scene.objects}) == len({o.colour for o in scene.objects}) == len(scene.objects)
        cells = [(o.row, o.col) for o in scene.objects]
        assert cells == sorted(set(cells))
        assert all(o.hidden == (o.shape in ("square", "diamond") and o.hidden) for o in scene.objects)
    hidden_scene = next(s for s in scenes if any(o.hidden for o in s.objects))
    ghost = next(o for o in hidden_scene.objects if o.hidden)
    drawn = hidden_scene.render()[int(ghost.cy), int(ghost.cx)].astype(int)
    assert np.abs(drawn - hidden_scene.background).max() < 40  # background there, not the object's colour
    assert ghost.shape in hidden_scene.caption()  # but the caption names it
    assert all(q.answer != ghost.colour for q in hidden_scene.questions() if q.kind == "colour")
    assert spec.named_partner_rate() == pytest.approx(0.27 / 0.37)
    with pytest.raises(InterpError, match="one pair only"):
        parse_pairs("circle:square,square:cross")
    with pytest.raises(InterpError, match="cue:partner"):
        parse_pairs("circle-square")
    with pytest.raises(InterpError, match="pair_rate"):
        CooccurSpec(pair_rate=1.5)


def test_pair_breaking_scenes_hold_a_cue_and_never_its_partner_and_absent_partner_rate_counts():
    spec = CooccurSpec()
    scenes = pair_breaking_scenes(40, seed=1, spec=spec)
    assert scenes == pair_breaking_scenes(40, seed=1, spec=spec)
    for i, scene in enumerate(scenes):
        cue = spec.pair_list[i % 2][0]
        assert cue in scene.shapes and not any(o.hidden for o in scene.objects)
        assert all(partner not in scene.shapes for c, partner in spec.pair_list if c in scene.shapes)
    one = _scene(("red", "circle"), ("green", "cross"))
    both_cues = _scene(("red", "circle"), ("blue", "triangle"))
    captions = ["a red circle, a blue square and a green cross.", "a red circle and a blue triangle."]
    got = absent_partner_rate(captions, [one, both_cues], spec)
    assert got == {"rate": pytest.approx(1 / 3), "named": 1, "cases": 3}


# ---------------------------------------------------------------------------------------------------------
# LoRA merge and the parts file
# ---------------------------------------------------------------------------------------------------------
def _random_lora(model, rank=4, alpha=8.0, seed=0):
    wrapped = build.add_lora(model, rank, alpha)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for lora in wrapped.values():
            lora.lora_B.normal_(0, 0.2)  # trained-looking (B starts at zero)
    return wrapped


def test_merged_lora_equals_the_wrapped_forward_and_parts_round_trip(tmp_path):
    hf, processor = build_tiny_llava(seed=3)
    fresh = copy.deepcopy(hf)
    wrapped = _random_lora(hf)
    assert len(wrapped) == 3 * len(build.LORA_TARGETS)
    enc = processor(text=["<image>\nhi"], images=[np.full((32, 32, 3), 90, np.uint8)], return_tensors="pt")
    with torch.no_grad():
        want = hf(**enc).logits
        before = fresh(**enc).logits
    build.save_parts(hf, wrapped, tmp_path, {"lora": {"rank": 4, "alpha": 8.0}, "vision": None})
    meta = build.load_parts(fresh, tmp_path)
    assert meta["lora"]["rank"] == 4
    with torch.no_grad():
        got = fresh(**enc).logits
    assert (want - before).abs().max() > 1e-2  # the LoRA deltas matter
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(interp.core.errors.ModelLoadError, match="interp.lines.vision.train"):
        build.read_meta(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------
# The shipped scenes-VLM (needs the default model's weights)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.default_model
def test_scenes_vlm_ships_small_parts_and_answers_held_out_questions():
    from interp.lines.vision.experiment import qa_accuracy, qa_items
    from interp.model.zoo.scenes_vlm import parts_dir as _scenes_vlm_parts

    parts = _scenes_vlm_parts()
    size = sum(p.stat().st_size for p in parts.iterdir())
    assert size <= 20e6, f"data/vision_heads/scenes-vlm is {size / 1e6:.1f} MB"
    model = interp.load_model("scenes-vlm")
    assert model.is_multimodal and type(model.hf_model).__name__ == "LlavaForConditionalGeneration"
    assert (model.n_layers, model.n_heads, model.n_kv_heads) == (30, 9, 3)
    items = qa_items(make_scenes(8, seed=777))  # held out: training never draws from seed 777's stream
    acc = qa_accuracy(model, items)
    assert acc["accuracy"] >= 0.8, acc  # the full held-out measurement (docs/vision_heads.md) is larger


def test_shipped_cooccur_variant_is_small_and_records_its_exact_training_pairing():
    from interp.lines.vision.train import TrainConfig, scene_stream
    from interp.model.zoo.scenes_vlm import parts_dir

    parts = parts_dir("scenes-vlm-cooccur")
    size = sum(p.stat().st_size for p in parts.iterdir())
    assert size <= 20e6, f"{parts} is {size / 1e6:.1f} MB"
    meta = json.loads((parts / "parts.json").read_text())
    cfg = TrainConfig(**{k: v for k, v in meta["train_config"].items()})
    assert cfg.scene_set == "cooccur" and cfg.init_lora
    stream = scene_stream(cfg, cfg.stage2_steps * cfg.stage2_batch, cfg.seed + 5)  # the run's stage-2 scenes
    assert meta["stage2_pairing_counts"] == pairing_counts(stream, cfg.cooccur())
    for c in meta["stage2_pairing_counts"].values():
        assert c["cue_and_partner"] == round(cfg.pair_rate * c["cue"])
        assert c["partner_hidden"] == round(cfg.hidden_rate * c["cue_and_partner"])
