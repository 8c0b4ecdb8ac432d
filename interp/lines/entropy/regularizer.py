"""The entropy regularizer of "Entropy-Guided Attention for Private LLMs" (arXiv 2501.03489), as a loss module.

The defaults follow the authors' released code (github Nandan91/entropy-guided-attention-llm,
`entropy_regularization.py`, commit 8592b75; shared/methods/entropy.md gives the paper's Algorithm 1 as the same
penalty). For each head (layer l, head h) a learnable threshold theta_lh gives the target entropy theta_lh * E_max,
E_max = log T (T = the key length, or `context_size`). With dev = H - theta_lh * E_max and the tolerance gamma * E_max:

    hard  (default, released):  penalty = dev^2 if |dev| > gamma E_max else 0   (the whole squared deviation)
    hinge (ours, an option):    penalty = max(0, |dev| - gamma E_max)^2           (only the part beyond the band)

Defaults and options, each marked "released" (the released code does this) or "ours" (kept as an option):

    margin="hard"              released. "hinge": ours (an earlier method note gave it; not the paper's form).
    thresholds="raw"           released: theta is the raw learnable weight, unconstrained. "sigmoid": ours,
                               theta = sigmoid(w) stays in (0, 1).
    theta_init=0.5             ours: the released code does not say how its weights are initialized.
    share_thresholds=False     ours: one theta per (layer, head). True = released usage example, which reads the
                               first block's per-head vector and uses it for every layer.
    context_size=None          released: T = the key length of the first layer's patterns; an int fixes T.
    per="row"                  released: H is each query row's entropy. "sequence" (mean over a sequence's rows)
                               and "head" (mean over the batch): ours.
    reduction="sum"            released: a head's penalties are summed over batch and rows (so lambda = 1e-5 is
                               not negligible for T ~ 100-1000). "mean": ours.
    gamma=0.2, lam=1e-5        released. Heads are averaged, then layers (released).
    query_mask=None            released counts every row (no mask); a [batch, q] mask is ours.

The entropy itself uses a clamped log (ours) where the released code uses log(p + 1e-9) with nansum; in float32
or float64 the two differ by < 1e-8 per row, but ours has a finite gradient at p = 0 and lets NaN rows show.

    reg = EntropyRegularizer(n_layers, n_heads)            # the released code's defaults
    optimizer = AdamW([*model.parameters(), *reg.parameters()])
    loss = cross_entropy + reg(patterns)                   # patterns: L tensors [batch, n_heads, q, k]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from interp.core.errors import InterpError

Margin = Literal["hard", "hinge"]
ThresholdForm = Literal["raw", "sigmoid"]
Per = Literal["row", "sequence", "head"]
Reduction = Literal["sum", "mean"]


def check_choice(name: str, value: str, allowed: type) -> None:
    """A clear error when `value` is not one of the Literal `allowed`'s values."""
    if value not in get_args(allowed):
        raise InterpError(f"{name}={value!r} is not allowed; choose one of: {', '.join(get_args(allowed))}.")


def entropy(pattern: torch.Tensor) -> torch.Tensor:
    """-sum_k p log p over the last axis, with a finite gradient where p == 0.

    xlogy(p, p) has the right value but a NaN gradient at p = 0 (p / p), and masked causal entries are exactly
    0; clamping inside the log keeps the value (0 * log tiny = 0) and gives those entries a zero gradient."""
    tiny = torch.finfo(pattern.dtype).tiny
    return -(pattern * pattern.clamp_min(tiny).log()).sum(-1)


