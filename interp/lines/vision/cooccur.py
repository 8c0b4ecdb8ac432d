"""The co-occurrence hallucination testbed: `interp vision cooccur` (docs/vision_heads.md, "Co-occurrence").

The scenes-VLM variant `scenes-vlm-cooccur` was fine-tuned on scenes where chosen shape pairs (cue -> partner)
nearly always appear together and the partner is sometimes hidden yet still named in the caption
(`interp.lines.vision.scenes.CooccurSpec`): it learns to name the partner from the cue, a language prior.
Here it captions held-out pair-breaking scenes (a cue present, its partner absent) and we measure:

- baseline (no intervention), VHR at each alpha, and a random-head control at each alpha: per scene, as many
  random heads per layer as VHR selected in that layer (other heads of the same layers), the same alpha and
  the same positions, for several seeds;
- for each: CHAIR_S / CHAIR_I (by shape and by colour+shape), object recall, the absent-partner rate (how
  often the caption names the partner of a cue whose partner is absent), and QA accuracy (colour and shape
  questions) on ordinary scenes;
- T-VHD of every generated shape word in the baseline captions, and the AUROC of low T-VHD for picking out
  the hallucinated ones, with a 95% bootstrap interval (captions resampled, as words of one caption are not
  independent).

Results go to one JSON file, rewritten after every setting (a run cut short leaves every finished setting).
All captions of every setting are kept.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interp.core.config import Config, positive
from interp.core.errors import InterpError
from interp.core.files import atomic_write
from interp.core.progress import progress_iter
from interp.lines.vision.scenes import (
    CAPTION_PROMPT,
    SHAPES,
    CooccurSpec,
    Scene,
    absent_partner_rate,
    chair,
    make_scenes,
    pair_breaking_scenes,
)
from interp.model.loaded import LoadedModel


@dataclass(frozen=True)
class CooccurConfig(Config):
    model: str = "scenes-vlm-cooccur"
    out: str = "docs/vision_heads/cooccur.json"
    pairs: str = "circle:square,triangle:diamond"
    n_scenes: int = 60
    """Pair-breaking held-out scenes to caption."""
    scene_seed: int = 50_000
    qa_scenes: int = 20
    """Ordinary held-out scenes whose colour and shape questions measure QA accuracy."""
    qa_seed: int = 20_000
    alphas: tuple[str, ...] = ("1.25", "1.5", "2")
    random_seeds: int = 2
    qa_random_seeds: int = 1
    """QA accuracy is measured for the first this-many random-head seeds (QA under VHR costs a selection pass)."""
    vhr_layers: str = "auto"
    positions: str = "generation"
    max_caption_tokens: int = 32
    tvhd_top_k: int = 4
    bootstrap: int = 2000
    baseline_only: bool = False
    """Only the baseline captions and QA (no VHR, no random heads, no T-VHD): e.g. for the unbiased scenes-vlm."""
    batch_size: int = 16
    seed: int = 0

    def check(self) -> None:
        for name in ("n_scenes", "qa_scenes", "random_seeds", "max_caption_tokens", "tvhd_top_k", "batch_size"):
            positive(name, getattr(self, name))
        if self.positions not in ("generation", "all"):
            raise InterpError(f'positions must be "generation" or "all", got {self.positions!r}.')
        for a in self.alphas:
            try:
                if float(a) <= 0:
                    raise ValueError
            except ValueError:
                raise InterpError(f"alphas must be numbers > 0, got {a!r}.") from None
        CooccurSpec(self.pairs)


def random_rows(model: LoadedModel, rows: list[Any], vcfg: Any, rng: np.random.Generator) -> list[Any]:
    """Per row: as many random heads per layer as the VHR row has there (other heads of those layers where
    possible), reinforced with the same alpha and positions."""
    from interp.lines.vision.experiment import random_same_layers

    return [vcfg.reinforce(random_same_layers(list(iv.heads), model.n_heads, rng)) if iv else None for iv in rows]


def run_setting(
    model: LoadedModel,
    scenes: list[Scene],
    prompt: str,
    mode: str,
    vcfg: Any,
    rng: np.random.Generator | None,
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str,
) -> tuple[list[str], list[int]]:
    """Greedy answers for every scene under mode "base", "vhr" or "random"; also the heads reinforced per scene."""
    from interp.engine.run import generate_batch
    from interp.lines.vision.metrics import vhr_interventions

    texts: list[str] = []
    n_heads: list[int] = []
    starts = range(0, len(scenes), batch_size)
    for start in progress_iter(starts, True, desc=desc, total=len(starts)):
        chunk = scenes[start : start + batch_size]
        batch = model.tokenize_images([prompt] * len(chunk), [s.render() for s in chunk])
        rows: Any = None
        if mode != "base":
            rows = vhr_interventions(model, batch, vcfg)
            if mode == "random":
                assert rng is not None
                rows = random_rows(model, rows, vcfg, rng)
        texts += generate_batch(model, batch, rows, max_new_tokens=max_new_tokens)  # type: ignore[arg-type]
        n_heads += [len(iv.heads) if iv is not None else 0 for iv in (rows or [None] * len(chunk))]
    return texts, n_heads


def qa_setting(
    model: LoadedModel, scenes: list[Scene], mode: str, vcfg: Any, rng: np.random.Generator | None, cfg: CooccurConfig
) -> dict[str, Any]:
    """Colour and shape questions of ordinary scenes; correct when the first word is the answer."""
    from interp.lines.vision.scenes import first_word

    out: dict[str, list[bool]] = {"colour": [], "shape": []}
    for kind in ("colour", "shape"):
        items = [(s, q) for s in scenes for q in s.questions() if q.kind == kind]
        for start in range(0, len(items), cfg.batch_size):
            chunk = items[start : start + cfg.batch_size]
            answers, _ = _answers(model, chunk, mode, vcfg, rng, cfg)
            out[kind] += [first_word(a) == q.answer for (_, q), a in zip(chunk, answers, strict=True)]
    both = out["colour"] + out["shape"]
    return {
        "accuracy": float(np.mean(both)),
        "colour": float(np.mean(out["colour"])),
        "shape": float(np.mean(out["shape"])),
        "n": len(both),
    }


def _answers(model, chunk, mode, vcfg, rng, cfg) -> tuple[list[str], None]:
    from interp.engine.run import generate_batch
    from interp.lines.vision.metrics import vhr_interventions

    batch = model.tokenize_images([q.prompt for _, q in chunk], [s.render() for s, _ in chunk])
    rows: Any = None
    if mode != "base":
        rows = vhr_interventions(model, batch, vcfg)
        if mode == "random":
            rows = random_rows(model, rows, vcfg, rng)
    return generate_batch(model, batch, rows, max_new_tokens=3), None  # type: ignore[return-value]


def caption_scores(captions: list[str], scenes: list[Scene], spec: CooccurSpec) -> dict[str, Any]:
    return {
        "shape": chair(captions, scenes).to_dict(),
        "colour+shape": chair(captions, scenes, "colour+shape").to_dict(),
        "absent_partner": absent_partner_rate(captions, scenes, spec),
    }


def auroc(neg_scores: np.ndarray, pos_scores: np.ndarray) -> float:
    """P(a positive scores above a negative) + 0.5 P(tie): the Mann-Whitney AUROC."""
    if not len(neg_scores) or not len(pos_scores):
        return float("nan")
    diff = pos_scores[:, None] - neg_scores[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def object_word_tvhd(model: LoadedModel, scenes: list[Scene], cfg: CooccurConfig) -> dict[str, Any]:
    """T-VHD of every shape word in the baseline captions, labelled hallucinated (shape not in the scene) or
    correct, and the AUROC of -T-VHD for picking out hallucinated words (low T-VHD = leans on language),
    with a 95% bootstrap interval over captions."""
    from interp.lines.vision.metrics import token_vhd

    result = token_vhd(
        model,
        [s.render() for s in scenes],
        [CAPTION_PROMPT] * len(scenes),
        pairing="zip",
        max_new_tokens=cfg.max_caption_tokens,
        top_k=cfg.tvhd_top_k,
        batch_size=cfg.batch_size,
        progress=True,
    )
    words: list[dict[str, Any]] = []
    for i, (scene, toks, values) in enumerate(
        zip(scenes, result.extras["tokens"], result.extras["t_vhd"], strict=True)
    ):
        for tok, value in zip(toks, values, strict=True):
            word = tok.strip().lower()
            word = word[:-1] if word.endswith("s") and word[:-1] in SHAPES else word
            if word in SHAPES:
                words.append(
                    {"caption": i, "word": word, "t_vhd": float(value), "hallucinated": word not in scene.shapes}
                )
    hal = np.array([w["t_vhd"] for w in words if w["hallucinated"]])
    ok = np.array([w["t_vhd"] for w in words if not w["hallucinated"]])
    point = auroc(-ok, -hal)  # positives = hallucinated words, scored by low T-VHD
    rng = np.random.default_rng(cfg.seed)
    by_caption: dict[int, list[dict[str, Any]]] = {}
    for w in words:
        by_caption.setdefault(w["caption"], []).append(w)
    ids = np.array(sorted(by_caption))
    boots = []
    for _ in range(cfg.bootstrap):
        pick = [w for c in rng.choice(ids, size=len(ids), replace=True) for w in by_caption[int(c)]]
        h = np.array([-w["t_vhd"] for w in pick if w["hallucinated"]])
        o = np.array([-w["t_vhd"] for w in pick if not w["hallucinated"]])
        if len(h) and len(o):
            boots.append(auroc(o, h))
    lo, hi = np.percentile(boots, [2.5, 97.5]).tolist() if boots else [float("nan")] * 2
    return {
        "n_words": len(words),
        "n_hallucinated": len(hal),
        "mean_t_vhd_correct": float(ok.mean()) if len(ok) else None,
        "mean_t_vhd_hallucinated": float(hal.mean()) if len(hal) else None,
        "auroc_low_tvhd_flags_hallucination": point,
        "auroc_95ci_bootstrap_captions": [lo, hi],
        "bootstrap_resamples": len(boots),
        "top_k": cfg.tvhd_top_k,
        "words": words,
    }


def run(cfg: CooccurConfig) -> dict[str, Any]:
    import torch

    from interp.core.provenance import make_provenance
    from interp.lines.vision.metrics import VHRConfig
    from interp.model.loading import load_model

    t0 = time.time()
    out = Path(cfg.out)

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    spec = CooccurSpec(cfg.pairs)
    model = load_model(cfg.model)
    log(f"loaded {model}")
    scenes = pair_breaking_scenes(cfg.n_scenes, cfg.scene_seed, spec)
    qa_scenes = make_scenes(cfg.qa_scenes, cfg.qa_seed)
    results: dict[str, Any] = {
        "status": "running",
        "config": cfg.to_dict(),
        "pairs": spec.pair_list,
        "truth": [s.caption() for s in scenes],
        "settings": [],
    }
    if out.is_file():
        # Resume: a file written by the same configuration keeps its finished settings (each takes minutes).
        try:
            earlier = json.loads(out.read_text())
        except (OSError, ValueError):
            earlier = {}
        now, default = (json.loads(json.dumps(c.to_dict())) for c in (cfg, CooccurConfig()))
        then = earlier.get("config", {})
        # Same settings; a field added since the file was written must be at its default.
        same = then.keys() <= now.keys() and all(now[k] == (then[k] if k in then else default[k]) for k in now)
        if same and earlier.get("truth") == results["truth"]:
            results["settings"] = earlier.get("settings", [])
            if "t_vhd" in earlier:
                results["t_vhd"] = earlier["t_vhd"]
            log(f"resuming {out}: {len(results['settings'])} settings on file")

    def save() -> None:
        results["timing"] = {
            "wall_seconds": round(time.time() - t0, 1),
            "torch_threads": torch.get_num_threads(),
            "nproc": os.cpu_count(),
            "load_average": os.getloadavg(),
        }
        results["provenance"] = make_provenance(None, seed=cfg.seed, command="interp vision cooccur")
        text = json.dumps(results, indent=1)
        atomic_write(out, lambda fh: fh.write(text), text=True, shareable=True)

    # Strongest alpha first, and T-VHD right after the baseline: a run cut short keeps what matters most.
    plan: list[tuple[str, float | None, int | None]] = [("base", None, None)]
    for a in [] if cfg.baseline_only else sorted((float(x) for x in cfg.alphas), reverse=True):
        plan += [("vhr", a, None)] + [("random", a, s) for s in range(cfg.random_seeds)]
    for mode, alpha, seed in plan:
        t1 = time.time()
        vcfg = VHRConfig(alpha=alpha or 1.0, layers=cfg.vhr_layers, positions=cfg.positions)  # type: ignore[arg-type]
        name = mode if alpha is None else f"{mode} alpha={alpha:g}" + ("" if seed is None else f" seed={seed}")
        if any(row["setting"] == name for row in results["settings"]) and (mode != "base" or "t_vhd" in results):
            continue
        rng = np.random.default_rng(1000 * (cfg.seed + 1) + (seed or 0)) if mode == "random" else None
        caps, heads = run_setting(
            model,
            scenes,
            CAPTION_PROMPT,
            mode,
            vcfg,
            rng,
            max_new_tokens=cfg.max_caption_tokens,
            batch_size=cfg.batch_size,
            desc=name,
        )
        row = {"setting": name, "mode": mode, "alpha": alpha, "random_seed": seed, **caption_scores(caps, scenes, spec)}
        row["mean_heads_reinforced"] = float(np.mean(heads))
        if mode != "random" or (seed or 0) < cfg.qa_random_seeds:
            row["qa"] = qa_setting(model, qa_scenes, mode, vcfg, rng, cfg)
        row["seconds"] = round(time.time() - t1, 1)
        row["captions"] = caps
        results["settings"].append(row)
        s, qa = row["shape"], row.get("qa", {}).get("accuracy", float("nan"))
        log(
            f"{name}: CHAIR_S {s['chair_s']:.3f} CHAIR_I {s['chair_i']:.3f} recall {s['recall']:.3f} "
            f"absent partner {row['absent_partner']['rate']:.3f} QA {qa:.3f} ({row['seconds']}s)"
        )
        if mode == "base" and not cfg.baseline_only:
            results["t_vhd"] = object_word_tvhd(model, scenes, cfg)
            t = results["t_vhd"]
            log(f"T-VHD AUROC {t['auroc_low_tvhd_flags_hallucination']:.3f} CI {t['auroc_95ci_bootstrap_captions']}")
        results["settings_done"] = f"{len(results['settings'])} of {len(plan)}"
        save()
    results["status"] = "complete"
    save()
    log(f"wrote {out}")
    return results
