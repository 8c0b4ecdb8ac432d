"""One-layer multi-head attention for in-context linear regression, with merged per-head matrices.

Each head h has a full (d+1)x(d+1) key-query matrix KQ_h and a full (d+1)x(d+1) output-value matrix OV_h
(the paper's parametrization; the reference code factors them as W_K^T W_Q / sqrt(d+1) and W_V^T W_O^T):

    s_{h,i} = z_i^T KQ_h z_q                        score of context token i for the query (key on the left)
    a_{h,.} = softmax_i(s_{h,.})                    ("linear": a_{h,i} = s_{h,i}, softmax replaced by identity)
    out     = sum_h OV_h sum_i a_{h,i} z_i          [d+1]
    y_hat   = out[-1]                               the prediction is the last coordinate

Only the last row of OV_h reaches y_hat, and the last column of KQ_h only ever multiplies the query's y slot,
which is 0: those entries get no gradient and keep their initial values. The pattern metrics therefore
read the functional parts (the x-x block of KQ_h, the output row of OV_h), as the paper's code does.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from interp.core.errors import InterpError

AttentionKind = Literal["softmax", "linear"]
ATTENTION_KINDS: tuple[str, ...] = ("softmax", "linear")


class ICLAttention(nn.Module):
    """kq, ov: [n_heads, d+1, d+1] parameters. forward(z [B, L, d+1], zq [B, d+1]) -> y_hat [B]."""

    def __init__(
        self,
        d: int = 5,
        n_heads: int = 4,
        attention: AttentionKind = "softmax",
        init_std: float = 0.05,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if d < 1 or n_heads < 1:
            raise InterpError(f"d and n_heads must be >= 1, got d={d}, n_heads={n_heads}.")
        if attention not in ATTENTION_KINDS:
            raise InterpError(f"Unknown attention {attention!r}; choose one of: {', '.join(ATTENTION_KINDS)}.")
        self.d, self.n_heads, self.attention, self.init_std = d, n_heads, attention, float(init_std)
        D = d + 1
        # Small random init (the reference code's default init gives KQ entries of std ~0.06).
        self.kq = nn.Parameter(torch.randn(n_heads, D, D, generator=generator) * init_std)
        self.ov = nn.Parameter(torch.randn(n_heads, D, D, generator=generator) * init_std)

    # ---- forward ----------------------------------------------------------------------------------------
    def attention_weights(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """a: [B, H, L] (softmax over the L context tokens, or the raw scores for linear attention)."""
        return self._weights(z, zq).transpose(1, 2)

    def _weights(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """a laid out as [B, L, H]. Written with batched matmuls: they run ~2x faster than einsum on CPU."""
        self._check_inputs(z, zq)
        H, D = self.n_heads, self.d + 1
        # (KQ_h z_q)_i = sum_j KQ[h, i, j] zq[j], for all heads in one matmul: [B, H, D]
        kq_q = (zq @ self.kq.permute(2, 0, 1).reshape(D, H * D)).view(-1, H, D)
        scores = torch.bmm(z, kq_q.transpose(1, 2))  # z_i^T KQ_h z_q: [B, L, H]
        return scores.softmax(dim=1) if self.attention == "softmax" else scores

    def _contexts(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """sum_i a_{h,i} z_i: [B, H, d+1]."""
        return torch.bmm(self._weights(z, zq).transpose(1, 2), z)

    def head_predictions(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """Each head's contribution to y_hat: [B, H] (they sum to the prediction)."""
        ctx = self._contexts(z, zq)  # sum_i a_{h,i} z_i: [B, H, d+1]
        return (ctx * self.ov[:, -1, :]).sum(dim=-1)

    def forward(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """y_hat: [B]."""
        return self.head_predictions(z, zq).sum(dim=-1)

    def full_output(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """The whole (d+1)-vector written at the query position: [B, d+1] (y_hat is its last entry)."""
        return torch.einsum("hed,bhd->be", self.ov, self._contexts(z, zq))

    def _check_inputs(self, z: torch.Tensor, zq: torch.Tensor) -> None:
        D = self.d + 1
        if z.ndim != 3 or z.shape[-1] != D or zq.shape != (z.shape[0], D):
            raise InterpError(
                f"Expected z [batch, L, {D}] and zq [batch, {D}] for d={self.d}, "
                f"got z {tuple(z.shape)} and zq {tuple(zq.shape)}."
            )

    # ---- matrices ----------------------------------------------------------------------------------------
    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached float64 copies (KQ [H, d+1, d+1], OV [H, d+1, d+1])."""
        return self.kq.detach().double().clone(), self.ov.detach().double().clone()

    def arch(self) -> dict[str, Any]:
        """What it takes to rebuild this module (stored next to every checkpoint)."""
        return {"d": self.d, "n_heads": self.n_heads, "attention": self.attention, "init_std": self.init_std}

    def extra_repr(self) -> str:
        return f"d={self.d}, n_heads={self.n_heads}, attention={self.attention!r}"
