"""The paper's headline experiment: ablate each harmful query's OWN top Ships head while it is answered.

For each held-out prompt q, every head h is scored by Ships(q, h) = KL(p(.|q) || p_ablated_h(.|q)) on q alone,
and q is answered with its top-1 head ablated; controls: no ablation, and a head drawn at random (seeded, per
prompt) from the same layer as q's top head. (Released code: lib/SHIPS/get_ships.py ranks the heads per query
and `ships_generate` ablates the first `mask_num` = 1 of them.)

Exhaustive per-prompt scoring costs a full sweep per prompt (n_heads rows). `per_query_heads` screens instead:
attribution (interp.engine.attribution; by default the first-order change of the top-1 token's log-probability,
one forward and one backward pass for all heads; optionally the second-order Fisher estimate of the KL itself)
ranks every head per prompt, and the exact sweep verifies only a shortlist of the `shortlist` best estimates per
prompt; the verified argmax (by exact Ships KL) is the prompt's head. `exhaustive=True`
computes the exact argmax over every head instead, so the two can be compared (`agreement_rate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from interp.core.config import Config, TemplateName, positive
from interp.core.errors import InterpError
from interp.core.heads import Head, parse_head
from interp.core.progress import Progress, progress_iter
from interp.core.results import HeadScores
from interp.engine.attribution import attribute
from interp.engine.sweep import kl_per_prompt, sweep
from interp.lines.safety.metrics import RELEASED_EPS, Ablation, ablation_kind
from interp.model.loaded import LoadedModel


@dataclass(frozen=True)
class PerQueryConfig(Config):
    shortlist: int = 8
    """Heads per prompt verified exactly after attribution screening."""
    screen: Literal["logprob", "kl", "prior"] = "logprob"
    """What ranks the heads before verification: attribution, "logprob" (first order: |change of log p(top-1
    token)|, one backward pass) or "kl" (the second-order Fisher estimate of Ships itself); or "prior": the
    `shortlist` heads with the highest mean Ships of a scan on other prompts (`prior=`), no backward pass at all.
    (Backward passes in bfloat16 are very slow on this CPU: over 5 minutes for one 4-prompt chunk of the 0.5B
    testbed under load, so the recorded bfloat16 runs use "prior".)"""
    ablation: Ablation = "query"
    eps: float = RELEASED_EPS
    template: TemplateName = "auto"
    fisher_rank: int = 8
    """Backward passes of the attribution estimate (see interp.engine.attribution)."""
    batch_size: int = 32
    """Rows per exact forward pass."""
    seed: int = 0
    """Seed of the per-prompt random control heads."""

    def check(self) -> None:
        positive("shortlist", self.shortlist)
        positive("fisher_rank", self.fisher_rank)
        positive("batch_size", self.batch_size)
        if not 0 < self.eps < 1:
            raise InterpError(f"eps must be in (0, 1), got {self.eps}.")


def random_same_layer(model: LoadedModel, head: Head, seed: int, prompt_id: int) -> Head:
    """A head from `head`'s layer other than `head`, drawn with a generator seeded by (seed, prompt_id)."""
    rng = np.random.default_rng([seed, prompt_id])
    others = [h for h in range(model.n_heads) if h != head.head]
    return Head(head.layer, int(others[int(rng.integers(len(others)))]))


def _exact_kl(
    model: LoadedModel, prompt: str, heads: Sequence[Head], config: PerQueryConfig
) -> np.ndarray:  # [len(heads)]
    kind, alpha = ablation_kind(config.ablation, config.eps)
    result = sweep(
        model,
        [prompt],
        kl_per_prompt,
        heads=list(heads),
        kind=kind,
        alpha=alpha,
        eps=config.eps,
        template=config.template,
        batch_size=config.batch_size,
        progress=False,
    )
    return np.asarray(result.scores, dtype=float)


