"""Sample-complexity experiment: test error vs number of training samples for RFA and the RF-MLP.

Three models with the same number of trainable weights ("equal feature counts", K = n_heads * (dim + 1)):

- "rfa":      random-feature attention, zero-mean query-key matrices W_m = qk_std * G_m;
- "rfa-mean": the same with non-zero mean, W_m = mean_scale * sqrt(dim) * I + qk_std * G_m;
- "rf-mlp":   a two-layer random-feature ReLU network on the concatenated tokens with K hidden units.

For every repeat (seed) one data set is drawn (tokens uniform on the unit sphere), every model's random
features are computed once, and for each training size n the first n rows are fitted by ridge with the
penalty chosen by exact leave-one-out error on those n rows (no test data is used to tune anything). The
error is the relative test MSE, MSE / Var(y_test), on n_test fresh examples (1.0 = predicting the mean).
Training sets are nested and shared by the three models (a paired comparison).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.core.config import Config, positive
from interp.core.errors import InterpError, unknown_name
from interp.core.progress import Progress, progress_iter
from interp.core.provenance import make_provenance
from interp.lines.rfa.features import AttentionKind, draw_mlp, draw_qk, flatten_tokens, mlp_features, rfa_features
from interp.lines.rfa.ridge import RidgeBasis, check_alphas
from interp.lines.rfa.targets import get_target, relative_mse, sample_tokens

METHODS: tuple[str, ...] = ("rfa", "rfa-mean", "rf-mlp")
LABELS = {"rfa": "RFA, zero-mean W", "rfa-mean": "RFA, non-zero-mean W", "rf-mlp": "RF-MLP"}
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-6, 5, 23))


@dataclass(frozen=True)
class RFAExperimentConfig(Config):
    dim: int = 4
    """Token dimension d."""
    n_keys: int = 4
    """Number of keys N (the RF-MLP sees (N + 1) * d inputs)."""
    n_heads: int = 64
    """RFA heads M; every model gets K = M * (d + 1) trainable weights."""
    attention: AttentionKind = "relu"
    qk_std: float = 0.5
    """Std of the random part of W_m (0.5 gives unit-variance scores for unit-norm tokens with bias)."""
    mean_scale: float = 1.0
    """The non-zero-mean variant uses W_0 = mean_scale * sqrt(d) * I."""
    mlp_weight_std: float | None = None
    """RF-MLP first-layer std (w ~ N(0, std^2 / D)); None: sqrt(d), so <w, z> ~ N(0, 1) here."""
    sample_sizes: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048, 4096)
    n_test: int = 2000
    targets: tuple[str, ...] = ("inner-p1", "inner-p2", "inner-p3", "inner-cos", "bilinear-p2")
    methods: tuple[str, ...] = METHODS
    repeats: int = 3
    seed: int = 0
    noise_std: float = 0.0
    """Gaussian label noise on the TRAINING targets, as a fraction of the target std (test stays clean)."""
    alphas: tuple[float, ...] = DEFAULT_ALPHAS

    def check(self) -> None:
        for name in ("dim", "n_keys", "n_heads", "n_test", "repeats"):
            positive(name, getattr(self, name))
        positive("qk_std", self.qk_std)
        if self.noise_std < 0:
            raise InterpError(f"noise_std must be >= 0, got {self.noise_std}.")
        try:
            sizes = tuple(sorted({int(n) for n in self.sample_sizes}))
            alphas = tuple(float(a) for a in self.alphas)
        except (TypeError, ValueError):
            raise InterpError("sample_sizes must be integers and alphas numbers (comma-separated).") from None
        if not sizes or sizes[0] < 2:
            raise InterpError(f"sample_sizes must be integers >= 2, got {self.sample_sizes}.")
        check_alphas(alphas)
        for method in self.methods:
            if method not in METHODS:
                raise unknown_name("method", method, METHODS)
        if not self.methods or not self.targets:
            raise InterpError("Give at least one method and one target.")
        for target in self.targets:
            get_target(target)  # an unknown name lists the known ones
        object.__setattr__(self, "sample_sizes", sizes)
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def n_features(self) -> int:
        return self.n_heads * (self.dim + 1)


def method_features(
    method: str, config: RFAExperimentConfig, x0: torch.Tensor, keys: torch.Tensor, seed: int
) -> np.ndarray:
    """The frozen random features of one model: [n, K]."""
    gen = torch.Generator().manual_seed(seed)
    if method in ("rfa", "rfa-mean"):
        mean = config.mean_scale * config.dim**0.5 if method == "rfa-mean" else 0.0
        qk = draw_qk(config.n_heads, config.dim, mean, config.qk_std, True, gen)
        return rfa_features(x0, keys, qk, config.attention, True).numpy()
    if method == "rf-mlp":
        std = config.mlp_weight_std if config.mlp_weight_std is not None else config.dim**0.5
        weight, offset = draw_mlp((config.n_keys + 1) * config.dim, config.n_features, std, 1.0, gen)
        return mlp_features(flatten_tokens(x0, keys), weight, offset, "relu").numpy()
    raise unknown_name("method", method, METHODS)


@dataclass(frozen=True)
class ExperimentResult:
    frame: pd.DataFrame  # one row per (repeat, method, n_train, target): rel_mse, alpha
    config: dict[str, Any]
    provenance: dict[str, Any]

    def summary(self) -> pd.DataFrame:
        """Mean and std of the relative test MSE over repeats, per target, method and n_train."""
        grouped = self.frame.groupby(["target", "method", "n_train"], sort=False)["rel_mse"]
        return grouped.agg(rel_mse_mean="mean", rel_mse_std="std", repeats="count").reset_index()

    def table(self, target: str) -> pd.DataFrame:
        """n_train x method table of mean relative test MSE for one target."""
        s = self.summary()
        s = s[s.target == target]
        return s.pivot(index="n_train", columns="method", values="rel_mse_mean")[list(self.config["methods"])]

    def claims(self) -> dict[str, Any]:
        """The paper's two qualitative claims, checked cell by cell (target x n) on the mean errors.

        For each claim "a beats b" and target: in how many of the n_train cells a's mean error is lower, whether
        it is lower at the largest n, and the error ratio a / b there (< 1: a is better)."""
        s = self.summary().set_index(["target", "method", "n_train"])["rel_mse_mean"]
        out: dict[str, Any] = {}
        methods = self.config["methods"]
        for a, b, key, want in (
            ("rfa", "rf-mlp", "rfa_beats_rf_mlp", "permutation_invariant"),
            ("rfa-mean", "rf-mlp", "rfa_mean_beats_rf_mlp", "permutation_invariant"),
            ("rfa-mean", "rfa", "mean_beats_zero_mean", "inner_product"),
            ("rfa-mean", "rfa", "mean_beats_zero_mean_on_other_targets", "other"),
        ):
            if a not in methods or b not in methods:
                continue
            per_target = {}
            for name in self.config["targets"]:
                t = get_target(name)
                kind = "inner_product" if t.inner_product else ("other" if t.permutation_invariant else "")
                if want == "permutation_invariant" and not t.permutation_invariant:
                    continue
                if want in ("inner_product", "other") and kind != want:
                    continue
                sizes = self.config["sample_sizes"]
                wins = [bool(s[name, a, n] < s[name, b, n]) for n in sizes]
                per_target[name] = {
                    "wins": sum(wins),
                    "cells": len(wins),
                    "at_largest_n": wins[-1],
                    "error_ratio_at_largest_n": float(s[name, a, sizes[-1]] / s[name, b, sizes[-1]]),
                }
            if per_target:
                out[key] = per_target
        return out

    # ---- plots and files --------------------------------------------------------------------------------
    def plot(self, path: str | Path | None = None, title: str | None = None) -> Any:
        """Test error vs n, one panel per target (matplotlib); saved as PNG when path is given."""
        matplotlib = require_matplotlib()
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        targets = list(self.config["targets"])
        cols = min(3, len(targets))
        rows = -(-len(targets) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        s = self.summary()
        for ax, target in zip(axes.ravel(), targets, strict=False):
            for method in self.config["methods"]:
                part = s[(s.target == target) & (s.method == method)]
                ax.errorbar(
                    part.n_train,
                    part.rel_mse_mean,
                    yerr=part.rel_mse_std.fillna(0.0),
                    label=LABELS[method],
                    marker="o",
                    ms=3,
                    capsize=2,
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(target)
            ax.set_xlabel("training samples n")
            ax.set_ylabel("test MSE / Var(y)")
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
            ax.grid(alpha=0.3, which="both")
        for ax in axes.ravel()[len(targets) :]:
            ax.axis("off")
        axes.ravel()[0].legend(fontsize=8)
        c = self.config
        fig.suptitle(
            title
            or f"d={c['dim']}, N={c['n_keys']}, K={c['n_heads'] * (c['dim'] + 1)} features per model, "
            f"{c['attention']} attention, {c['repeats']} seeds"
        )
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return fig

    def save(self, folder: str | Path, figure: bool = True) -> Path:
        """results.json (everything), summary.csv and, with figure, sample_complexity.png in folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = {
            "config": self.config,
            "provenance": self.provenance,
            "claims": self.claims(),
            "rows": self.frame.to_dict(orient="records"),
        }
        tmp = folder / ".results.json.tmp"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(folder / "results.json")
        self.summary().to_csv(folder / "summary.csv", index=False, float_format="%.5g")
        if figure:
            self.plot(folder / "sample_complexity.png")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ExperimentResult:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise InterpError(f"No experiment results at {path}; run `interp rfa experiment --out {folder}`.")
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(pd.DataFrame(data["rows"]), data["config"], data["provenance"])


