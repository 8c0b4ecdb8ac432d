"""Static PNG figures for docs and notebooks (matplotlib, from the `dev` extra). Plotly versions: patterns.py."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _plt() -> Any:
    try:  # the default backend is Agg when headless and inline in Jupyter, so nothing to select here
        import matplotlib.pyplot as plt
    except ImportError as exc:  # matplotlib is a dev extra, not a base dependency
        raise ImportError("Static figures need matplotlib: pip install 'interp[dev]'.") from exc
    return plt


def plot_matrices(kq: np.ndarray, ov: np.ndarray, title: str, path: str | os.PathLike[str] | None = None) -> Any:
    """KQ_h (top) and OV_h (bottom) for every head, one shared symmetric color scale per row."""
    plt = _plt()
    H, D = kq.shape[0], kq.shape[1]
    names = [f"x{i + 1}" for i in range(D - 1)] + ["y"]
    fig, axes = plt.subplots(2, H, figsize=(2.6 * H + 1.2, 5.4), squeeze=False, constrained_layout=True)
    for row, (mats, what, xlab, ylab) in enumerate(((kq, "KQ", "query", "key"), (ov, "OV", "input", "output"))):
        vmax = float(np.abs(mats).max()) or 1.0
        for h in range(H):
            ax = axes[row][h]
            im = ax.imshow(mats[h], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_title(f"{what} head {h}", fontsize=10)
            ax.set_xticks(range(D), names, fontsize=7)
            ax.set_yticks(range(D), names, fontsize=7)
            if h == 0:
                ax.set_ylabel(ylab)
            ax.set_xlabel(xlab, fontsize=8)
        fig.colorbar(im, ax=axes[row].tolist(), shrink=0.85)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_training_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    reference: Mapping[str, float] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Any:
    """Eval MSE vs step for each run, with horizontal reference lines (e.g. ridge, best-step GD)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for name, curve in curves.items():
        frame = pd.DataFrame(list(curve))
        ax.plot(frame["step"], frame["eval_mse"], label=name, lw=1.6)
    for i, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{len(curves) + i}", label=f"{name} ({value:.3f})")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("eval MSE (noisy y_q)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_length_curve(frame: pd.DataFrame, train_L: int, path: str | os.PathLike[str] | None = None) -> Any:
    """Test MSE vs prompt length, one line per predictor; the training length is marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for name, part in frame.groupby("predictor", sort=False):
        part = part.sort_values("L")
        ax.plot(part["L"], part["mse"], marker="o", ms=3.5, label=name)
    ax.axvline(train_L, color="gray", ls=":", label=f"training length L={train_L}")
    ax.set_yscale("log")
    ax.set_xlabel("prompt length L")
    ax.set_ylabel("test MSE")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def _finish(fig: Any, path: str | os.PathLike[str] | None) -> Any:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
