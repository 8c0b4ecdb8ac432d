"""The entropy regularizer of "Entropy-Guided Attention for Private LLMs" (arXiv 2501.03489), as a loss module.

Each head (layer l, head h) has a learnable target fraction theta_lh = sigmoid(w_lh) in (0, 1); its target
entropy is theta_lh * E_max with E_max = log T (T = the key length of the patterns). A head is penalized only
where its entropy leaves the tolerance band gamma * E_max around the target:

    hinge:  penalty = max(0, |H - theta E_max| - gamma E_max)^2          (shared/methods/entropy.md)
    hard:   penalty = (H - theta E_max)^2 if |H - theta E_max| > gamma E_max else 0   (the paper's Algorithm 1)

`per` says what H is: "row" = each query row's entropy (the authors' released code), "sequence" = the mean over
a sequence's query rows (the paper's Algorithm 1), "head" = the mean over the whole batch. `reduction` says how
the penalties of one head combine: "sum" over batch and rows (the released code; with lambda = 1e-5 the term
is then comparable to the cross-entropy for T ~ 100-1000) or "mean". Heads and layers are always averaged.

    reg = EntropyRegularizer(n_layers, n_heads)            # gamma=0.2, lam=1e-5 (the paper's defaults)
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

Margin = Literal["hinge", "hard"]
Per = Literal["row", "sequence", "head"]
Reduction = Literal["sum", "mean"]


def _choice(name: str, value: str, allowed: type) -> None:
    if value not in get_args(allowed):
        raise InterpError(f"{name}={value!r} is not allowed; choose one of: {', '.join(get_args(allowed))}.")


def entropy(pattern: torch.Tensor) -> torch.Tensor:
    """-sum_k p log p over the last axis, with a finite gradient where p == 0.

    xlogy(p, p) has the right value but a NaN gradient at p = 0 (p / p), and masked causal entries are exactly
    0; clamping inside the log keeps the value (0 * log tiny = 0) and gives those entries a zero gradient."""
    tiny = torch.finfo(pattern.dtype).tiny
    return -(pattern * pattern.clamp_min(tiny).log()).sum(-1)


class EntropyRegularizer(nn.Module):
    """lam * mean over layers and heads of the entropy penalty; learnable per-head thresholds theta."""

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        gamma: float = 0.2,
        lam: float = 1e-5,
        theta_init: float = 0.5,
        margin: Margin = "hinge",
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
        _choice("margin", margin, Margin)
        _choice("per", per, Per)
        _choice("reduction", reduction, Reduction)
        self.n_layers, self.n_heads = n_layers, n_heads
        self.gamma, self.lam, self.margin, self.per, self.reduction = gamma, lam, margin, per, reduction
        # theta = sigmoid(logit): the target stays a fraction of the maximum whatever the optimizer does.
        self.theta_logit = nn.Parameter(torch.full((n_layers, n_heads), math.log(theta_init / (1 - theta_init))))

    @property
    def theta(self) -> torch.Tensor:  # [n_layers, n_heads]
        return torch.sigmoid(self.theta_logit)

    def extra_repr(self) -> str:
        return (
            f"n_layers={self.n_layers}, n_heads={self.n_heads}, gamma={self.gamma}, lam={self.lam}, "
            f"margin={self.margin}, per={self.per}, reduction={self.reduction}"
        )

    def penalty(
        self, patterns: Sequence[torch.Tensor] | torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The unweighted penalty (a scalar tensor): mean over layers and heads.

        patterns: one [batch, n_heads, q, k] attention-probability tensor per layer (or one stacked tensor
        [n_layers, batch, n_heads, q, k]). query_mask: optional [batch, q] bool, the rows that count (e.g. to
        leave padding out); rows are all counted by default, as in the paper.
        """
        if len(patterns) != self.n_layers:
            raise InterpError(f"Expected {self.n_layers} layers of attention patterns, got {len(patterns)}.")
        per_layer = [self._layer_penalty(p, self.theta[i], query_mask) for i, p in enumerate(patterns)]
        return torch.stack(per_layer).mean()

    def forward(
        self, patterns: Sequence[torch.Tensor] | torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """lam * penalty: the term to add to the language-modelling loss."""
        return self.lam * self.penalty(patterns, query_mask)

    def _layer_penalty(
        self, pattern: torch.Tensor, theta: torch.Tensor, query_mask: torch.Tensor | None
    ) -> torch.Tensor:
        # pattern: [batch, n_heads, q, k]; theta: [n_heads]
        if pattern.ndim != 4 or pattern.shape[1] != self.n_heads:
            raise InterpError(f"Expected attention patterns [batch, {self.n_heads}, q, k], got {tuple(pattern.shape)}.")
        e_max = math.log(pattern.shape[-1])
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
        if self.margin == "hinge":
            pen = torch.clamp(dev.abs() - tol, min=0.0) ** 2
        else:
            pen = torch.where(dev.abs() > tol, dev**2, torch.zeros_like(dev))
        pen = (pen * weight[:, None]).sum((0, 2))  # [heads]
        if self.reduction == "mean":
            pen = pen / weight.sum().clamp_min(1)
        return pen.mean()
