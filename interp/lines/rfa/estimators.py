"""scikit-learn estimators over random features: RFA and RF-MLP regressors, a random-feature map and probe.

They follow scikit-learn's conventions: parameters are stored by __init__ untouched, everything learned in
`fit` (including the random draws) lives in trailing-underscore attributes, `random_state` makes the draws
reproducible, and `predict` / `score` / `transform` behave like any other estimator (`clone`, pipelines,
grid search and `sklearn.utils.estimator_checks` all work).

Sequence input as a 2-D matrix: one row per example holds the query token and then the N key tokens,
[x_0, x_1, ..., x_N], each `token_dim` numbers long (`flatten_tokens` / `split_tokens` convert).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from interp.core.errors import InterpError
from interp.lines.rfa.features import (
    ACTIVATIONS,
    ATTENTION_KINDS,
    RandomFeatureAttention,
    RandomFeatureMLP,
    as_tensor,
    draw_mlp,
    draw_qk,
    mlp_features,
    rfa_features,
)
from interp.lines.rfa.ridge import check_alphas, ridge

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6

    def validate_data(estimator, X="no_validation", y="no_validation", reset=True, **kw):  # type: ignore[no-redef]
        return estimator._validate_data(X, y, reset=reset, **kw)


def flatten_tokens(x0: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """x0 [n, d] and keys [n, N, d] -> X [n, (N + 1) d] (query first), the estimators' input layout."""
    x0, keys = np.asarray(x0), np.asarray(keys)
    if x0.ndim != 2 or keys.ndim != 3 or keys.shape[0] != x0.shape[0] or keys.shape[2] != x0.shape[1]:
        raise InterpError(f"Expected x0 [n, d] and keys [n, N, d], got {x0.shape} and {keys.shape}.")
    return np.concatenate([x0, keys.reshape(len(keys), -1)], 1)


def split_tokens(X: np.ndarray, token_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of flatten_tokens: X [n, (N + 1) d] -> (x0 [n, d], keys [n, N, d])."""
    X = np.asarray(X)
    n_tokens = _n_tokens(X.shape[1], token_dim, "split_tokens")
    tokens = X.reshape(len(X), n_tokens, token_dim)
    return tokens[:, 0], tokens[:, 1:]


def _n_tokens(n_features: int, token_dim: int, who: str) -> int:
    if isinstance(token_dim, bool) or not isinstance(token_dim, int | np.integer) or token_dim < 1:
        raise InterpError(f"{who}: token_dim must be a positive integer, got {token_dim!r}.")
    if n_features % token_dim or n_features // token_dim < 2:
        raise InterpError(
            f"{who} needs a query token and at least one key token of token_dim={token_dim} numbers each, "
            f"but X has {n_features} feature(s): n_features must be a multiple of token_dim, >= 2 * token_dim."
        )
    return n_features // token_dim


def _choice(who: str, name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InterpError(f"{who}: {name}={value!r} is not allowed; choose one of: {', '.join(allowed)}.")


def _positive_int(who: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InterpError(f"{who}: {name} must be a positive integer, got {value!r}.")


def _number(who: str, name: str, value: object, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not value >= minimum:
        raise InterpError(f"{who}: {name} must be a number >= {minimum}, got {value!r}.")


def _torch_seed(random_state: object) -> torch.Generator:
    """A torch generator seeded from scikit-learn's random_state (None, int or RandomState)."""
    return torch.Generator().manual_seed(int(check_random_state(random_state).randint(2**31 - 1)))


class _RandomFeatureRidge(RegressorMixin, BaseEstimator):
    """Ridge on a random feature map drawn in `fit`; subclasses define `_draw` and `_features`."""

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"multioutput": True}

    def _draw(self, n_features: int) -> None:
        raise NotImplementedError

    def _features(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X, y):  # type: ignore[no-untyped-def]
        """Draw the random first layer, then solve the ridge problem in closed form.

        With a list of alphas the penalty is chosen by exact leave-one-out error (stored in alpha_)."""
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True, dtype=np.float64)
        check_alphas(self.alpha)
        self._draw(X.shape[1])
        sol = ridge(self._features(X), y, self.alpha, self.fit_intercept)
        self.coef_, self.intercept_, self.alpha_ = sol.coef.T, sol.intercept, sol.alpha
        self.loo_mse_ = sol.loo_mse
        return self

    def predict(self, X):  # type: ignore[no-untyped-def]
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._features(X) @ self.coef_.T + self.intercept_


