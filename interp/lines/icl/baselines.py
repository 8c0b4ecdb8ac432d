"""Closed-form predictors for the same prompts the model sees, and test-MSE comparisons.

With g = (1/L) sum_i y_i x_i . x_q (one GD step from beta = 0 on the in-context least squares, step 1):
- one-step GD           y_hat = eta * g, eta fitted by least squares on separate prompts ("best step");
                        for x ~ N(0, I) the population optimum is eta* = L / (L + d + 1 + noise_var * d)
- debiased GD (paper)   y_hat = c * (1/L) sum_i y_i (x_i - xbar) . x_q, with the model's own c or a fitted c
- ridge / Bayes         y_hat = x_q^T (X^T X + lam I)^-1 X^T y; lam = noise_var * d is the posterior mean
                        (Bayes-optimal) for beta ~ N(0, I / d)
- OLS                   y_hat = x_q^T X^+ y (minimum-norm least squares)
- pattern model         the paper's idealized heads: y_hat = sum_h mu_h sum_i y_i softmax_i(omega_h x_i . x_q)
All of them are evaluated in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from interp.core.errors import InterpError
from interp.lines.icl.data import DataConfig, Prompts, sample_prompts
from interp.lines.icl.model import ICLAttention


def _f64(p: Prompts) -> Prompts:
    return p.to(torch.float64)


def gd_feature(p: Prompts) -> torch.Tensor:
    """(1/L) sum_i y_i x_i . x_q: [n]."""
    p = _f64(p)
    return torch.einsum("nl,nld,nd->n", p.y, p.x, p.xq) / p.L


def debiased_gd_feature(p: Prompts) -> torch.Tensor:
    """(1/L) sum_i y_i (x_i - xbar) . x_q: [n] (xbar = mean_i x_i)."""
    p = _f64(p)
    centred = p.x - p.x.mean(dim=1, keepdim=True)
    return torch.einsum("nl,nld,nd->n", p.y, centred, p.xq) / p.L


def gd_predict(p: Prompts, step: float) -> torch.Tensor:
    return step * gd_feature(p)


def debiased_gd_predict(p: Prompts, c: float) -> torch.Tensor:
    return c * debiased_gd_feature(p)


def fit_scale(feature: torch.Tensor, target: torch.Tensor) -> float:
    """The least-squares scalar a minimizing mean (a * feature - target)^2."""
    denom = float((feature * feature).sum())
    if denom == 0:
        raise InterpError("Cannot fit a step size: the feature is identically zero on the fit prompts.")
    return float((feature * target.double()).sum()) / denom


def optimal_gd_step(d: int, L: int, noise_var: float) -> float:
    """Population-optimal one-step GD step for x ~ N(0, I_d), beta ~ N(0, I_d / d) (a Wishart moment)."""
    return L / (L + d + 1 + noise_var * d)


def bayes_lambda(d: int, noise_var: float) -> float:
    """Ridge penalty that gives the posterior mean for beta ~ N(0, I_d / d) and noise variance noise_var."""
    return noise_var * d


def ridge_predict(p: Prompts, lam: float) -> torch.Tensor:
    p = _f64(p)
    xtx = p.x.transpose(1, 2) @ p.x  # [n, d, d]
    eye = torch.eye(p.x.shape[-1], dtype=torch.float64)
    beta_hat = torch.linalg.solve(xtx + lam * eye, (p.x.transpose(1, 2) @ p.y.unsqueeze(-1)))  # [n, d, 1]
    return (p.xq.unsqueeze(1) @ beta_hat).reshape(-1)


def ols_predict(p: Prompts) -> torch.Tensor:
    p = _f64(p)
    beta_hat = torch.linalg.pinv(p.x) @ p.y.unsqueeze(-1)  # minimum-norm solution when L < d
    return (p.xq.unsqueeze(1) @ beta_hat).reshape(-1)


def pattern_predict(p: Prompts, omega: Sequence[float], mu: Sequence[float]) -> torch.Tensor:
    """The paper's idealized multi-head predictor built from each head's (omega_h, mu_h) only."""
    p = _f64(p)
    s = torch.einsum("nld,nd->nl", p.x, p.xq)  # x_i . x_q: [n, L]
    out = torch.zeros(p.n, dtype=torch.float64)
    for w, m in zip(omega, mu, strict=True):
        out += m * (torch.softmax(w * s, dim=1) * p.y).sum(dim=1)
    return out


@torch.no_grad()
def model_predict(model: ICLAttention, p: Prompts, chunk: int = 8192) -> torch.Tensor:
    dtype = model.kq.dtype
    parts = [model(p.z[i : i + chunk].to(dtype), p.zq[i : i + chunk].to(dtype)).double() for i in range(0, p.n, chunk)]
    return torch.cat(parts)


def mse(pred: torch.Tensor, p: Prompts) -> float:
    return float(((pred.double() - p.yq.double()) ** 2).mean())


def compare(
    models: Mapping[str, ICLAttention],
    test: Prompts,
    fit: Prompts,
    data: DataConfig,
    c_from: Mapping[str, tuple[float | None, Sequence[float], Sequence[float]]] | None = None,
) -> pd.DataFrame:
    """Test MSE of every model and baseline on the same prompts; steps/c are fitted on `fit` prompts.

    c_from: per model, (c, omega per head, mu per head) from its patterns, to add the idealized pattern model
    and (unless c is None) the paper's debiased GD with the model's own c to the table.
    """
    if test.L != data.L or fit.L != data.L:
        raise InterpError(f"Test and fit prompts must have length L={data.L}, got {test.L} and {fit.L}.")
    rows: list[dict[str, object]] = []

    def add(name: str, kind: str, pred: torch.Tensor, param: str = "") -> None:
        rows.append({"predictor": name, "kind": kind, "mse": mse(pred, test), "param": param})

    for name, model in models.items():
        add(name, "model", model_predict(model, test), f"H={model.n_heads} {model.attention}")
    eta = fit_scale(gd_feature(fit), fit.yq)
    add("one-step GD, best step", "baseline", gd_predict(test, eta), f"step={eta:.4f} (fitted)")
    if data.covariance == "identity":
        eta_star = optimal_gd_step(data.d, data.L, data.noise_var)
        add("one-step GD, optimal step (closed form)", "baseline", gd_predict(test, eta_star), f"step={eta_star:.4f}")
    c_fit = fit_scale(debiased_gd_feature(fit), fit.yq)
    add("debiased GD, best c", "baseline", debiased_gd_predict(test, c_fit), f"c={c_fit:.4f} (fitted)")
    for name, (c, omega, mu) in (c_from or {}).items():
        if c is not None:
            add(f"debiased GD, c of {name}", "baseline", debiased_gd_predict(test, c), f"c={c:.4f}")
        add(f"pattern model of {name}", "baseline", pattern_predict(test, omega, mu), "omega_h, mu_h of its heads")
    lam = bayes_lambda(data.d, data.noise_var)
    add("ridge = Bayes-optimal", "baseline", ridge_predict(test, lam), f"lambda={lam:g}")
    add("OLS", "baseline", ols_predict(test))
    add("zero predictor", "baseline", torch.zeros(test.n, dtype=torch.float64))
    frame = pd.DataFrame(rows)
    frame["excess_mse"] = frame["mse"] - data.noise_var
    return frame


def length_curve(
    models: Mapping[str, ICLAttention],
    data: DataConfig,
    lengths: Sequence[int],
    n: int = 4096,
    seed: int = 0,
) -> pd.DataFrame:
    """Test MSE vs prompt length for each model (trained at data.L) and for ridge / best-step GD at each length."""
    if not lengths or min(lengths) < 1:
        raise InterpError(f"Lengths must be positive integers, got {list(lengths)}.")
    rows = []
    for L in lengths:
        cfg = data.with_length(int(L))
        test = sample_prompts(cfg, n, seed=seed + 7919 * int(L), dtype=torch.float64)
        fit = sample_prompts(cfg, n, seed=seed + 7919 * int(L) + 1, dtype=torch.float64)
        preds = {name: model_predict(model, test) for name, model in models.items()}
        preds["ridge = Bayes-optimal"] = ridge_predict(test, bayes_lambda(cfg.d, cfg.noise_var))
        preds["one-step GD, best step"] = gd_predict(test, fit_scale(gd_feature(fit), fit.yq))
        rows += [{"L": int(L), "predictor": name, "mse": mse(pred, test)} for name, pred in preds.items()]
    return pd.DataFrame(rows)
