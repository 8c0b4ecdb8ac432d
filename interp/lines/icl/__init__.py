"""In-context linear regression with one-layer multi-head attention (shared/methods/icl-regression.md).

data.py (prompts), model.py (ICLAttention with per-head KQ / OV), train.py (seeded Adam trainer, checkpoints),
patterns.py (per-head KQ/OV pattern metrics as a table and HeadScores, heatmaps), baselines.py (GD, debiased
GD, ridge/Bayes, OLS, length curves), analysis.py (all of it for one checkpoint), figures.py (static PNGs).
"""

from interp.lines.icl.analysis import ICLReport, analyze, lengths
from interp.lines.icl.baselines import (
    bayes_lambda,
    compare,
    debiased_gd_predict,
    gd_predict,
    length_curve,
    ols_predict,
    optimal_gd_step,
    pattern_predict,
    ridge_predict,
)
from interp.lines.icl.data import DataConfig, Prompts, sample_prompts
from interp.lines.icl.model import ICLAttention
from interp.lines.icl.patterns import head_patterns, matrix_heatmaps, pattern_scores, pattern_summary
from interp.lines.icl.train import Checkpoint, TrainConfig, TrainResult, load_checkpoint, save_checkpoint, train

__all__ = [
    "Checkpoint",
    "DataConfig",
    "ICLAttention",
    "ICLReport",
    "Prompts",
    "TrainConfig",
    "TrainResult",
    "analyze",
    "bayes_lambda",
    "compare",
    "debiased_gd_predict",
    "gd_predict",
    "head_patterns",
    "length_curve",
    "lengths",
    "load_checkpoint",
    "matrix_heatmaps",
    "ols_predict",
    "optimal_gd_step",
    "pattern_predict",
    "pattern_scores",
    "pattern_summary",
    "ridge_predict",
    "sample_prompts",
    "save_checkpoint",
    "train",
]
