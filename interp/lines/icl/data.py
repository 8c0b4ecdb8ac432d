"""In-context linear regression prompts.

A prompt is L examples (x_i, y_i) of one random linear task plus a query x_q:
x_i ~ N(0, Sigma), beta ~ N(0, I_d / d), y_i = beta . x_i + eps_i, eps_i ~ N(0, noise_var).
Tokens are z_i = (x_i, y_i) in R^(d+1) and the query token is (x_q, 0); the model must predict y_q
(which carries its own noise, so noise_var is the floor of every predictor's test MSE).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch

from interp.core.config import Config, positive
from interp.core.errors import InterpError

CovarianceKind = Literal["identity", "toeplitz"]


@dataclass(frozen=True)
class DataConfig(Config):
    """The task distribution. covariance "toeplitz" is Sigma_ij = rho^|i-j| (the reference code's anisotropic case)."""

    d: int = 5
    L: int = 40
    noise_var: float = 0.1
    covariance: CovarianceKind = "identity"
    rho: float = 0.5

    def check(self) -> None:
        positive("d", self.d)
        positive("L", self.L)
        if self.noise_var < 0:
            raise InterpError(f"Option noise_var must be >= 0, got {self.noise_var}.")
        if not -1 < self.rho < 1:
            raise InterpError(f"Option rho must lie in (-1, 1) for a valid Toeplitz covariance, got {self.rho}.")

    def with_length(self, L: int) -> DataConfig:
        return dataclasses.replace(self, L=L)

    def covariance_matrix(self) -> torch.Tensor:
        """Sigma: [d, d] float64."""
        if self.covariance == "identity":
            return torch.eye(self.d, dtype=torch.float64)
        idx = torch.arange(self.d, dtype=torch.float64)
        return self.rho ** (idx[:, None] - idx[None, :]).abs()


@dataclass(frozen=True)
class Prompts:
    """A batch of n prompts. Shapes: x [n, L, d], y [n, L], xq [n, d], yq [n], beta [n, d]."""

    x: torch.Tensor
    y: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    beta: torch.Tensor

    @property
    def z(self) -> torch.Tensor:
        """Context tokens (x_i, y_i): [n, L, d+1]."""
        return torch.cat([self.x, self.y.unsqueeze(-1)], dim=-1)

    @property
    def zq(self) -> torch.Tensor:
        """Query tokens (x_q, 0): [n, d+1]."""
        return torch.cat([self.xq, torch.zeros_like(self.xq[:, :1])], dim=-1)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def L(self) -> int:
        return int(self.x.shape[1])

    def to(self, dtype: torch.dtype) -> Prompts:
        return Prompts(*(t.to(dtype) for t in (self.x, self.y, self.xq, self.yq, self.beta)))


def sample_prompts(
    config: DataConfig,
    n: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Prompts:
    """Draw n independent prompts (each with its own beta). Pass a generator (training) or a seed (test sets)."""
    if n < 1:
        raise InterpError(f"Number of prompts must be >= 1, got {n}.")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    d, L = config.d, config.L
    # One draw of L + 1 covariates per prompt: the last one is the query.
    x_all = torch.randn(n, L + 1, d, generator=generator, dtype=dtype)  # [n, L+1, d]
    if config.covariance != "identity":
        chol = torch.linalg.cholesky(config.covariance_matrix()).to(dtype)  # Sigma = C C^T
        x_all = x_all @ chol.T
    beta = torch.randn(n, d, generator=generator, dtype=dtype) / math.sqrt(d)  # [n, d]
    noise = torch.randn(n, L + 1, generator=generator, dtype=dtype) * math.sqrt(config.noise_var)  # [n, L+1]
    y_all = torch.einsum("nld,nd->nl", x_all, beta) + noise  # [n, L+1]
    return Prompts(x=x_all[:, :L], y=y_all[:, :L], xq=x_all[:, L], yq=y_all[:, L], beta=beta)