class EntropyRegularizer(nn.Module):
    """lam * mean over layers of the mean over heads of the entropy penalty; learnable thresholds theta."""

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        gamma: float = 0.2,
        lam: float = 1e-5,
        theta_init: float = 0.5,
        margin: Margin = "hard",
        thresholds: ThresholdForm = "raw",
        share_thresholds: bool = False,
        context_size: int | None = None,
        per: Per = "row",
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__()
        if n_layers < 1 or n_heads < 1:
            raise InterpError(f"n_layers and n_heads must be >= 1, got {n_layers} and {n_heads}.")
        if not 0 <= gamma < 1:
            raise InterpError(f"gamma (the tolerance as a fraction of log T) must be in [0, 1), got {gamma}.")
        if not (lam >= 0 and math.isfinite(lam)):
            raise InterpError(f"lam (the loss weight) must be a finite number >= 0, got {lam}.")
        if not 0 < theta_init < 1:
            raise InterpError(f"theta_init must be in (0, 1), got {theta_init}.")
        if context_size is not None and context_size < 1:
            raise InterpError(f"context_size must be None (the key length) or >= 1, got {context_size}.")
        check_choice("margin", margin, Margin)
        check_choice("thresholds", thresholds, ThresholdForm)
        check_choice("per", per, Per)
        check_choice("reduction", reduction, Reduction)
        self.n_layers, self.n_heads = n_layers, n_heads
        self.gamma, self.lam, self.margin, self.per, self.reduction = gamma, lam, margin, per, reduction
        self.thresholds, self.share_thresholds, self.context_size = thresholds, share_thresholds, context_size
        # weight: theta itself ("raw", as released) or its logit ("sigmoid": theta stays a fraction of the max).
        init = theta_init if thresholds == "raw" else math.log(theta_init / (1 - theta_init))
        self.weight = nn.Parameter(torch.full((1 if share_thresholds else n_layers, n_heads), init))

    @property
    def theta(self) -> torch.Tensor:  # [n_layers, n_heads]: the target entropy as a fraction of log T
        theta = self.weight if self.thresholds == "raw" else torch.sigmoid(self.weight)
        return theta.expand(self.n_layers, self.n_heads)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings().items())

    def settings(self) -> dict[str, object]:
        """Every option, for records (results.json) and repr."""
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "gamma": self.gamma,
            "lam": self.lam,
            "margin": self.margin,
            "thresholds": self.thresholds,
            "share_thresholds": self.share_thresholds,
            "context_size": self.context_size,
            "per": self.per,
            "reduction": self.reduction,
        }

    def penalty(
        self, patterns: Sequence[torch.Tensor] | torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The unweighted penalty (a scalar tensor): mean over layers of the mean over heads.

        patterns: one [batch, n_heads, q, k] attention-probability tensor per layer (or one stacked tensor
        [n_layers, batch, n_heads, q, k]). query_mask: optional [batch, q] bool, the rows that count (e.g. to
        leave padding out); rows are all counted by default, as in the released code.
        """
        if len(patterns) != self.n_layers:
            raise InterpError(f"Expected {self.n_layers} layers of attention patterns, got {len(patterns)}.")
        # As released: one E_max for every layer, from context_size or the first layer's key length.
        e_max = math.log(self.context_size or patterns[0].shape[-1])
        theta = self.theta
        per_layer = [self._layer_penalty(p, theta[i], e_max, query_mask) for i, p in enumerate(patterns)]
        return torch.stack(per_layer).mean()

    def forward(
        self, patterns: Sequence[torch.Tensor] | torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """lam * penalty: the term to add to the language-modelling loss."""
        return self.lam * self.penalty(patterns, query_mask)

    def _layer_penalty(
        self, pattern: torch.Tensor, theta: torch.Tensor, e_max: float, query_mask: torch.Tensor | None
    ) -> torch.Tensor:
        # pattern: [batch, n_heads, q, k]; theta: [n_heads]
        if pattern.ndim != 4 or pattern.shape[1] != self.n_heads:
            raise InterpError(f"Expected attention patterns [batch, {self.n_heads}, q, k], got {tuple(pattern.shape)}.")
        ent = entropy(pattern)  # [batch, n_heads, q]
        weight = torch.ones_like(ent[:, 0]) if query_mask is None else query_mask.to(ent.dtype)  # [batch, q]
        if self.per == "sequence":
            rows = weight.sum(-1)  # [batch]; a sequence with no counted row drops out
            ent = (ent * weight[:, None]).sum(-1, keepdim=True) / rows.clamp_min(1)[:, None, None]  # [batch, heads, 1]
            weight = (rows > 0).to(ent.dtype)[:, None]
        elif self.per == "head":
            ent = (ent * weight[:, None]).sum((0, 2), keepdim=True) / weight.sum().clamp_min(1)  # [1, heads, 1]
            weight = torch.ones_like(ent[:, 0])
        dev = ent - theta[None, :, None] * e_max  # [units, heads, rows]
        tol = self.gamma * e_max
        if self.margin == "hard":
            pen = torch.where(dev.abs() > tol, dev**2, torch.zeros_like(dev))
        else:
            pen = torch.clamp(dev.abs() - tol, min=0.0) ** 2
        pen = (pen * weight[:, None]).sum((0, 2))  # [heads]
        if self.reduction == "mean":
            pen = pen / weight.sum().clamp_min(1)
        return pen.mean()