def require_matplotlib():  # type: ignore[no-untyped-def]
    """matplotlib, or a clear error saying how to get it (it is an optional, dev-extra dependency)."""
    try:
        import matplotlib
    except ImportError:
        raise InterpError(
            'The experiment figure needs matplotlib: pip install matplotlib (or "interp[dev]"), or pass --no-figure.'
        ) from None
    return matplotlib


def run_experiment(config: RFAExperimentConfig | None = None, progress: Progress = True) -> ExperimentResult:
    """Run the experiment described in the module docstring."""
    config = config or RFAExperimentConfig()
    start = time.perf_counter()
    n_max = max(config.sample_sizes)
    rows: list[dict[str, Any]] = []
    jobs = [(rep, m) for rep in range(config.repeats) for m in config.methods]
    data: dict[int, tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]] = {}
    for rep, method in progress_iter(jobs, progress, desc="rfa experiment", total=len(jobs)):
        data_seed = 1000 * config.seed + rep
        if rep not in data:
            data.clear()  # one repeat's data at a time
            data[rep] = _draw_data(config, data_seed, n_max)
        x0, keys, ys = data[rep]
        phi = method_features(method, config, x0, keys, seed=data_seed + 10_000 * (1 + METHODS.index(method)))
        phi_train, phi_test = phi[:n_max], phi[n_max:]
        for n in config.sample_sizes:
            basis = RidgeBasis.from_features(phi_train[:n])
            for target in config.targets:
                y_train, y_test = ys[target][:n_max], ys[target][n_max:]
                sol = basis.solve(y_train[:n], config.alphas)
                err = relative_mse(phi_test @ sol.coef + sol.intercept, y_test)
                rows.append(dict(repeat=rep, method=method, n_train=n, target=target, rel_mse=err, alpha=sol.alpha))
    provenance = make_provenance(None, seed=config.seed, seconds=round(time.perf_counter() - start, 2))
    provenance["torch_threads"] = torch.get_num_threads()
    return ExperimentResult(pd.DataFrame(rows), config.to_dict(), provenance)


def _draw_data(
    config: RFAExperimentConfig, seed: int, n_max: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """n_max training + n_test test examples, and every target on them (noise on the training part only)."""
    x0, keys = sample_tokens(n_max + config.n_test, config.n_keys, config.dim, seed)
    rng = np.random.default_rng(seed + 1)
    ys = {}
    for name in config.targets:
        y = get_target(name)(x0, keys).numpy().copy()
        if config.noise_std > 0:
            y[:n_max] += config.noise_std * np.std(y) * rng.standard_normal(n_max)
        ys[name] = y
    return x0, keys, ys
