"""Safety heads (Zhou et al., ICLR 2025, arXiv 2410.13708): Ships, dataset-level Ships and the Sahara group search.

- `ships`: Ships(q, h) = KL( p(. | q) || p_ablated_h(. | q) ) at the last prompt position, natural log;
  per prompt x head, and the mean over prompts as the head's score.
- `ships-dataset`: stack the last-token final hidden states (after the final norm) of all prompts into
  M [n_prompts, d_model] and M_h with head h ablated. The score is an angle in degrees between their top
  singular subspaces, in one of two spaces (option `space`):
  * "prompt" (default; as the authors' released code, lib/Sahara/svd.py): the top-r LEFT singular vectors
    U[:, :r] of M, vectors in prompt space: each prompt's loading on the dominant directions of the set.
    For r = 1 the angle is arccos(|u1 . u1'|) (the absolute value removes the SVD's sign ambiguity). It
    measures how the pattern of prompts along the dominant direction changes when the head is ablated.
  * "model" (ours, kept as an option; what our method note first said): the top-r RIGHT singular vectors,
    a subspace of model space: how the dominant hidden-state directions themselves turn.
  For r > 1 all r principal angles are computed (extras["angles"] with all_angles=True); the score is the
  first, the smallest (theta_1 <= ... <= theta_r), which for r = 1 is the released code's angle.
- `sahara`: greedy group search. G = {}; at each step add the head h maximizing the dataset-level angle of
  G + {h} ablated together. Every head is tried at every step by default (the paper's search). A step after
  the first is one sweep with G ablated in every row (`sweep(..., fixed=G)`): the residuals are cached from
  one pass with G ablated, so each candidate's pass starts at the candidate's own layer, and a step costs
  about what the all-head sweep of step 1 costs.

Ablation ("ablation" option, eps default 1e-5 as the released code's Sahara search; 1e-8 was our earlier default):
- "query" (default, the paper's "undifferentiated attention"): the head's queries are multiplied by eps,
  so its attention is uniform over the causal prefix (intervention kind "uniform").
- "values": the paper multiplies the head's value vectors by eps. Under grouped-query attention a value
  head is shared by several query heads, so scaling it would ablate all of them. We scale the one query
  head's output z_h = A_h V by eps instead (kind "scale", alpha = eps), which is exactly what eps * V does
  to that head alone (A_h (eps V) = eps z_h) and leaves its K/V siblings untouched. With eps -> 0 this is
  zero-ablation of the head.

All three run through interp.engine.sweep.sweep with readout="hidden" (batched rows, exact layer-prefix reuse,
and the chat template's shared token prefix run once per head: see the sweep's `shared_prefix`). One
sweep gives both Ships and dataset Ships: the per-query KL uses logits = unembed(hidden), the model's own
output projection applied to the same final hidden state (`safety_sweep`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from interp.core.config import Config, TemplateName, positive
from interp.core.errors import InterpError
from interp.core.heads import Head, HeadLike, parse_head
from interp.core.progress import Progress
from interp.core.provenance import make_provenance
from interp.core.registry import register_metric
from interp.core.results import HeadScores
from interp.engine.run import unembed
from interp.engine.sweep import kl_per_prompt, sweep
from interp.model.loaded import LoadedModel, TokenBatch

Ablation = Literal["query", "values"]
Space = Literal["prompt", "model"]
MAX_SAHARA_STEPS = 5
RELEASED_EPS = 1e-5  # the released code's query factor in the Sahara search and the quick-start notebook


def ablation_kind(ablation: str, eps: float) -> tuple[str, float | None]:
    """The interp.engine.run intervention (kind, alpha) for a Ships ablation route (see the module docstring)."""
    if ablation == "query":
        return "uniform", None
    if ablation == "values":
        return "scale", eps
    raise InterpError(f'Unknown ablation {ablation!r}; choose "query" (query x eps) or "values" (values x eps).')


# ---------------------------------------------------------------------------------------------------------
# Subspaces and principal angles
# ---------------------------------------------------------------------------------------------------------
def top_right_singular(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Orthonormal basis [d, rank] of the top-`rank` right singular subspace of matrix [n, d] (float64)."""
    n, d = matrix.shape
    if not 1 <= rank <= min(n, d):
        raise InterpError(f"rank must be between 1 and min(n_prompts, d_model) = {min(n, d)}, got {rank}.")
    _, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)  # vh: [min(n, d), d]
    return vh[:rank].T


