"""Ridge regression in closed form, with exact leave-one-out selection of the penalty.

The model is y = Phi v + b with an unpenalized intercept b:

    minimize_{v, b}  ||y - Phi v - b||^2 + alpha ||v||^2          (scikit-learn's `Ridge` objective)

Centering Phi and y removes b (b = mean(y) - mean(Phi) v); with the thin SVD Phi_c = U S V^T the solution is
v = V diag(s / (s^2 + alpha)) U^T y_c. One SVD serves every alpha, so choosing alpha from a grid costs little.
The fitted values are a linear smoother y_hat = H y with H = 11^T / n + U diag(s^2 / (s^2 + alpha)) U^T, which
gives the exact leave-one-out residuals (y_i - y_hat_i) / (1 - H_ii) without refitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from interp.core.errors import InterpError

# Singular values below this fraction of the largest count as zero (for alpha = 0: minimum-norm least squares).
_RCOND = 1e-12


@dataclass(frozen=True)
class RidgeSolution:
    coef: np.ndarray  # [p] or [p, n_targets]
    intercept: np.ndarray | float  # scalar or [n_targets]
    alpha: float  # the penalty used (the LOO-best one when several were given)
    loo_mse: np.ndarray | None  # [n_alphas] leave-one-out mean squared error, None for a single alpha


@dataclass(frozen=True)
class RidgeBasis:
    """The target-independent part of a ridge fit: centering and the thin SVD of the centered features."""

    phi_mean: np.ndarray  # [p]
    u: np.ndarray  # [n, r]
    s: np.ndarray  # [r]
    vt: np.ndarray  # [r, p]
    fit_intercept: bool

    @classmethod
    def from_features(cls, phi: np.ndarray, fit_intercept: bool = True) -> RidgeBasis:
        phi = np.asarray(phi, dtype=np.float64)  # [n, p]
        if phi.ndim != 2 or phi.shape[0] < 1:
            raise InterpError(f"Ridge needs a [n_samples, n_features] matrix, got shape {phi.shape}.")
        phi_mean = phi.mean(0) if fit_intercept else np.zeros(phi.shape[1])
        u, s, vt = scipy.linalg.svd(phi - phi_mean, full_matrices=False, lapack_driver="gesdd")
        keep = s > _RCOND * (s[0] if s.size else 0.0)
        return cls(phi_mean, u[:, keep], s[keep], vt[keep], fit_intercept)

    def solve(self, y: np.ndarray, alphas: Sequence[float] | float) -> RidgeSolution:
        """Coefficients for targets y ([n] or [n, t]); with several alphas, the one with the lowest LOO error."""
        alpha_list = check_alphas(alphas)
        y = np.asarray(y, dtype=np.float64)
        y2 = y[:, None] if y.ndim == 1 else y  # [n, t]
        if y2.shape[0] != self.u.shape[0]:
            raise InterpError(f"y has {y2.shape[0]} rows but the features have {self.u.shape[0]}.")
        y_mean = y2.mean(0) if self.fit_intercept else np.zeros(y2.shape[1])
        uty = self.u.T @ (y2 - y_mean)  # [r, t]
        loo = None
        if len(alpha_list) > 1:
            loo = np.array([self._loo_mse(y2 - y_mean, uty, a) for a in alpha_list])
            alpha = alpha_list[int(np.argmin(loo))]
        else:
            alpha = alpha_list[0]
        coef = self.vt.T @ ((self.s / (self.s**2 + alpha))[:, None] * uty)  # [p, t]
        intercept = y_mean - self.phi_mean @ coef  # [t]
        if y.ndim == 1:
            return RidgeSolution(coef[:, 0], float(intercept[0]), alpha, loo)
        return RidgeSolution(coef, intercept, alpha, loo)

    def _loo_mse(self, y_c: np.ndarray, uty: np.ndarray, alpha: float) -> float:
        shrink = self.s**2 / (self.s**2 + alpha)  # [r]
        resid = y_c - self.u @ (shrink[:, None] * uty)  # [n, t]
        hat = (self.u**2) @ shrink + (1.0 / self.u.shape[0] if self.fit_intercept else 0.0)  # [n] = diag(H)
        # An interpolating fit (H_ii = 1) has an infinite leave-one-out error; keep it finite but huge.
        return float(np.mean((resid / np.maximum(1.0 - hat, 1e-12)[:, None]) ** 2))


def check_alphas(alphas: Sequence[float] | float) -> list[float]:
    values = [alphas] if np.isscalar(alphas) else list(alphas)  # type: ignore[arg-type]
    if not values:
        raise InterpError("alpha: give a penalty >= 0 or a non-empty list of them.")
    out = []
    for a in values:
        if isinstance(a, bool) or not isinstance(a, int | float | np.number) or not np.isfinite(a) or a < 0:
            raise InterpError(f"alpha must be a finite number >= 0 (or a list of them), got {a!r}.")
        out.append(float(a))
    return out


def ridge(phi: np.ndarray, y: np.ndarray, alphas: Sequence[float] | float, fit_intercept: bool = True) -> RidgeSolution:
    """Closed-form ridge on features phi [n, p]; several alphas choose by exact leave-one-out error."""
    return RidgeBasis.from_features(phi, fit_intercept).solve(y, alphas)
