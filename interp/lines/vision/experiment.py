"""The vision-heads experiment on the scenes-VLM: `interp vision experiment` (or `make vision-experiment`).

1. QA accuracy: colour and shape questions on held-out generated scenes, greedy answers, first word exact.
2. VHD-head ablation: VHD per head from calibration scenes (their colour/shape questions), then QA accuracy
   with the top-k VHD heads zero-ablated versus k random heads drawn from the same layers (same number per
   layer), several random draws.
3. Hallucination: captions ("Describe the image.") of held-out scenes (1-4 objects as in training, and harder
   5-object scenes), CHAIR_S / CHAIR_I against each scene's objects, without and with VHR; and QA accuracy
   with VHR, to see whether it costs accuracy; T-VHD of correct vs hallucinated object words in the captions.

All scene sets are seeded and disjoint from training (training draws its scenes from other seeds). The
results go to docs/vision_heads/ as JSON (numbers, configs, timings) plus the VHD HeadScores.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interp.core.config import OUTPUT_DIR, Config, positive
from interp.core.heads import Head
from interp.core.progress import progress_iter
from interp.engine.interventions import HeadIntervention
from interp.lines.vision.scenes import CAPTION_PROMPT, COLOURS, SHAPES, Scene, chair, first_word, make_scenes
from interp.model.loaded import LoadedModel


@dataclass(frozen=True)
class ExperimentConfig(Config):
    model: str = "scenes-vlm"
    out: str = field(default="docs/vision_heads", metadata=OUTPUT_DIR)  # checked writable on construction
    eval_scenes: int = 100
    eval_seed: int = 20_000
    calib_scenes: int = 32
    calib_seed: int = 30_000
    ks: tuple[str, ...] = ("4", "8", "16")
    random_repeats: int = 3
    caption_scenes: int = 100
    caption_seed: int = 40_000
    max_objects: int = 4
    alphas: tuple[str, ...] = ("1.5", "2")
    vhr_layers: str = "auto"
    max_caption_tokens: int = 40
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"

    def check(self) -> None:
        for name in ("eval_scenes", "calib_scenes", "random_repeats", "caption_scenes", "batch_size"):
            positive(name, getattr(self, name))


@dataclass(frozen=True)
class QAItem:
    image: np.ndarray
    prompt: str
    answer: str
    kind: str


def qa_items(scenes: list[Scene]) -> list[QAItem]:
    """Every colour and shape question of every scene (no captions)."""
    out = []
    for scene in scenes:
        pixels = scene.render()
        out += [QAItem(pixels, q.prompt, q.answer, q.kind) for q in scene.questions() if q.kind != "caption"]
    return out


def qa_accuracy(
    model: LoadedModel,
    items: list[QAItem],
    rows: HeadIntervention | None = None,
    *,
    vhr: Any = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "qa",
) -> dict[str, float]:
    """Greedy answers (3 tokens); correct when the first word equals the answer. vhr: a VHRConfig."""
    from interp.engine.run import generate_batch
    from interp.lines.vision.metrics import vhr_interventions

    hits: dict[str, list[bool]] = {"colour": [], "shape": []}
    starts = range(0, len(items), batch_size)
    for start in progress_iter(starts, progress, desc=desc, total=len(starts)):
        chunk = items[start : start + batch_size]
        batch = model.tokenize_images([it.prompt for it in chunk], [it.image for it in chunk])
        chunk_rows: Any = vhr_interventions(model, batch, vhr) if vhr is not None else rows
        answers = generate_batch(model, batch, chunk_rows, max_new_tokens=3)
        for it, ans in zip(chunk, answers, strict=True):
            hits[it.kind].append(first_word(ans) == it.answer)
    both = hits["colour"] + hits["shape"]
    return {
        "accuracy": float(np.mean(both)),
        "colour": float(np.mean(hits["colour"])),
        "shape": float(np.mean(hits["shape"])),
        "n": len(both),
    }


def random_same_layers(top: list[Head], n_heads: int, rng: np.random.Generator) -> list[Head]:
    """For each layer, as many random heads as `top` has there, avoiding the top heads where possible."""
    out: list[Head] = []
    for layer in sorted({h.layer for h in top}):
        count = sum(h.layer == layer for h in top)
        taken = {h.head for h in top if h.layer == layer}
        pool = [h for h in range(n_heads) if h not in taken]
        if len(pool) < count:  # the layer is mostly top heads: draw from the whole layer
            pool = list(range(n_heads))
        out += [Head(layer, int(h)) for h in rng.choice(pool, size=count, replace=False)]
    return out


def ablation_experiment(model: LoadedModel, cfg: ExperimentConfig, eval_items: list[QAItem], log: Any) -> dict:
    from interp.lines.vision.metrics import vhd

    calib = qa_items(make_scenes(cfg.calib_scenes, cfg.calib_seed, max_objects=cfg.max_objects))
    scores = vhd(
        model,
        [it.image for it in calib],
        [it.prompt for it in calib],
        pairing="zip",
        batch_size=cfg.batch_size,
        progress=True,
        config={"calib_scenes": cfg.calib_scenes, "calib_seed": cfg.calib_seed, "pairing": "zip"},
    )
    scores.save(Path(cfg.out) / "vhd_scenes_vlm.json")
    log(f"VHD on {len(calib)} calibration questions; top 10: {[h.label for h in scores.top_heads(10)]}")
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for k in (int(x) for x in cfg.ks):
        top = scores.top_heads(k)
        acc_top = qa_accuracy(model, eval_items, HeadIntervention(tuple(top), "zero"), batch_size=cfg.batch_size)
        randoms = []
        for _ in range(cfg.random_repeats):
            heads = random_same_layers(top, model.n_heads, rng)
            acc = qa_accuracy(model, eval_items, HeadIntervention(tuple(heads), "zero"), batch_size=cfg.batch_size)
            randoms.append({"heads": [h.label for h in heads], **acc})
        rand_acc = [x["accuracy"] for x in randoms]
        row = {
            "k": k,
            "top_heads": [h.label for h in top],
            "top_vhd": acc_top,
            "random_same_layers": randoms,
            "random_mean_accuracy": float(np.mean(rand_acc)),
            "random_min_accuracy": float(np.min(rand_acc)),
        }
        rows.append(row)
        log(f"k={k}: top-VHD ablated acc {acc_top['accuracy']:.3f}; random same-layer acc {np.round(rand_acc, 3)}")
    return {"vhd_top20": [h.label for h in scores.top_heads(20)], "rows": rows}


def caption_set(model: LoadedModel, cfg: ExperimentConfig, scenes: list[Scene], log: Any, name: str) -> dict:
    """CHAIR of "Describe the image." captions without VHR and with VHR at each alpha."""
    from interp.lines.vision.metrics import VHRConfig, generate_images, vhr_generate

    images = [s.render() for s in scenes]
    prompts = [CAPTION_PROMPT] * len(scenes)
    t0 = time.time()
    base = generate_images(
        model, images, prompts, max_new_tokens=cfg.max_caption_tokens, batch_size=cfg.batch_size, progress=True
    )
    out: dict[str, Any] = {
        "n_scenes": len(scenes),
        "objects_per_scene": float(np.mean([len(s.objects) for s in scenes])),
        "base": {
            "shape": chair(base, scenes).to_dict(),
            "colour+shape": chair(base, scenes, "colour+shape").to_dict(),
            "seconds": round(time.time() - t0, 1),
            "captions": base,
        },
        "vhr": [],
        "truth": [s.caption() for s in scenes],
    }
    log(f"[{name}] captions base: {out['base']['shape']}")
    for alpha in (float(a) for a in cfg.alphas):
        t0 = time.time()
        vcfg = VHRConfig(alpha=alpha, layers=cfg.vhr_layers)
        caps, used = vhr_generate(
            model, images, prompts, vcfg, max_new_tokens=cfg.max_caption_tokens, batch_size=cfg.batch_size
        )
        row = {
            "alpha": alpha,
            "layers": cfg.vhr_layers,
            "shape": chair(caps, scenes).to_dict(),
            "colour+shape": chair(caps, scenes, "colour+shape").to_dict(),
            "mean_heads_reinforced": float(np.mean([len(iv.heads) if iv is not None else 0 for iv in used])),
            "seconds": round(time.time() - t0, 1),
            "captions": caps,
        }
        out["vhr"].append(row)
        log(f"[{name}] captions VHR alpha={alpha}: {row['shape']}")
    return out


def tvhd_experiment(model: LoadedModel, scenes: list[Scene], cfg: ExperimentConfig, log: Any) -> dict:
    """T-VHD of the object words in captions: correct mentions vs hallucinated ones (the paper's observation
    is that hallucinated object words have lower T-VHD). A mention is the colour word and the shape word;
    it is hallucinated when the scene has no object of that colour and shape."""
    from interp.lines.vision.metrics import token_vhd

    result = token_vhd(
        model,
        [s.render() for s in scenes],
        [CAPTION_PROMPT] * len(scenes),
        pairing="zip",
        max_new_tokens=cfg.max_caption_tokens,
        top_k=4,
        batch_size=cfg.batch_size,
        progress=True,
    )
    groups: dict[str, list[float]] = {"correct": [], "hallucinated": [], "other tokens": []}
    for scene, toks, values in zip(scenes, result.extras["tokens"], result.extras["t_vhd"], strict=True):
        truth = {(o.colour, o.shape) for o in scene.objects}
        words = [t.strip().lower() for t in toks]
        in_mention = set()
        for i, word in enumerate(words):
            if word in SHAPES and i > 0 and words[i - 1] in COLOURS:
                key = "correct" if (words[i - 1], word) in truth else "hallucinated"
                groups[key] += [values[i - 1], values[i]]
                in_mention |= {i - 1, i}
        groups["other tokens"] += [v for i, v in enumerate(values) if i not in in_mention]
    out = {k: {"n_tokens": len(v), "mean_t_vhd": float(np.mean(v)) if v else None} for k, v in groups.items()}
    log(f"T-VHD of object words: {out}")
    return out


def caption_experiment(model: LoadedModel, cfg: ExperimentConfig, eval_items: list[QAItem], log: Any) -> dict:
    """Captions of in-distribution scenes (1 to max_objects objects) and of harder 5-object scenes (training
    never shows five), CHAIR with and without VHR; plus QA accuracy under VHR (does VHR cost accuracy?)."""
    from interp.lines.vision.metrics import VHRConfig

    sets = {
        f"1-{cfg.max_objects} objects": make_scenes(cfg.caption_scenes, cfg.caption_seed, 1, cfg.max_objects),
        "5 objects": make_scenes(cfg.caption_scenes, cfg.caption_seed + 1, 5, 5),
    }
    out: dict[str, Any] = {name: caption_set(model, cfg, scenes, log, name) for name, scenes in sets.items()}
    out["t_vhd_object_words"] = tvhd_experiment(model, [s for v in sets.values() for s in v], cfg, log)
    out["qa_with_vhr"] = []
    for alpha in (float(a) for a in cfg.alphas):
        vcfg = VHRConfig(alpha=alpha, layers=cfg.vhr_layers)
        acc = qa_accuracy(model, eval_items, vhr=vcfg, batch_size=cfg.batch_size, progress=True, desc="qa+vhr")
        out["qa_with_vhr"].append({"alpha": alpha, **acc})
        log(f"QA with VHR alpha={alpha}: {acc}")
    return out


def figures(results: dict[str, Any], out: Path) -> list[Path]:
    """PNG figures for the docs: the VHD heatmap, ablation accuracies, CHAIR with and without VHR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from interp.core.results import HeadScores

    written = []
    scores = HeadScores.load(out / "vhd_scenes_vlm.json")
    fig, ax = plt.subplots(figsize=(4.2, 7))
    im = ax.imshow(scores.scores, aspect="auto", cmap="viridis")
    ax.set(xlabel="head", ylabel="layer", title="VHD per head (scenes-vlm)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(out / "vhd_heatmap.png", dpi=120)
    written.append(out / "vhd_heatmap.png")

    rows = results["ablation"]["rows"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ks = [r["k"] for r in rows]
    x = np.arange(len(ks))
    ax.bar(x - 0.2, [r["top_vhd"]["accuracy"] for r in rows], 0.4, label="top-k VHD heads zeroed")
    rand = [[a["accuracy"] for a in r["random_same_layers"]] for r in rows]
    yerr = [np.std(a) for a in rand]
    ax.bar(x + 0.2, [np.mean(a) for a in rand], 0.4, yerr=yerr, label="k random heads, same layers")
    ax.axhline(results["qa"]["accuracy"], color="k", ls="--", lw=1, label="no ablation")
    ax.set(xticks=x, xticklabels=[f"k={k}" for k in ks], ylabel="held-out QA accuracy", ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=120)
    written.append(out / "ablation.png")

    sets = [k for k, v in results["captions"].items() if isinstance(v, dict) and "base" in v]
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        data = results["captions"][name]
        labels = ["base"] + [f"VHR a={r['alpha']:g}" for r in data["vhr"]]
        vals = [data["base"]["colour+shape"]] + [r["colour+shape"] for r in data["vhr"]]
        x = np.arange(len(labels))
        ax.bar(x - 0.2, [v["chair_s"] for v in vals], 0.4, label="CHAIR_S")
        ax.bar(x + 0.2, [v["chair_i"] for v in vals], 0.4, label="CHAIR_I")
        ax.set(xticks=x, xticklabels=labels, title=f"captions, {name} (colour+shape)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "chair.png", dpi=120)
    written.append(out / "chair.png")
    plt.close("all")
    return written


def run(cfg: ExperimentConfig) -> dict[str, Any]:
    import torch

    from interp.core.provenance import make_provenance
    from interp.model.loading import load_model

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    model = load_model(cfg.model, cfg.device, cfg.dtype)
    log(f"loaded {model}")
    eval_items = qa_items(make_scenes(cfg.eval_scenes, cfg.eval_seed, max_objects=cfg.max_objects))
    base = qa_accuracy(model, eval_items, batch_size=cfg.batch_size, progress=True)
    log(f"QA accuracy on {base['n']} held-out questions: {base}")
    results: dict[str, Any] = {"qa": base}
    results["ablation"] = ablation_experiment(model, cfg, eval_items, log)
    results["captions"] = caption_experiment(model, cfg, eval_items, log)
    results["config"] = cfg.to_dict()
    results["timing"] = {
        "wall_seconds": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "nproc": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
    }
    results["provenance"] = make_provenance(None, seed=cfg.seed, command="interp vision experiment")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    log(f"wrote {out / 'results.json'}")
    try:
        log(f"figures: {[str(p) for p in figures(results, out)]}")
    except ImportError:
        log("matplotlib is not installed (dev extra): no figures")
    return results