def principal_angles(basis_a: torch.Tensor, basis_b: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees, ascending (theta_1 <= ... <= theta_r), between the spans of two
    orthonormal bases [d, r]. Small angles come from sines (Knyazev & Argentati 2002): arccos loses
    precision near cos = 1."""
    cross = basis_a.T @ basis_b  # [r, r]
    cos = torch.linalg.svdvals(cross).clamp(0.0, 1.0)  # descending -> angles ascending
    sin = torch.linalg.svdvals(basis_b - basis_a @ cross).clamp(0.0, 1.0).flip(0)  # ascending
    angles = torch.where(cos**2 >= 0.5, torch.arcsin(sin), torch.arccos(cos))
    return torch.rad2deg(angles)


def top_left_singular(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Orthonormal basis [n, rank] of the top-`rank` left singular subspace of matrix [n, d] (float64): directions
    in prompt space. Needs at least rank + 1 rows: with n = rank the subspace is all of R^n and every angle is 0."""
    n, d = matrix.shape
    if not 1 <= rank < n or rank > d:
        raise InterpError(
            f"Prompt-space dataset Ships compares {rank}-dim subspaces of R^n_prompts: it needs more prompts than "
            f"rank (n_prompts={n}, rank={rank}, d_model={d}). Give more prompts or a lower rank."
        )
    u, _, _ = torch.linalg.svd(matrix.double(), full_matrices=False)  # u: [n, min(n, d)]
    return u[:, :rank]


def top_singular(matrix: torch.Tensor, rank: int, space: str) -> torch.Tensor:
    """The top-`rank` singular basis of matrix [n_prompts, d_model] in `space` ("prompt": left, "model": right)."""
    if space == "prompt":
        return top_left_singular(matrix, rank)
    if space == "model":
        return top_right_singular(matrix, rank)
    raise InterpError(f'Unknown space {space!r}; choose "prompt" (left singular vectors) or "model" (right).')


def subspace_angles(base: torch.Tensor, ablated: torch.Tensor, rank: int = 1, space: str = "prompt") -> torch.Tensor:
    """Ships_D: principal angles (degrees, ascending) between the top-`rank` singular subspaces of
    base [n_prompts, d_model] and ablated [n_prompts, d_model] in `space` (see the module docstring)."""
    return principal_angles(top_singular(base, rank, space), top_singular(ablated, rank, space))


# ---------------------------------------------------------------------------------------------------------
# One sweep, both readouts
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SafetySweep:
    """Final hidden states at the last prompt position, base and with each group of heads ablated."""

    groups: list[tuple[Head, ...]]
    base: torch.Tensor  # [n_prompts, d_model]
    hidden: torch.Tensor  # [n_groups, n_prompts, d_model]
    seconds: float

    def kl(self, model: LoadedModel) -> np.ndarray:
        """Ships per prompt: [n_groups, n_prompts] KL(base || ablated) of the next-token distributions."""
        base_lp = torch.log_softmax(unembed(model, self.base), -1)  # [n_prompts, d_vocab]
        out = [kl_per_prompt(base_lp, torch.log_softmax(unembed(model, h), -1)) for h in self.hidden]
        return torch.stack(out).double().cpu().numpy()

    def angles(self, rank: int, space: str = "prompt") -> np.ndarray:
        """Ships_D: [n_groups, rank] principal angles in degrees (ascending per group)."""
        base_basis = top_singular(self.base, rank, space)
        out = [principal_angles(base_basis, top_singular(h, rank, space)) for h in self.hidden]
        return torch.stack(out).cpu().numpy()


def safety_sweep(
    model: LoadedModel,
    batch: TokenBatch,
    *,
    heads: Sequence[HeadLike] | None = None,
    groups: Sequence[Sequence[HeadLike]] | None = None,
    fixed: Sequence[HeadLike] | None = None,
    ablation: str = "query",
    eps: float = RELEASED_EPS,
    batch_size: int = 32,
    shared_prefix: bool | None = None,
    progress: Progress = True,
) -> SafetySweep:
    """Ablate each head (or group) on every prompt, batched, keeping the final hidden states.

    fixed: heads ablated in every row besides the row's own (Sahara's group so far; see sweep's `fixed`):
    hidden[i] is then the state with fixed + groups[i] ablated together."""
    kind, alpha = ablation_kind(ablation, eps)
    kept: list[torch.Tensor] = []

    def keep(base: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
        # Dataset-level score functions are called once per group, in group order.
        kept.append(ablated.float().cpu())
        return torch.zeros(())

    result = sweep(
        model,
        batch,
        keep,
        readout="hidden",
        dataset_level=True,
        heads=heads,
        groups=groups,
        fixed=fixed,
        kind=kind,
        alpha=alpha,
        eps=eps,
        batch_size=batch_size,
        shared_prefix=shared_prefix,
        progress=progress,
    )
    return SafetySweep(result.groups, result.base.float().cpu(), torch.stack(kept), result.seconds)


def _grid(model: LoadedModel, groups: Sequence[tuple[Head, ...]], values: np.ndarray) -> np.ndarray:
    """Scatter per-head values [n_groups, ...] into [n_layers, n_heads, ...] (NaN where not scored)."""
    out = np.full((model.n_layers, model.n_heads, *values.shape[1:]), np.nan)
    for (head,), value in zip(groups, values, strict=True):
        out[head.layer, head.head] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShipsConfig(Config):
    ablation: Ablation = "query"
    """"query": queries x eps (uniform attention, default); "values": the head's output x eps."""
    eps: float = RELEASED_EPS
    """The query (or output) factor; 1e-5 as the released code (1e-8 was our earlier default)."""
    template: TemplateName = "auto"
    """auto (chat template if the tokenizer has one) | chat | paper ("## Query:...\\n## Answer:", the released
    code's) | query (the same with a space after the colon) | raw."""
    batch_size: int = 32

    def check(self) -> None:
        positive("batch_size", self.batch_size)
        if not 0 < self.eps < 1:
            raise InterpError(f"eps must be in (0, 1), got {self.eps}.")


@dataclass(frozen=True)
class ShipsDatasetConfig(ShipsConfig):
    space: Space = "prompt"
    """prompt: left singular vectors (prompt space, the released code); model: right singular vectors (ours)."""
    rank: int = 1
    """r: dimension of the top singular subspaces compared (the released code uses 1)."""
    all_angles: bool = False
    """Also store all r principal angles per head in extras["angles"] (the score is the first)."""

    def check(self) -> None:
        super().check()
        positive("rank", self.rank)


@dataclass(frozen=True)
class SaharaConfig(ShipsDatasetConfig):
    steps: int = 3
    """Heads in the group (the paper: 3 by default, at most 5)."""
    candidates: int | None = None
    """K: steps after the first only try the top-K heads of step 1 (None: every head, every step)."""

    def check(self) -> None:
        super().check()
        if not 1 <= self.steps <= MAX_SAHARA_STEPS:
            raise InterpError(f"steps must be between 1 and {MAX_SAHARA_STEPS}, got {self.steps}.")
        if self.candidates is not None and self.candidates < self.steps:
            raise InterpError(
                f"candidates={self.candidates} is too few for steps={self.steps}: need at least one per step."
            )


def _provenance(prompts: Sequence[str], batch: TokenBatch, model: LoadedModel, seconds: float, **extra: Any) -> dict:
    kind, alpha = ablation_kind(extra.pop("ablation"), extra["eps"])
    return make_provenance(
        prompts,
        seed=None,
        template=batch.template,
        intervention_kind=kind,
        intervention_alpha=alpha,
        device=str(model.device),
        dtype=str(model.dtype),
        seconds=round(seconds, 3),
        **extra,
    )


# ---------------------------------------------------------------------------------------------------------
# Analyzers
# ---------------------------------------------------------------------------------------------------------
def ships_from_sweep(
    model: LoadedModel, prompts: Sequence[str], batch: TokenBatch, swept: SafetySweep, config: ShipsConfig
) -> HeadScores:
    per_prompt = swept.kl(model)  # [n_heads_swept, n_prompts]
    return HeadScores(
        scores=_grid(model, swept.groups, per_prompt.mean(1)),
        metric="ships",
        model=model.name,
        config=config.to_dict(),
        provenance=_provenance(prompts, batch, model, swept.seconds, ablation=config.ablation, eps=config.eps),
        per_prompt=np.moveaxis(_grid(model, swept.groups, per_prompt), -1, 0),
    )


def ships_dataset_from_sweep(
    model: LoadedModel, prompts: Sequence[str], batch: TokenBatch, swept: SafetySweep, config: ShipsDatasetConfig
) -> HeadScores:
    angles = swept.angles(config.rank, config.space)  # [n_heads_swept, rank]
    extras: dict[str, Any] = {}
    if config.all_angles:
        extras["angles"] = np.where(np.isnan(g := _grid(model, swept.groups, angles)), None, g).tolist()
    return HeadScores(
        scores=_grid(model, swept.groups, angles[:, 0]),
        metric="ships-dataset",
        model=model.name,
        config=config.to_dict(),
        provenance=_provenance(
            prompts, batch, model, swept.seconds, ablation=config.ablation, eps=config.eps, space=config.space
        ),
        extras=extras,
    )


@register_metric(
    "ships",
    ShipsConfig,
    "Ships: KL(base || head ablated) of the last-token distribution per prompt, mean over prompts "
    "(ablation: query x eps = uniform attention, or values x eps)",
)
def ships(model: LoadedModel, prompts: Sequence[str], config: ShipsConfig, progress: Progress = True) -> HeadScores:
    batch = model.tokenize(prompts, config.template)
    swept = safety_sweep(
        model, batch, ablation=config.ablation, eps=config.eps, batch_size=config.batch_size, progress=progress
    )
    return ships_from_sweep(model, prompts, batch, swept, config)


@register_metric(
    "ships-dataset",
    ShipsDatasetConfig,
    "Dataset-level Ships: angle (degrees) between the top-r singular subspaces of the stacked last-token hidden "
    "states, base vs head ablated (space=prompt: left singular vectors, as released; model: right)",
)
def ships_dataset(
    model: LoadedModel, prompts: Sequence[str], config: ShipsDatasetConfig, progress: Progress = True
) -> HeadScores:
    batch = model.tokenize(prompts, config.template)
    swept = safety_sweep(
        model, batch, ablation=config.ablation, eps=config.eps, batch_size=config.batch_size, progress=progress
    )
    return ships_dataset_from_sweep(model, prompts, batch, swept, config)


@dataclass
class SaharaStep:
    step: int
    head: Head
    score: float  # the angle (degrees) with the group so far ablated together
    n_tried: int
    seconds: float
    scores: dict[str, float] = field(default_factory=dict)  # label -> score of every tried head

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "head": self.head.label,
            "score": self.score,
            "n_tried": self.n_tried,
            "seconds": round(self.seconds, 3),
            "scores": self.scores,
        }


def _best(values: np.ndarray) -> int:
    """Index of the highest score; NaN never wins, and ties go to the first (layer-major) group."""
    clean = np.where(np.isnan(values), -math.inf, values)
    return int(np.argmax(clean))


@register_metric(
    "sahara",
    SaharaConfig,
    "Sahara: greedy search for a group of safety heads by dataset-level Ships (scores: step 1; "
    "the group and each step in extras)",
)
def sahara(
    model: LoadedModel,
    prompts: Sequence[str],
    config: SaharaConfig,
    progress: Progress = True,
    first_step: HeadScores | None = None,
) -> HeadScores:
    """Greedy group search. first_step: a ships-dataset result on the same prompts and config to reuse as
    step 1 (the full run computes Ships and Ships_D from one sweep and passes it here)."""
    batch = model.tokenize(prompts, config.template)
    opts = dict(ablation=config.ablation, eps=config.eps, batch_size=config.batch_size, progress=progress)
    if first_step is None:
        first_step = ships_dataset_from_sweep(model, prompts, batch, safety_sweep(model, batch, **opts), config)
    elif first_step.metric != "ships-dataset" or first_step.scores.shape != (model.n_layers, model.n_heads):
        raise InterpError("first_step must be a ships-dataset result for this model.")
    else:
        keys = ("ablation", "eps", "rank", "space", "template")
        differ = [k for k in keys if first_step.config.get(k) != getattr(config, k)]
        if differ:
            raise InterpError(f"first_step was computed with other settings ({', '.join(differ)}) than this search.")
    step1 = first_step.scores
    flat = [Head(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    first = flat[_best(step1.ravel())]
    seconds1 = float(first_step.provenance.get("seconds", 0.0))
    scored = {h.label: float(step1[h]) for h in flat if not np.isnan(step1[h])}
    steps = [SaharaStep(1, first, float(step1[first]), len(scored), seconds1, scored)]
    ranked = first_step.top_heads(len(scored))
    pool = ranked[: config.candidates] if config.candidates is not None else ranked
    group = [first]
    for step in range(2, config.steps + 1):
        tried = [h for h in pool if h not in group]
        # The group so far is ablated in every row and in the pass whose residuals are cached, so each
        # candidate's pass starts at the candidate's own layer (not at the group's lowest one).
        swept = safety_sweep(model, batch, heads=tried, fixed=group, **opts)
        angles = swept.angles(config.rank, config.space)[:, 0]
        pick = _best(angles)
        group.append(tried[pick])
        scores = {h.label: float(a) for h, a in zip(tried, angles, strict=True)}
        steps.append(SaharaStep(step, tried[pick], float(angles[pick]), len(tried), swept.seconds, scores))
    total = sum(s.seconds for s in steps)
    return HeadScores(
        scores=step1,
        metric="sahara",
        model=model.name,
        config=config.to_dict(),
        provenance=_provenance(
            prompts, batch, model, total, ablation=config.ablation, eps=config.eps, space=config.space
        ),
        extras={
            "group": [h.label for h in group],
            "steps": [s.to_dict() for s in steps],
            "step_seconds": [round(s.seconds, 3) for s in steps],
        },
    )


def sahara_group(result: HeadScores) -> list[Head]:
    """The group a sahara result found, in the order it was picked."""
    if result.metric != "sahara" or "group" not in result.extras:
        raise InterpError(f"Expected a sahara result, got metric {result.metric!r}.")
    return [parse_head(label) for label in result.extras["group"]]