class RFARegressor(_RandomFeatureRidge):
    """Random-feature attention regressor (see interp.lines.rfa.features for the exact model).

    X: [n_samples, (N + 1) * token_dim], the query token then N key tokens. n_heads frozen random query-key
    matrices; the M * (token_dim + bias) value weights are fitted by ridge. The model is permutation-invariant
    in the keys by construction, so it cannot fit targets that depend on which key is where.

    Fitted: qk_ [n_heads, d', d'], coef_ [n_heads * d'] (or [n_targets, ...]), intercept_, alpha_, n_keys_.
    """

    def __init__(
        self,
        n_heads: int = 64,
        token_dim: int = 1,
        attention: str = "relu",
        qk_mean: float = 0.0,
        qk_std: float = 0.5,
        bias: bool = True,
        alpha: float | Sequence[float] = 1e-3,
        fit_intercept: bool = True,
        random_state: int | None = None,
    ) -> None:
        self.n_heads = n_heads
        self.token_dim = token_dim
        self.attention = attention
        self.qk_mean = qk_mean
        self.qk_std = qk_std
        self.bias = bias
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.random_state = random_state

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        # Permutation-invariant in the keys by design: a target that depends on one particular key column
        # (as in scikit-learn's generic regression check data) is outside its function class.
        tags.regressor_tags.poor_score = True
        return tags

    def _more_tags(self) -> dict:
        return {"multioutput": True, "poor_score": True}

    def _draw(self, n_features: int) -> None:
        who = type(self).__name__
        n_tokens = _n_tokens(n_features, self.token_dim, who)
        _positive_int(who, "n_heads", self.n_heads)
        _choice(who, "attention", self.attention, ATTENTION_KINDS)
        _number(who, "qk_std", self.qk_std)
        _number(who, "qk_mean", self.qk_mean, -np.inf)
        gen = _torch_seed(self.random_state)
        self.qk_ = draw_qk(self.n_heads, self.token_dim, self.qk_mean, self.qk_std, bool(self.bias), gen).numpy()
        self.n_keys_ = n_tokens - 1

    def _features(self, X: np.ndarray) -> np.ndarray:
        tokens = as_tensor(X).view(len(X), -1, self.token_dim)  # [n, N + 1, d]
        phi = rfa_features(tokens[:, 0], tokens[:, 1:], torch.from_numpy(self.qk_), self.attention, bool(self.bias))
        return phi.numpy()

    def to_module(self) -> RandomFeatureAttention:
        """The fitted model as a PyTorch module (frozen qk buffer, value/intercept parameters)."""
        check_is_fitted(self, "coef_")
        if self.coef_.ndim != 1:
            raise InterpError("to_module supports a single target; this estimator was fitted on several.")
        module = RandomFeatureAttention(
            self.token_dim, self.n_heads, self.attention, bias=bool(self.bias), qk=torch.from_numpy(self.qk_)
        )
        with torch.no_grad():
            module.value.copy_(torch.from_numpy(self.coef_))
            module.intercept.fill_(float(self.intercept_))
        return module


class RFMLPRegressor(_RandomFeatureRidge):
    """Two-layer random-feature network on the flattened input: f(z) = sum_k v_k sigma(<w_k, z> + c_k) + b.

    w_k ~ N(0, weight_std^2 / n_features_in), c_k ~ N(0, bias_std^2), frozen; v and b by ridge.
    Fitted: weight_ [n_components, n_features_in], offset_ [n_components], coef_, intercept_, alpha_.
    """

    def __init__(
        self,
        n_components: int = 512,
        activation: str = "relu",
        weight_std: float = 1.0,
        bias_std: float = 1.0,
        alpha: float | Sequence[float] = 1e-3,
        fit_intercept: bool = True,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.activation = activation
        self.weight_std = weight_std
        self.bias_std = bias_std
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.random_state = random_state

    def _draw(self, n_features: int) -> None:
        who = type(self).__name__
        _positive_int(who, "n_components", self.n_components)
        _choice(who, "activation", self.activation, ACTIVATIONS)
        _number(who, "weight_std", self.weight_std)
        _number(who, "bias_std", self.bias_std)
        weight, offset = draw_mlp(
            n_features, self.n_components, self.weight_std, self.bias_std, _torch_seed(self.random_state)
        )
        self.weight_, self.offset_ = weight.numpy(), offset.numpy()

    def _features(self, X: np.ndarray) -> np.ndarray:
        return mlp_features(
            as_tensor(X), torch.from_numpy(self.weight_), torch.from_numpy(self.offset_), self.activation
        ).numpy()

    def to_module(self, token_dim: int) -> RandomFeatureMLP:
        """The fitted model as a PyTorch module taking (x0 [B, token_dim], keys [B, N, token_dim])."""
        check_is_fitted(self, "coef_")
        _n_tokens(self.n_features_in_, token_dim, "to_module")
        if self.coef_.ndim != 1:
            raise InterpError("to_module supports a single target; this estimator was fitted on several.")
        module = RandomFeatureMLP(self.n_features_in_, self.n_components, self.activation)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(self.weight_))
            module.offset.copy_(torch.from_numpy(self.offset_))
            module.value.copy_(torch.from_numpy(self.coef_))
            module.intercept.fill_(float(self.intercept_))
        return module


