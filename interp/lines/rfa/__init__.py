"""Random-feature attention (RFA), the random-feature MLP baseline, their target library and experiment.

Modules: features (PyTorch modules), ridge (closed form + leave-one-out penalty choice), estimators
(scikit-learn regressors, random-feature map and probe), targets (permutation-invariant target functions),
experiment (test error vs number of samples).
"""

from interp.lines.rfa.estimators import (
    RandomFeatureMap,
    RandomFeatureProbe,
    RFARegressor,
    RFMLPRegressor,
    flatten_tokens,
    split_tokens,
)
from interp.lines.rfa.features import RandomFeatureAttention, RandomFeatureMLP
from interp.lines.rfa.ridge import ridge

__all__ = [
    "RFARegressor",
    "RFMLPRegressor",
    "RandomFeatureAttention",
    "RandomFeatureMLP",
    "RandomFeatureMap",
    "RandomFeatureProbe",
    "flatten_tokens",
    "ridge",
    "split_tokens",
]
