"""`entropy`: how spread out each head's attention is (shared/methods/entropy.md).

For a causal attention row (query position i sees keys 0..i): H_i = -sum_j A_ij log A_ij, in nats. Its maximum
is log(number of keys the query can see), so H_i / log(n_visible) is in [0, 1]: 0 = the query attends to one
key (entropy collapse), 1 = uniform attention over everything it sees (entropic overload).

Prompts are left-padded. A row is counted only when its query is a real token that sees at least two real keys
(a single visible key has entropy 0 and no meaningful maximum); padding keys are left out of the row. The
head's score is the mean over its rows within a prompt, then the mean over prompts, for raw and normalized
entropy alike. One forward pass per batch: the patterns [batch, n_heads, q, k] are reduced to per-prompt
means inside the hook, so memory stays at [batch, n_heads] per layer instead of the full patterns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch

from interp.core.config import Config, TemplateName, positive
from interp.core.errors import InterpError, PromptError
from interp.core.progress import Progress, progress_iter
from interp.core.prompts import check_prompts
from interp.core.provenance import make_provenance
from interp.core.registry import register_metric
from interp.core.results import HeadScores
from interp.engine.hookpoints import pattern_name
from interp.engine.interventions import Rows
from interp.engine.run import capture
from interp.model.loaded import LoadedModel, TokenBatch

EntropyValue = Literal["normalized", "raw"]


@dataclass(frozen=True)
class EntropyConfig(Config):
    value: EntropyValue = "normalized"
    """Which entropy goes into `scores`; both are always kept in `extras` ("raw" in nats)."""
    template: TemplateName = "auto"
    batch_size: int = 16

    def check(self) -> None:
        positive("batch_size", self.batch_size)


# ---------------------------------------------------------------------------------------------------------
# Per-row entropy from attention patterns
# ---------------------------------------------------------------------------------------------------------
@dataclass
class RowEntropy:
    raw: torch.Tensor  # [batch, n_heads, q] entropy in nats (0 where not valid)
    normalized: torch.Tensor  # [batch, n_heads, q] raw / log(n_visible) (0 where not valid)
    valid: torch.Tensor  # [batch, q] bool: a real query that sees >= 2 real keys


def row_entropy(pattern: torch.Tensor, key_mask: torch.Tensor | None = None) -> RowEntropy:
    """Entropy of every causal attention row, over real keys only.

    pattern: [batch, n_heads, q, k] attention probabilities of a full (non-cached) causal pass, q == k.
    key_mask: [batch, k], 1 = real token (None: all real). Computed in float64, so the result matches a
    brute-force loop to ~1e-12. The row is restricted to visible real keys and renormalized: a no-op when
    the model gives padding zero weight (HF attention masks do), a safeguard when it gives it ~1e-30.
    """
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise InterpError(
            f"Expected attention patterns [batch, n_heads, q, k] with q == k, got {tuple(pattern.shape)}."
        )
    batch, _, n_pos, _ = pattern.shape
    dev = pattern.device
    if key_mask is None:
        key_mask = torch.ones(batch, n_pos, dtype=torch.bool, device=dev)
    key_mask = key_mask.to(dev).bool()  # [batch, k]
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=dev).tril()  # [q, k]
    visible = causal[None] & key_mask[:, None, :]  # [batch, q, k]
    n_visible = visible.sum(-1)  # [batch, q]
    valid = key_mask & (n_visible >= 2)  # [batch, q]
    p = pattern.double() * visible[:, None]  # [batch, n_heads, q, k]
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-300)
    raw = -torch.special.xlogy(p, p).sum(-1)  # [batch, n_heads, q]
    raw = raw * valid[:, None]
    log_max = torch.log(n_visible.clamp_min(2).double())  # [batch, q]
    normalized = raw / log_max[:, None]
    return RowEntropy(raw, normalized, valid)


def prompt_means(pattern: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-prompt, per-head mean entropy over valid rows: [2 (raw, normalized), batch, n_heads], float64.

    NaN for a prompt with no valid row (a single real token)."""
    rows = row_entropy(pattern, key_mask)
    count = rows.valid.sum(-1).double()  # [batch]
    means = torch.stack([rows.raw.sum(-1), rows.normalized.sum(-1)]) / count[None, :, None]  # [2, batch, n_heads]
    return torch.where(count[None, :, None] > 0, means, torch.full_like(means, float("nan")))


