"""Attention entropy beyond the per-head score (interp/lines/entropy/metrics.py):

- `report`: collapse / normal / overloaded classes, per-layer counts and plots (EntropyReport);
- `regularizer`: the entropy regularizer of arXiv 2501.03489 as a loss module (EntropyRegularizer);
- `model` + `experiment`: small character GPTs with and without LayerNorm, trained on CPU, and their entropy.
"""

from interp.lines.entropy.regularizer import EntropyRegularizer
from interp.lines.entropy.report import EntropyReport, Thresholds, classify

__all__ = ["EntropyRegularizer", "EntropyReport", "Thresholds", "classify"]