# ---------------------------------------------------------------------------------------------------------
# Probes: a fixed random-feature map and a linear classifier on top of it
# ---------------------------------------------------------------------------------------------------------
KERNELS = ("relu", "cos")


class RandomFeatureMap(TransformerMixin, BaseEstimator):
    """x -> sigma(W x_hat + c) / sqrt(n_components), x_hat standardized on the fitting data.

    W ~ N(0, gamma / n_features_in) (so <w, x_hat> has variance ~gamma), drawn in `fit` from random_state.
    kernel "relu": c ~ N(0, gamma), sigma = ReLU (arc-cosine random features);
    kernel "cos":  c ~ U(0, 2 pi), sigma = sqrt(2) cos (random Fourier features of an RBF kernel).
    Fitted: mean_, scale_ [n_features_in], weight_ [n_components, n_features_in], offset_ [n_components].
    """

    def __init__(
        self,
        n_components: int = 256,
        kernel: str = "relu",
        gamma: float = 1.0,
        standardize: bool = True,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.kernel = kernel
        self.gamma = gamma
        self.standardize = standardize
        self.random_state = random_state

    def fit(self, X, y=None):  # type: ignore[no-untyped-def]
        X = validate_data(self, X, dtype=np.float64)
        who = type(self).__name__
        _positive_int(who, "n_components", self.n_components)
        _choice(who, "kernel", self.kernel, KERNELS)
        _number(who, "gamma", self.gamma)
        rng = check_random_state(self.random_state)
        d = X.shape[1]
        if self.standardize:
            self.mean_ = X.mean(0)
            scale = X.std(0)
            self.scale_ = np.where(scale > 1e-12 * max(1.0, float(np.abs(X).max())), scale, 1.0)
        else:
            self.mean_, self.scale_ = np.zeros(d), np.ones(d)
        self.weight_ = rng.standard_normal((self.n_components, d)) * np.sqrt(self.gamma / d)
        if self.kernel == "relu":
            self.offset_ = rng.standard_normal(self.n_components) * np.sqrt(self.gamma)
        else:
            self.offset_ = rng.uniform(0.0, 2 * np.pi, self.n_components)
        return self

    def transform(self, X):  # type: ignore[no-untyped-def]
        check_is_fitted(self, "weight_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        pre = ((X - self.mean_) / self.scale_) @ self.weight_.T + self.offset_  # [n, n_components]
        out = np.maximum(pre, 0.0) if self.kernel == "relu" else np.sqrt(2.0) * np.cos(pre)
        return out / np.sqrt(self.n_components)


class RandomFeatureProbe(ClassifierMixin, BaseEstimator):
    """A linear probe on random features: RandomFeatureMap followed by L2-regularized logistic regression.

    The map is fixed by random_state; only the logistic regression learns. Fitted: map_ (RandomFeatureMap),
    classifier_ (LogisticRegression), classes_.
    """

    def __init__(
        self,
        n_components: int = 256,
        kernel: str = "relu",
        gamma: float = 1.0,
        C: float = 1.0,
        max_iter: int = 1000,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.kernel = kernel
        self.gamma = gamma
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y):  # type: ignore[no-untyped-def]
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        _number(type(self).__name__, "C", self.C, np.finfo(float).tiny)
        self.map_ = RandomFeatureMap(self.n_components, self.kernel, self.gamma, True, self.random_state).fit(X)
        self.classifier_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(self.map_.transform(X), y)
        self.classes_ = self.classifier_.classes_
        self.n_iter_ = self.classifier_.n_iter_
        return self

    def _mapped(self, X):  # type: ignore[no-untyped-def]
        check_is_fitted(self, "classifier_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.map_.transform(X)

    def decision_function(self, X):  # type: ignore[no-untyped-def]
        mapped = self._mapped(X)
        return self.classifier_.decision_function(mapped)

    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        mapped = self._mapped(X)
        return self.classifier_.predict_proba(mapped)

    def predict(self, X):  # type: ignore[no-untyped-def]
        mapped = self._mapped(X)
        return self.classifier_.predict(mapped)