def per_query_heads(
    model: LoadedModel,
    prompts: Sequence[str],
    config: PerQueryConfig | None = None,
    *,
    exhaustive: bool = False,
    prior: HeadScores | None = None,
    progress: Progress = True,
) -> pd.DataFrame:
    """One row per prompt: its top-1 head (`head`), that head's exact Ships KL, the random same-layer control,
    and how the head was found (the shortlist and its exact KLs, or every head's exact KL when exhaustive)."""
    config = config or PerQueryConfig()
    kind, alpha = ablation_kind(config.ablation, config.eps)
    heads = list(model.heads())
    start = time.perf_counter()
    estimates = None
    if not exhaustive and config.screen == "prior":
        if prior is None or prior.scores.shape != (model.n_layers, model.n_heads):
            raise InterpError('screen="prior" needs prior=: a ships result of this model (the scan\'s ships.json).')
        estimates = np.broadcast_to(np.nan_to_num(prior.scores, nan=-np.inf), (len(prompts), *prior.scores.shape))
    elif not exhaustive:
        # [n_prompts, n_layers, n_heads]; uniform attribution is the eps -> 0 limit of the query route
        estimates = attribute(
            model,
            list(prompts),
            metric=config.screen,
            kind=kind,
            alpha=alpha,
            template=config.template,
            batch_size=4,
            fisher_rank=config.fisher_rank,
            progress=progress,
        ).per_prompt
    else:  # one exact sweep over every head and prompt: per_prompt [n_heads, n_prompts]
        every = sweep(
            model,
            list(prompts),
            kl_per_prompt,
            kind=kind,
            alpha=alpha,
            eps=config.eps,
            template=config.template,
            batch_size=config.batch_size,
            progress=progress,
        ).per_prompt
        assert every is not None
    screened = time.perf_counter() - start
    rows = []
    for i in progress_iter(range(len(prompts)), progress, desc="per-query heads", total=len(prompts)):
        if estimates is None:
            tried, kl = heads, np.asarray(every[:, i], dtype=float)
        else:
            # |estimate|: the logprob screen is signed (a head can raise or lower the top token), KL is >= 0
            order = np.argsort(-np.abs(estimates[i].ravel()), kind="stable")[: config.shortlist]
            tried = [heads[j] for j in order]
            kl = _exact_kl(model, prompts[i], tried, config)
        best = int(np.argmax(kl))
        top = tried[best]
        rows.append(
            {
                "prompt_id": i,
                "prompt": prompts[i],
                "head": top.label,
                "kl": float(kl[best]),
                "random_head": random_same_layer(model, top, config.seed, i).label,
                "tried": "all" if estimates is None else ",".join(h.label for h in tried),
                "tried_kl": "" if estimates is None else ",".join(f"{v:.6g}" for v in kl),
                "estimate_rank": 0 if estimates is None else best,
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["seconds"] = time.perf_counter() - start
    frame.attrs["screen_seconds"] = screened
    return frame


def agreement_rate(screened: pd.DataFrame, exhaustive: pd.DataFrame) -> float:
    """The share of prompts whose screened-and-verified top head equals the exhaustive exact top head."""
    merged = screened.merge(exhaustive, on="prompt_id", suffixes=("_screened", "_exhaustive"))
    if merged.empty:
        raise InterpError("No prompts in common between the screened and the exhaustive results.")
    return float((merged["head_screened"] == merged["head_exhaustive"]).mean())


def agreement_with_recorded(
    model: LoadedModel, ships: HeadScores, prompts: Sequence[str], config: PerQueryConfig, progress: Progress = True
) -> dict:
    """Screen-and-verify on the prompts of a recorded exhaustive `ships` result (its per_prompt [P, L, H] holds
    every head's exact KL on each prompt), and compare each prompt's verified top head with the exhaustive argmax.
    Use the recorded result's eps and template in `config`, so both sides score the same ablation."""
    if ships.per_prompt is None or ships.per_prompt.shape[0] != len(prompts):
        raise InterpError("The ships result needs per-prompt scores for exactly these prompts.")
    heads = list(model.heads())
    exhaustive = [heads[int(np.nanargmax(p.ravel()))].label for p in ships.per_prompt]
    screened = per_query_heads(model, prompts, config, progress=progress)
    same = [a == b for a, b in zip(screened["head"], exhaustive, strict=True)]
    shortlists = [str(t).split(",") for t in screened["tried"]]
    # How close a miss is: the recorded (exhaustive) KL of the screened head over the best head's, per prompt.
    tops = [parse_head(h) for h in screened["head"]]
    share = [float(p[h.layer, h.head] / np.nanmax(p)) for p, h in zip(ships.per_prompt, tops, strict=True)]
    return {
        "prompts": len(prompts),
        "screened_equals_exhaustive": float(np.mean(same)),
        "exhaustive_top_in_shortlist": float(np.mean([e in s for e, s in zip(exhaustive, shortlists, strict=True)])),
        "screened_kl_over_best_kl": share,
        "screened": list(screened["head"]),
        "exhaustive": exhaustive,
        "shortlist": config.shortlist,
        "eps": config.eps,
        "template": config.template,
        "seconds": round(screened.attrs["seconds"], 1),
    }
