"""Analyze a trained checkpoint: per-head patterns, across-head summary, test MSE against the baselines."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.core.errors import InterpError
from interp.core.figures import write_figure_html
from interp.core.provenance import make_provenance
from interp.core.results import HeadScores
from interp.lines.icl.baselines import compare, length_curve
from interp.lines.icl.data import sample_prompts
from interp.lines.icl.patterns import head_patterns, matrix_heatmaps, pattern_scores, pattern_summary
from interp.lines.icl.train import Checkpoint, load_checkpoint

TEST_SEED = 20_250_317  # test prompts; fit prompts (for fitted steps) use TEST_SEED + 1
DEBIASED_MAX_RESIDUAL = 0.1


@dataclass
class ICLReport:
    name: str
    patterns: pd.DataFrame  # one row per head
    summary: dict[str, Any]  # across heads (c, zero-sum residual, ...)
    scores: dict[str, HeadScores]  # one HeadScores per pattern metric, [1, n_heads]
    mse: pd.DataFrame  # test MSE of the model(s) and the baselines on the same prompts
    kq: np.ndarray  # [H, d+1, d+1]
    ov: np.ndarray  # [H, d+1, d+1]
    meta: dict[str, Any] = field(default_factory=dict)

    def heatmap(self) -> Any:
        return matrix_heatmaps(self.kq, self.ov, title=f"Learned KQ (top) and OV (bottom): {self.name}")

    def save(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """patterns.csv, mse.csv, summary.json, scores/<metric>.json (HeadScores), matrices.html."""
        out = Path(out_dir)
        (out / "scores").mkdir(parents=True, exist_ok=True)
        written = [out / "patterns.csv", out / "mse.csv", out / "summary.json", out / "matrices.html"]
        self.patterns.to_csv(written[0], index=False)
        self.mse.to_csv(written[1], index=False)
        written[2].write_text(json.dumps({"name": self.name, **self.summary, **self.meta}, indent=1))
        write_figure_html(self.heatmap(), written[3])
        for metric, result in self.scores.items():
            written.append(result.save(out / "scores" / f"{metric}.json"))
        return written


def analyze(
    checkpoint: str | os.PathLike[str] | Checkpoint,
    others: Sequence[str | os.PathLike[str] | Checkpoint] = (),
    n_test: int = 20_000,
    seed: int = TEST_SEED,
) -> ICLReport:
    """Patterns of `checkpoint` plus test MSE of it, of `others` (same d and noise) and of the baselines."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    rest = [o if isinstance(o, Checkpoint) else load_checkpoint(o) for o in others]
    data = ckpt.config.data_config()
    for other in rest:
        if other.config.data_config() != data:
            raise InterpError(f"{other.name} was trained on {other.config.data_config()}, not {data}.")
    kq, ov = (m.numpy() for m in ckpt.model.matrices())
    summary = pattern_summary(kq, ov)
    table = head_patterns(kq, ov)
    test = sample_prompts(data, n_test, seed=seed, dtype=torch.float64)
    fit = sample_prompts(data, n_test, seed=seed + 1, dtype=torch.float64)
    models = {c.name: c.model for c in [ckpt, *rest]}
    c_from = {}
    for c in [ckpt, *rest]:
        if c.model.attention == "softmax":
            k, o = (m.numpy() for m in c.model.matrices())
            t, s = head_patterns(k, o), pattern_summary(k, o)
            # Debiased GD with the model's c only describes heads whose mu's cancel (not a single head).
            step = s["c"] if s["zero_sum_residual"] < DEBIASED_MAX_RESIDUAL else None
            c_from[c.name] = (step, t["omega"].tolist(), t["mu"].tolist())
    mse = compare(models, test, fit, data, c_from=c_from)
    provenance = make_provenance(seed=seed, checkpoint=str(ckpt.path), n_test=n_test)
    config = {"train_config": ckpt.config.to_dict(), "step": ckpt.step}
    return ICLReport(
        name=ckpt.name,
        patterns=table,
        summary=summary,
        scores=pattern_scores(kq, ov, ckpt.name, config=config, provenance=provenance),
        mse=mse,
        kq=kq,
        ov=ov,
        meta={"step": ckpt.step, "train_seconds": ckpt.meta.get("train_seconds"), "n_test": n_test, "seed": seed},
    )


def lengths(
    checkpoints: Sequence[str | os.PathLike[str] | Checkpoint],
    lengths: Sequence[int],
    n: int = 4096,
    seed: int = TEST_SEED,
) -> pd.DataFrame:
    """Length-generalization curve for several checkpoints trained on the same task distribution."""
    ckpts = [c if isinstance(c, Checkpoint) else load_checkpoint(c) for c in checkpoints]
    if not ckpts:
        raise InterpError("Give at least one checkpoint.")
    data = ckpts[0].config.data_config()
    return length_curve({c.name: c.model for c in ckpts}, data, lengths, n=n, seed=seed)
