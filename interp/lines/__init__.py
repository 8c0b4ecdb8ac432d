"""The research lines, one folder each; each line's metrics.py registers its per-head metrics by name.

ablation/  ablation-kl, ablation-effect: what knocking a head out does to the next-token prediction
safety/    ships, ships-dataset, sahara; attack success rate and the recorded testbed runs
vision/    vhd, t-vhd, vhr on vision-language models; the scenes-VLM's scenes, training and experiment
entropy/   attention entropy (collapse / overload), the entropy regularizer, the LayerNorm-free experiment
icl/       in-context linear regression: trained attention and its KQ/OV patterns
rfa/       random-feature attention estimators and random-feature probes of head outputs (`probe`)

Lines never import each other (an import-linter contract in pyproject.toml checks it); they build on
interp.engine, interp.model and interp.core. Importing this package registers every metric.
"""

from interp.lines.ablation import metrics as _ablation
from interp.lines.entropy import metrics as _entropy
from interp.lines.rfa import metrics as _rfa
from interp.lines.safety import metrics as _safety
from interp.lines.vision import metrics as _vision

__all__: list[str] = []
del _ablation, _entropy, _rfa, _safety, _vision
