"""Vision-aware heads in LLaVA-family models: `vhd`, `t-vhd` and `vhr` (VHR head reinforcement).

(One file of ~520 lines on purpose: the three metrics share the with/without-image pass pairing and VHR's
layer-by-layer selection is the same VHD computation; splitting them would separate a formula from its only use.)

Method (shared/methods/vision-heads.md; He et al., "Cracking the Code of Hallucination in LVLMs with
Vision-aware Head Divergence", arXiv 2412.13949):

- VHD(l, h) = || z_image(l, h) - z_text(l, h) ||_2 at the last input position, where z is the head's output
  before the output projection (`blocks.{l}.attn.hook_z`), z_image is computed with the image and z_text
  on the same input with the image tokens removed. Averaged over (image, prompt) pairs.
- T-VHD(token) = sum over layers of the sum of the top-k VHDs in that layer, at the step that generated the
  token (the same generated prefix with and without the image). Low T-VHD = the token leans on language.
- VHR: at the first decoding step, layer by layer (with the earlier layers' reinforcement in place), zero
  the score of outlier heads (VHD and text-only output norm both above the layer's mean + `outlier_std`
  standard deviations), select the heads above the layer median (or the top k), and multiply the selected
  heads' z by alpha for the whole generation. Only a subset of layers takes part (LLaVA-1.5: layer 1 plus
  the last 14 of 32; "auto" scales that to the model's depth).

Images come from a folder, an image file, arrays (Python API), or the built-in generated scenes
(images="scenes"), so `interp scan vhd --model scenes-vlm` works with no files at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from interp.core.config import Config, TemplateName, positive
from interp.core.errors import InterpError, PromptError
from interp.core.heads import Head
from interp.core.progress import Progress, progress_iter
from interp.core.provenance import make_provenance
from interp.core.registry import register_metric
from interp.core.results import HeadScores
from interp.engine.hookpoints import z_name
from interp.engine.interventions import HeadIntervention
from interp.engine.run import capture_layer, generate_batch, run_last
from interp.model.loaded import ImageBatch, LoadedModel, TokenBatch

Pairing = Literal["cross", "zip"]


# ---------------------------------------------------------------------------------------------------------
# Inputs: images and (image, prompt) pairs
# ---------------------------------------------------------------------------------------------------------
def resolve_images(source: str | Sequence[Any], n_images: int = 8, seed: int = 0) -> list[Any]:
    """Images from "scenes" (n generated scenes with seed), a folder or file path, or a list of images."""
    from interp.model.images import load_images

    if isinstance(source, str) and source == "scenes":
        from interp.lines.vision.scenes import make_scenes

        return [s.render() for s in make_scenes(n_images, seed)]
    return load_images(source, limit=n_images or None)


def make_pairs(images: Sequence[Any], prompts: Sequence[str], pairing: Pairing = "cross") -> list[tuple[Any, str]]:
    """(image, prompt) pairs: every image with every prompt ("cross"), or image i with prompt i ("zip")."""
    if not images:
        raise PromptError("No images given.")
    if not prompts:
        raise PromptError("No prompts given.")
    if pairing == "zip":
        if len(images) != len(prompts):
            raise PromptError(f'pairing="zip" needs as many prompts as images; got {len(prompts)} and {len(images)}.')
        return list(zip(images, prompts, strict=True))
    if pairing != "cross":
        raise InterpError(f'Unknown pairing {pairing!r}; choose "cross" or "zip".')
    return [(img, p) for img in images for p in prompts]


def _last(t: torch.Tensor) -> torch.Tensor:
    return t[:, -1].float()  # [batch, n_heads, d_head] at the last position


def last_z(model: LoadedModel, batch: TokenBatch) -> torch.Tensor:
    """Every head's z at the last position: [batch, n_layers, n_heads, d_head] (one forward pass)."""
    names = [z_name(layer) for layer in range(model.n_layers)]
    _, store = run_last(model, batch, capture=names, reduce=_last)
    return torch.stack([store[n] for n in names], dim=1)


@dataclass
class Divergence:
    """Per pair: VHD [pairs, L, H] and the text-only output norm [pairs, L, H]."""

    vhd: torch.Tensor
    text_norm: torch.Tensor