# ---------------------------------------------------------------------------------------------------------
# The analyzer
# ---------------------------------------------------------------------------------------------------------
def batch_entropy(model: LoadedModel, batch: TokenBatch, rows: Rows = None) -> np.ndarray:
    """One forward pass; per-prompt mean entropy [2 (raw, normalized), batch, n_layers, n_heads], float64.

    rows: optional interventions (interp.engine.run) active during the pass, e.g. "uniform" on some heads."""
    names = [pattern_name(layer) for layer in range(model.n_layers)]
    reduce = partial(prompt_means, key_mask=batch.attention_mask)
    acts = capture(model, batch, names, rows=rows, reduce=reduce)  # name -> [2, batch, n_heads]
    return torch.stack([acts[n] for n in names], dim=2).cpu().numpy()


def entropy_per_prompt(
    model: LoadedModel,
    prompts: Sequence[str],
    template: str = "auto",
    batch_size: int = 16,
    rows: Rows = None,
    progress: Progress = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-prompt mean entropy (raw [P, L, H], normalized [P, L, H]) and the number of rows counted."""
    prompts = check_prompts(prompts)
    starts = range(0, len(prompts), batch_size)
    chunks, n_rows = [], 0
    for start in progress_iter(starts, progress, desc="entropy", total=len(starts)):
        # Each chunk is padded only to its own longest prompt.
        batch = model.tokenize(prompts[start : start + batch_size], template)
        chunks.append(batch_entropy(model, batch, rows))
        n_rows += int(_valid_rows(batch.attention_mask))
    both = np.concatenate(chunks, axis=1)  # [2, P, L, H]
    return both[0], both[1], n_rows


def _valid_rows(mask: torch.Tensor) -> int:
    """Real query positions that see >= 2 real keys, summed over the batch (left padding)."""
    return int((mask.sum(-1) - 1).clamp_min(0).sum())


def _mean_over_prompts(per_prompt: np.ndarray) -> np.ndarray:
    usable = ~np.isnan(per_prompt[:, 0, 0])
    if not usable.any():
        raise PromptError("Every prompt is a single token after formatting: entropy needs at least two tokens.")
    return per_prompt[usable].mean(0)


@register_metric(
    "entropy",
    EntropyConfig,
    "Attention entropy per head, mean over query rows and prompts (normalized by log #visible keys, or raw nats)",
)
def attention_entropy(
    model: LoadedModel, prompts: Sequence[str], config: EntropyConfig, progress: Progress = True
) -> HeadScores:
    t0 = time.perf_counter()
    raw_pp, norm_pp, n_rows = entropy_per_prompt(model, prompts, config.template, config.batch_size, None, progress)
    seconds = time.perf_counter() - t0
    raw, norm = _mean_over_prompts(raw_pp), _mean_over_prompts(norm_pp)
    chosen = norm_pp if config.value == "normalized" else raw_pp
    return HeadScores(
        scores=norm if config.value == "normalized" else raw,
        metric="entropy",
        model=model.name,
        config=config.to_dict(),
        provenance=make_provenance(
            prompts,
            seed=None,
            template=model.tokenize(prompts[:1], config.template).template,
            device=str(model.device),
            dtype=str(model.dtype),
            seconds=round(seconds, 3),
        ),
        per_prompt=chosen,
        extras={"value": config.value, "raw": raw.tolist(), "normalized": norm.tolist(), "rows": n_rows},
    )


def entropy_grids(result: HeadScores) -> tuple[np.ndarray, np.ndarray]:
    """(raw [L, H], normalized [L, H]) from an `entropy` result (both are stored whatever `value` was)."""
    if result.metric != "entropy" or "raw" not in result.extras or "normalized" not in result.extras:
        raise InterpError(
            f'Expected a result of metric "entropy" (from `interp scan entropy`), got metric "{result.metric}".'
        )
    raw = np.array(result.extras["raw"], dtype=np.float64)
    norm = np.array(result.extras["normalized"], dtype=np.float64)
    if raw.shape != result.scores.shape or norm.shape != result.scores.shape:
        raise InterpError(f"Entropy result is inconsistent: extras grids are not {result.scores.shape}.")
    return raw, norm
