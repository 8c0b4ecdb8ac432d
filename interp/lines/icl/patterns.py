"""The paper's KQ / OV patterns, measured per head, as a table and as `HeadScores`.

For head h with KQ_h, OV_h ((d+1)x(d+1), see interp.lines.icl.model) and its x-x block X_h = KQ_h[:d, :d]:
- kq_diag_share    ||diag(X_h)||_2 / ||X_h||_F              1.0 iff X_h is diagonal (paper: ~0.999)
- kq_homogeneity   |mean diag(X_h)| / rms diag(X_h)          1.0 iff the diagonal is constant (X_h ~ omega_h I);
                   equals (1 + var/mean^2)^(-1/2), with var/mean^2 (the paper's number) in column kq_diag_rel_var
- ov_last_share    |OV_h[-1,-1]| / ||OV_h[-1,:]||_2          1.0 iff only y -> y survives (paper: ~0.9999);
                   the output row is the only row of OV_h that reaches the prediction
- omega_h = mean diag(X_h), mu_h = OV_h[-1,-1], and the head's share of the GD step, omega_h * mu_h.
Across heads:
- c = sum_h omega_h mu_h: to first order in omega, the model predicts c * (1/L) sum_i y_i (x_i - xbar) . x_q
  plus a bias term (sum_h mu_h) * mean_i y_i (paper: c ~ 0.879)
- zero_sum_residual = |sum_h mu_h| / sum_h |mu_h|: 0 when the positive and negative heads cancel the bias term
- sign_consistency = sum_h omega_h mu_h / sum_h |omega_h mu_h|: 1 when every head's omega and mu share a sign
  (so every head adds to the step rather than fighting the others); heads pair up as mu > 0 and mu < 0 groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.core.errors import InterpError
from interp.core.results import HeadScores

# metric name -> (table column, description)
PATTERN_METRICS: dict[str, tuple[str, str]] = {
    "icl-kq-diag-share": ("kq_diag_share", "||diag|| / ||.||_F of the KQ x-x block"),
    "icl-kq-homogeneity": ("kq_homogeneity", "|mean| / rms of the KQ x-x diagonal"),
    "icl-ov-last-share": ("ov_last_share", "|OV[-1,-1]| / ||OV[-1,:]||"),
    "icl-omega": ("omega", "mean of the KQ x-x diagonal"),
    "icl-mu": ("mu", "OV[-1,-1] (y -> y)"),
    "icl-step-contribution": ("step_contribution", "omega * mu, the head's part of the GD step c"),
}
ACTIVE_THRESHOLD = 0.05  # a head is "active" when |omega mu| >= this fraction of the largest head's


def _as_matrices(kq: Any, ov: Any) -> tuple[np.ndarray, np.ndarray]:
    kq_a, ov_a = (
        np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float64) for t in (kq, ov)
    )
    if kq_a.ndim == 2:
        kq_a, ov_a = kq_a[None], ov_a[None]
    if kq_a.ndim != 3 or kq_a.shape[1] != kq_a.shape[2] or kq_a.shape != ov_a.shape or kq_a.shape[1] < 2:
        raise InterpError(
            f"Expected KQ and OV of shape [n_heads, d+1, d+1] (d >= 1), got {kq_a.shape} and {ov_a.shape}."
        )
    return kq_a, ov_a


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0/0 -> 0 (an all-zero matrix has no pattern)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def head_patterns(kq: Any, ov: Any) -> pd.DataFrame:
    """One row per head: the pattern metrics above plus sign and activity. kq, ov: [H, d+1, d+1]."""
    kq_a, ov_a = _as_matrices(kq, ov)
    d = kq_a.shape[1] - 1
    xx = kq_a[:, :d, :d]  # [H, d, d]
    diag = np.diagonal(xx, axis1=1, axis2=2)  # [H, d]
    omega = diag.mean(axis=1)
    mu = ov_a[:, -1, -1]
    contribution = omega * mu
    largest = np.abs(contribution).max() if contribution.size else 0.0
    frame = pd.DataFrame(
        {
            "head": np.arange(kq_a.shape[0]),
            "label": [f"L0H{h}" for h in range(kq_a.shape[0])],
            "kq_diag_share": _ratio(np.linalg.norm(diag, axis=1), np.linalg.norm(xx, axis=(1, 2))),
            "kq_homogeneity": _ratio(np.abs(omega), np.sqrt((diag**2).mean(axis=1))),
            "ov_last_share": _ratio(np.abs(mu), np.linalg.norm(ov_a[:, -1, :], axis=1)),
            # The paper's homogeneity number: var(diag) / mean(diag)^2 (~4e-6 for its H=4 model).
            "kq_diag_rel_var": _ratio(diag.var(axis=1), omega**2),
            "omega": omega,
            "mu": mu,
            "step_contribution": contribution,
            # The x-x block's share of the KQ columns that matter (the query's y slot is always 0): a large
            # key-y -> query-x block would mean the head also attends by label, which the x-x metrics miss.
            "kq_xblock_share": _ratio(np.linalg.norm(xx, axis=(1, 2)), np.linalg.norm(kq_a[:, :, :d], axis=(1, 2))),
        }
    )
    frame["sign"] = np.where(mu > 0, "+", np.where(mu < 0, "-", "0"))
    frame["active"] = np.abs(contribution) >= ACTIVE_THRESHOLD * largest if largest > 0 else False
    return frame


def pattern_summary(kq: Any, ov: Any) -> dict[str, Any]:
    """Across-head quantities: c, zero-sum residual, sign consistency, head counts."""
    table = head_patterns(kq, ov)
    omega, mu = table["omega"].to_numpy(), table["mu"].to_numpy()
    contribution = omega * mu
    active = table["active"].to_numpy()
    return {
        "c": float(contribution.sum()),
        "mu_sum": float(mu.sum()),
        "zero_sum_residual": float(_ratio(np.array(abs(mu.sum())), np.array(np.abs(mu).sum()))),
        "sign_consistency": float(_ratio(np.array(contribution.sum()), np.array(np.abs(contribution).sum()))),
        "n_heads": len(table),
        "n_active": int(active.sum()),
        "n_positive": int(((mu > 0) & active).sum()),
        "n_negative": int(((mu < 0) & active).sum()),
        "min_kq_diag_share": float(table["kq_diag_share"].min()),
        "min_ov_last_share": float(table["ov_last_share"].min()),
        "mean_abs_omega_active": float(np.abs(omega[active]).mean()) if active.any() else 0.0,
        "mean_abs_mu_active": float(np.abs(mu[active]).mean()) if active.any() else 0.0,
    }


def pattern_scores(
    kq: Any,
    ov: Any,
    model_name: str,
    config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, HeadScores]:
    """One HeadScores ([1 layer, n_heads]) per pattern metric; extras carry the across-head summary."""
    table = head_patterns(kq, ov)
    summary = pattern_summary(kq, ov)
    return {
        metric: HeadScores(
            scores=table[column].to_numpy(dtype=np.float64)[None, :],
            metric=metric,
            model=model_name,
            config=dict(config or {}),
            provenance=dict(provenance or {}),
            extras={"description": description, "summary": summary},
        )
        for metric, (column, description) in PATTERN_METRICS.items()
    }


def matrix_heatmaps(kq: Any, ov: Any, title: str = "Learned KQ and OV matrices") -> Any:
    """Plotly figure: KQ_h (top row) and OV_h (bottom row) per head, diverging colors centred on 0."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    kq_a, ov_a = _as_matrices(kq, ov)
    H, D = kq_a.shape[0], kq_a.shape[1]
    names = [f"x{i + 1}" for i in range(D - 1)] + ["y"]
    fig = make_subplots(
        rows=2,
        cols=H,
        subplot_titles=[f"KQ head {h}" for h in range(H)] + [f"OV head {h}" for h in range(H)],
        horizontal_spacing=0.03,
        vertical_spacing=0.12,
    )
    for row, (mats, axis_x, axis_y) in enumerate(((kq_a, "query", "key"), (ov_a, "input", "output")), start=1):
        vmax = float(np.abs(mats).max()) or 1.0
        for h in range(H):
            fig.add_trace(
                go.Heatmap(
                    z=mats[h][::-1].tolist(),
                    x=names,
                    y=names[::-1],
                    zmin=-vmax,
                    zmax=vmax,
                    colorscale="RdBu_r",
                    showscale=h == H - 1,
                    colorbar={"len": 0.42, "y": 0.79 if row == 1 else 0.21},
                    hovertemplate=f"head {h} {axis_y} %{{y}}, {axis_x} %{{x}}: %{{z:.4g}}<extra></extra>",
                ),
                row=row,
                col=h + 1,
            )
    fig.update_layout(title=title, height=520, width=max(420, 260 * H))
    for row in (1, 2):
        for col in range(1, H + 1):
            index = (row - 1) * H + col  # make_subplots names the axes x, x2, x3, ... row by row
            fig.update_yaxes(scaleanchor=f"x{index if index > 1 else ''}", constrain="domain", row=row, col=col)
    return fig