def head_divergence(
    model: LoadedModel,
    pairs: Sequence[tuple[Any, str]],
    template: str = "auto",
    batch_size: int = 8,
    progress: Progress = False,
) -> Divergence:
    """VHD of every head for every (image, prompt) pair: one image pass per pair, one text pass per prompt."""
    _need_vision(model)
    positive("batch_size", batch_size)
    prompts = list(dict.fromkeys(p for _, p in pairs))
    text_z: dict[str, torch.Tensor] = {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        # Text-only input = the image input with its image tokens removed (any image gives the same text).
        text = model.text_only(model.tokenize_images(chunk, [pairs[0][0]] * len(chunk), template))
        for p, z in zip(chunk, last_z(model, text), strict=True):
            text_z[p] = z
    vhd, norms = [], []
    starts = range(0, len(pairs), batch_size)
    for start in progress_iter(starts, progress, desc="vhd", total=len(starts)):
        chunk = pairs[start : start + batch_size]
        z_img = last_z(model, model.tokenize_images([p for _, p in chunk], [img for img, _ in chunk], template))
        z_txt = torch.stack([text_z[p] for _, p in chunk])  # [chunk, L, H, d_head]
        vhd.append((z_img - z_txt).norm(dim=-1))
        norms.append(z_txt.norm(dim=-1))
    return Divergence(torch.cat(vhd).cpu(), torch.cat(norms).cpu())


def _need_vision(model: LoadedModel) -> None:
    if not model.is_multimodal or model.processor is None:
        from interp.core.errors import MetricNotApplicableError

        raise MetricNotApplicableError(
            f"Vision-aware head analysis needs a vision-language model; {model.name} is text-only. "
            'Load a LLaVA-style model (e.g. "scenes-vlm", "tiny-llava" or a local LLaVA directory).'
        )


# ---------------------------------------------------------------------------------------------------------
# vhd
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VHDConfig(Config):
    images: str = "scenes"
    """A folder of images, one image file, or "scenes" (generated scenes; see n_images and seed)."""
    n_images: int = 8
    """How many generated scenes, or the most images read from a folder (0 = all)."""
    seed: int = 0
    """Seed of the generated scenes."""
    pairing: Pairing = "cross"
    template: TemplateName = "auto"
    batch_size: int = 8

    def check(self) -> None:
        positive("batch_size", self.batch_size)
        if self.n_images < 0 or (self.images == "scenes" and self.n_images == 0):
            raise InterpError(f"n_images must be >= 1 for generated scenes (>= 0 for a folder), got {self.n_images}.")


def vhd(
    model: LoadedModel,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    pairing: Pairing = "cross",
    template: str = "auto",
    batch_size: int = 8,
    progress: Progress = False,
    config: dict[str, Any] | None = None,
) -> HeadScores:
    """VHD per head averaged over (image, prompt) pairs; per_prompt holds each pair's [L, H] values."""
    t0 = time.time()
    pairs = make_pairs(images, prompts, pairing)
    div = head_divergence(model, pairs, template, batch_size, progress)
    return HeadScores(
        scores=div.vhd.mean(0).double().numpy(),
        metric="vhd",
        model=model.name,
        config=config or {"pairing": pairing, "template": template, "batch_size": batch_size},
        provenance=make_provenance(
            [p for _, p in pairs],
            seed=None,
            n_images=len(images),
            n_pairs=len(pairs),
            pairs_prompt_order=[p for _, p in pairs][:50],
            device=str(model.device),
            dtype=str(model.dtype),
            seconds=round(time.time() - t0, 3),
        ),
        per_prompt=div.vhd.double().numpy(),
        extras={"text_norm_mean": div.text_norm.mean(0).tolist()},
    )


@register_metric(
    "vhd",
    VHDConfig,
    "Vision-aware head divergence: ||z(image) - z(text only)|| at the last position, mean over (image, prompt) pairs",
    modality="vision",
)
def vhd_metric(model: LoadedModel, prompts: Sequence[str], config: VHDConfig, progress: Progress = True) -> HeadScores:
    images = resolve_images(config.images, config.n_images, config.seed)
    return vhd(
        model,
        images,
        prompts,
        pairing=config.pairing,
        template=config.template,
        batch_size=config.batch_size,
        progress=progress,
        config=config.to_dict(),
    )


# ---------------------------------------------------------------------------------------------------------
# t-vhd
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TVHDConfig(VHDConfig):
    max_new_tokens: int = 16
    top_k: int = 4
    """Heads per layer whose VHD T-VHD sums."""

    def check(self) -> None:
        super().check()
        positive("max_new_tokens", self.max_new_tokens)
        positive("top_k", self.top_k)


def extend(batch: TokenBatch, new_ids: Sequence[torch.Tensor], pad_id: int) -> TokenBatch:
    """Append new_ids[i] ([n_i] ids) to row i and left-pad again (the last tokens stay aligned at -1)."""
    rows = [
        torch.cat([batch.input_ids[i][batch.attention_mask[i].bool()], new_ids[i].to(batch.input_ids)])
        for i in range(len(batch))
    ]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=batch.input_ids.dtype, device=batch.input_ids.device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    if isinstance(batch, ImageBatch):
        return ImageBatch(
            ids, mask, batch.texts, batch.template, batch.image_inputs, batch.image_rows, batch.image_token_id
        )
    return TokenBatch(ids, mask, batch.texts, batch.template)


def all_z(model: LoadedModel, batch: TokenBatch, last: int) -> torch.Tensor:
    """z of every head at the last `last` positions: [batch, last, n_layers, n_heads, d_head]."""
    names = [z_name(layer) for layer in range(model.n_layers)]
    _, store = run_last(model, batch, capture=names, reduce=lambda t: t[:, -last:].float())
    return torch.stack([store[n] for n in names], dim=2)


def token_vhd(
    model: LoadedModel,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    pairing: Pairing = "cross",
    template: str = "auto",
    max_new_tokens: int = 16,
    top_k: int = 4,
    batch_size: int = 8,
    progress: Progress = False,
    config: dict[str, Any] | None = None,
) -> HeadScores:
    """Generate an answer per pair (greedy, with the image), then VHD of every head at every answer step.

    scores: VHD per head averaged over all generated tokens; per_prompt: each pair's token average;
    extras: the answers, their tokens and each token's T-VHD.
    """
    _need_vision(model)
    t0 = time.time()
    pairs = make_pairs(images, prompts, pairing)
    end_ids = _end_ids(model)
    per_pair, answers, tokens, tvhd = [], [], [], []
    starts = range(0, len(pairs), batch_size)
    for start in progress_iter(starts, progress, desc="t-vhd", total=len(starts)):
        chunk = pairs[start : start + batch_size]
        batch = model.tokenize_images([p for _, p in chunk], [img for img, _ in chunk], template)
        texts, new = generate_batch(model, batch, max_new_tokens=max_new_tokens, return_ids=True)  # type: ignore[misc]
        gen = [_until_end(row, end_ids) for row in new]
        # Step t is the pass whose last position predicted token t: the prompt plus tokens < t.
        steps = max(len(g) for g in gen)
        prefix = [torch.cat([g[:-1], g.new_zeros(steps - len(g))]) if len(g) else g.new_zeros(steps - 1) for g in gen]
        prefix = [p[: steps - 1] for p in prefix]
        img = extend(batch, prefix, model.tokenizer.pad_token_id or 0)
        txt = extend(model.text_only(batch), prefix, model.tokenizer.pad_token_id or 0)
        div = (all_z(model, img, steps) - all_z(model, txt, steps)).norm(dim=-1)  # [chunk, steps, L, H]
        for i, g in enumerate(gen):
            d = div[i, : len(g)] if len(g) else div[i, :1]  # an empty answer: score the first step
            per_pair.append(d.mean(0))
            answers.append(texts[i])
            tokens.append([model.tokenizer.decode([int(t)]) for t in g])
            tvhd.append(d.topk(min(top_k, model.n_heads), dim=-1).values.sum((-1, -2)).tolist())
    per = torch.stack(per_pair).cpu()  # [pairs, L, H]
    return HeadScores(
        scores=per.mean(0).double().numpy(),
        metric="t-vhd",
        model=model.name,
        config=config or {"pairing": pairing, "template": template, "max_new_tokens": max_new_tokens, "top_k": top_k},
        provenance=make_provenance(
            [p for _, p in pairs], seed=None, n_pairs=len(pairs), seconds=round(time.time() - t0, 3)
        ),
        per_prompt=per.double().numpy(),
        extras={"answers": answers, "tokens": tokens, "t_vhd": tvhd, "top_k": top_k},
    )


def _end_ids(model: LoadedModel) -> set[int]:
    ids = {model.tokenizer.eos_token_id, model.tokenizer.pad_token_id}
    gen_eos = getattr(getattr(model.hf_model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
    return {int(i) for i in ids if i is not None}


def _until_end(row: torch.Tensor, end_ids: set[int]) -> torch.Tensor:
    """Generated ids up to (not including) the first end token."""
    for j, t in enumerate(row.tolist()):
        if t in end_ids:
            return row[:j]
    return row


@register_metric(
    "t-vhd",
    TVHDConfig,
    "Token-level VHD: VHD per head at every generated answer token (mean), with each token's T-VHD in extras",
    modality="vision",
)
def tvhd_metric(
    model: LoadedModel, prompts: Sequence[str], config: TVHDConfig, progress: Progress = True
) -> HeadScores:
    images = resolve_images(config.images, config.n_images, config.seed)
    return token_vhd(
        model,
        images,
        prompts,
        pairing=config.pairing,
        template=config.template,
        max_new_tokens=config.max_new_tokens,
        top_k=config.top_k,
        batch_size=config.batch_size,
        progress=progress,
        config=config.to_dict(),
    )


# ---------------------------------------------------------------------------------------------------------
# VHR: vision-aware head reinforcement
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VHRConfig(VHDConfig):
    alpha: float = 2.0
    """Factor on the selected heads' outputs for the whole generation."""
    layers: str = "auto"
    """Layers that take part: "auto" (layer 1 + the last 14/32 of the layers, as the paper's LLaVA-1.5
    setting), "all", or a list such as "1,17-29"."""
    selection: Literal["median", "top_k"] = "median"
    """Per layer: the heads above the median score, or the top_k heads."""
    top_k: int = 3
    outlier_std: float | None = 1.0
    """Zero the score of heads whose VHD and text-only norm both exceed mean + outlier_std * std of their
    layer (None: no outlier rule)."""
    positions: Literal["generation", "all"] = "generation"
    """Where the selected heads are reinforced. "generation" (default; the paper, which defines VHD and the
    reinforced head output per generation step): only at the positions that predict a token, i.e. the last
    prompt position of the prefill and every generated token. "all": also every other prompt and image
    position during the prefill (this project's earlier behaviour), which also changes the cached keys and
    values that later steps read."""

    def check(self) -> None:
        super().check()
        positive("top_k", self.top_k)
        if self.alpha <= 0:
            raise InterpError(f"alpha must be > 0, got {self.alpha}.")
        parse_layers(self.layers, None)  # syntax check; the range is checked against the model
        if self.positions not in ("generation", "all"):
            raise InterpError(f'positions must be "generation" or "all", got {self.positions!r}.')

    def reinforce(self, heads: Sequence[Head]) -> HeadIntervention | None:
        """The intervention that reinforces `heads` (None when there are none) with this alpha and positions."""
        if not heads:
            return None
        return HeadIntervention(tuple(heads), "scale", self.alpha, positions=_POSITIONS[self.positions])


_POSITIONS: dict[str, Literal["all", "last"]] = {"generation": "last", "all": "all"}


def parse_layers(spec: str, n_layers: int | None) -> list[int]:
    """ "auto" | "all" | "1,17-29" -> sorted layer indices (checked against n_layers when given)."""
    spec = spec.strip().lower()
    if spec in ("auto", "all"):
        if n_layers is None:
            return []
        if spec == "all":
            return list(range(n_layers))
        last = max(1, round(n_layers * 14 / 32))
        return sorted({min(1, n_layers - 1), *range(n_layers - last, n_layers)})
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise InterpError(f'Bad layers {spec!r}: use "auto", "all" or a list like "1,17-29".') from None
    if not out:
        raise InterpError(f'Bad layers {spec!r}: use "auto", "all" or a list like "1,17-29".')
    if n_layers is not None and (min(out) < 0 or max(out) >= n_layers):
        raise InterpError(f"Layers {spec!r} are out of range: the model has layers 0-{n_layers - 1}.")
    return sorted(out)


def select_layer(
    vhd_l: torch.Tensor, text_norm_l: torch.Tensor, selection: str, top_k: int, outlier_std: float | None
) -> list[int]:
    """Heads chosen in one layer from their VHD [H] and text-only norm [H] (the paper's rule)."""
    score = vhd_l.clone()
    if outlier_std is not None:
        hi_vhd = vhd_l > vhd_l.mean() + outlier_std * vhd_l.std(unbiased=False)
        hi_norm = text_norm_l > text_norm_l.mean() + outlier_std * text_norm_l.std(unbiased=False)
        score[hi_vhd & hi_norm] = 0.0
    if selection == "top_k":
        k = min(top_k, len(score))
        return sorted(int(i) for i in score.topk(k).indices if score[i] > 0)
    return [int(i) for i in (score > score.median()).nonzero().flatten()]


def vhr_interventions(
    model: LoadedModel, batch: ImageBatch, config: VHRConfig, progress: Progress = False
) -> list[HeadIntervention | None]:
    """One VHR intervention per row of an image batch, selected layer by layer at the first decoding step.

    Layer l's VHD is measured with the reinforcement chosen for the layers below already in place (in both
    the image and the text-only pass). Each layer's pass resumes from the residual where the previous one
    stopped and stops right after layer l, so the whole selection costs about two forward passes.
    """
    _need_vision(model)
    layers = parse_layers(config.layers, model.n_layers)
    inputs = {"image": batch, "text": model.text_only(batch)}
    resid: dict[str, torch.Tensor | None] = {"image": None, "text": None}
    start = 0
    chosen: list[list[Head]] = [[] for _ in range(len(batch))]
    for layer in progress_iter(layers, progress, desc="vhr select", total=len(layers)):
        rows = [config.reinforce(c) for c in chosen]
        z: dict[str, torch.Tensor] = {}
        for kind, b in inputs.items():
            # Resume from the residual entering the previous selected layer: the layers below it are
            # unchanged by this round's new selection, which only acts from that layer on.
            z[kind], resid[kind] = capture_layer(
                model, b, layer, rows, reduce=_last, start_layer=start, resid=resid[kind]
            )
        start = layer
        vhd_l, norm_l = (z["image"] - z["text"]).norm(dim=-1), z["text"].norm(dim=-1)  # [B, H]
        for i in range(len(batch)):
            heads = select_layer(vhd_l[i], norm_l[i], config.selection, config.top_k, config.outlier_std)
            chosen[i].extend(Head(layer, h) for h in heads)
    return [config.reinforce(c) for c in chosen]


def vhr_generate(
    model: LoadedModel,
    images: Sequence[Any],
    prompts: Sequence[str],
    config: VHRConfig | None = None,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    progress: Progress = False,
) -> tuple[list[str], list[HeadIntervention | None]]:
    """Generate with VHR for image i and prompt i (zip): (answers, the intervention used for each)."""
    config = config or VHRConfig()
    if len(images) != len(prompts):
        raise PromptError(f"{len(images)} images for {len(prompts)} prompts: give one image per prompt.")
    texts: list[str] = []
    used: list[HeadIntervention | None] = []
    starts = range(0, len(prompts), batch_size)
    for start in progress_iter(starts, progress, desc="vhr generate", total=len(starts)):
        batch = model.tokenize_images(
            prompts[start : start + batch_size], images[start : start + batch_size], config.template
        )
        rows = vhr_interventions(model, batch, config)
        out = generate_batch(model, batch, rows, max_new_tokens=max_new_tokens)
        texts.extend(out)  # type: ignore[arg-type]
        used.extend(rows)
    return texts, used


def generate_images(
    model: LoadedModel,
    images: Sequence[Any],
    prompts: Sequence[str],
    rows: HeadIntervention | None = None,
    *,
    template: str = "auto",
    max_new_tokens: int = 32,
    batch_size: int = 8,
    progress: Progress = False,
) -> list[str]:
    """Greedy answers for (image i, prompt i), optionally under one intervention for every row."""
    if len(images) != len(prompts):
        raise PromptError(f"{len(images)} images for {len(prompts)} prompts: give one image per prompt.")
    out: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for start in progress_iter(starts, progress, desc="generate", total=len(starts)):
        batch = model.tokenize_images(prompts[start : start + batch_size], images[start : start + batch_size], template)
        out.extend(generate_batch(model, batch, rows, max_new_tokens=max_new_tokens))  # type: ignore[arg-type]
    return out


@register_metric(
    "vhr",
    VHRConfig,
    "VHR head selection: share of (image, prompt) pairs in which each head is reinforced (layer-by-layer rule)",
    modality="vision",
)
def vhr_metric(model: LoadedModel, prompts: Sequence[str], config: VHRConfig, progress: Progress = True) -> HeadScores:
    t0 = time.time()
    images = resolve_images(config.images, config.n_images, config.seed)
    pairs = make_pairs(images, prompts, config.pairing)
    layers = parse_layers(config.layers, model.n_layers)
    counts = np.zeros((len(pairs), model.n_layers, model.n_heads))
    starts = range(0, len(pairs), config.batch_size)
    for start in progress_iter(starts, progress, desc="vhr", total=len(starts)):
        chunk = pairs[start : start + config.batch_size]
        batch = model.tokenize_images([p for _, p in chunk], [img for img, _ in chunk], config.template)
        for i, iv in enumerate(vhr_interventions(model, batch, config)):
            for head in iv.heads if iv is not None else ():
                counts[start + i, head.layer, head.head] = 1.0
    scores = counts.mean(0)
    unscored = [layer for layer in range(model.n_layers) if layer not in layers]
    scores[unscored] = np.nan  # layers outside the VHR set are never candidates
    return HeadScores(
        scores=scores,
        metric="vhr",
        model=model.name,
        config=config.to_dict(),
        provenance=make_provenance(
            [p for _, p in pairs], seed=config.seed, n_pairs=len(pairs), seconds=round(time.time() - t0, 3)
        ),
        per_prompt=counts,
        extras={"layers": layers},
    )
