"""Target functions for the random-feature attention experiments, and the input distribution.

Inputs: a query x_0 and N keys x_1..x_N, each drawn independently and uniformly from the unit sphere in R^d.
Most targets are permutation-invariant in the keys, f*(x_0, X) = (1/N) sum_i F(x_0, x_i), the class the
paper shows RFA learns with fewer samples than a random-feature MLP:

- "inner-p{p}"   F = s_i^p with s_i = sqrt(d) <x_0, x_i> (~N(0, 1) for large d): a function of the inner
                 product of growing degree p, the class where non-zero-mean query-key sampling should help;
- "inner-cos"    F = cos(2 s_i): an inner-product target that is not a low-degree polynomial;
- "bilinear-p2"  F = (sqrt(d) x_0^T A x_i)^2 with a fixed random orthogonal A: permutation-invariant but NOT a
                 function of <x_0, x_i> (a control where the identity mean has nothing to offer);
- "first-key"    f* = sqrt(d) <x_0, x_1>: NOT permutation-invariant; RFA cannot represent it (a sanity check).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from interp.core.errors import unknown_name

TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x0 [n, d], keys [n, N, d]) -> [n]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    fn: TargetFn
    permutation_invariant: bool
    inner_product: bool  # a function of <x_0, x_i> only

    def __call__(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self.fn(x0.double(), keys.double())


def sample_tokens(n: int, n_keys: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples of (x0 [n, d], keys [n, N, d]), every token uniform on the unit sphere; seeded."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, n_keys + 1, dim, generator=gen, dtype=torch.float64)
    tokens = tokens / tokens.norm(dim=-1, keepdim=True)
    return tokens[:, 0], tokens[:, 1:]


def _inner(x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """s_i = sqrt(d) <x_0, x_i>: [n, N]."""
    return torch.einsum("nd,nkd->nk", x0, keys) * x0.shape[1] ** 0.5


def _inner_power(p: int) -> TargetFn:
    return lambda x0, keys: (_inner(x0, keys) ** p).mean(1)


def _rotation(dim: int, seed: int = 1234) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # a Haar-random orthogonal matrix, fixed by the seed


def _bilinear_p2(x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    a = _rotation(x0.shape[1])
    return ((torch.einsum("nd,de,nke->nk", x0, a, keys) * x0.shape[1] ** 0.5) ** 2).mean(1)


def _inner_cos(x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return torch.cos(2 * _inner(x0, keys)).mean(1)


def _first_key(x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return _inner(x0, keys)[:, 0]


_FIXED: dict[str, Target] = {
    t.name: t
    for t in (
        Target("inner-cos", "(1/N) sum_i cos(2 sqrt(d) <x0, xi>)", _inner_cos, True, True),
        Target("bilinear-p2", "(1/N) sum_i (sqrt(d) x0^T A xi)^2, A random orthogonal", _bilinear_p2, True, False),
        Target("first-key", "sqrt(d) <x0, x1> (depends on which key is first)", _first_key, False, False),
    )
}
_INNER = re.compile(r"inner-p(\d+)$")


def get_target(name: str) -> Target:
    """A target by name: "inner-p1", "inner-p2", ... (any degree >= 1), or one of the fixed ones."""
    match = _INNER.match(name)
    if match and int(match.group(1)) >= 1:
        p = int(match.group(1))
        return Target(name, f"(1/N) sum_i (sqrt(d) <x0, xi>)^{p}", _inner_power(p), True, True)
    if name in _FIXED:
        return _FIXED[name]
    raise unknown_name("target", name, [f"inner-p{p}" for p in (1, 2, 3, 4)] + list(_FIXED))


def list_targets() -> list[Target]:
    return [get_target(f"inner-p{p}") for p in (1, 2, 3, 4)] + list(_FIXED.values())


def relative_mse(pred: np.ndarray, y: np.ndarray) -> float:
    """Test MSE divided by the variance of y: 1.0 is what predicting the mean scores."""
    return float(np.mean((pred - y) ** 2) / np.var(y))
