"""Random-feature attention: estimator contract, closed form vs gradient, reference loops, experiment, CLI."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.utils.estimator_checks import estimator_checks_generator
from typer.testing import CliRunner

from interp.cli import app
from interp.core.errors import InterpError, UnknownNameError
from interp.lines.rfa import (
    RandomFeatureAttention,
    RandomFeatureMap,
    RandomFeatureMLP,
    RandomFeatureProbe,
    RFARegressor,
    RFMLPRegressor,
    flatten_tokens,
    ridge,
    split_tokens,
)
from interp.lines.rfa.experiment import ExperimentResult, RFAExperimentConfig, run_experiment
from interp.lines.rfa.features import draw_qk, rfa_features
from interp.lines.rfa.targets import get_target, relative_mse, sample_tokens

# ---- scikit-learn's own estimator checks (token_dim=1: any column count is a valid token sequence) ----------
ESTIMATORS = [
    RFARegressor(n_heads=16),
    RFARegressor(n_heads=8, attention="softmax", qk_mean=1.0, alpha=[1e-3, 1.0]),
    RFMLPRegressor(n_components=64),
    RandomFeatureMap(n_components=32),
    RandomFeatureProbe(n_components=64),
]


def _check_name(check) -> str:
    while isinstance(check, functools.partial):
        check = check.func
    return check.__name__


# Every check scikit-learn generates for these estimators, except check_array_api_input: it is only meaningful
# with SCIPY_ARRAY_API=1 set before scipy is imported and otherwise reports itself as skipped (the estimators
# do not declare array-API support; they convert input to float64 numpy).
CHECKS = [
    pytest.param(est, check, id=f"{est!r}-{_check_name(check)}")
    for est in ESTIMATORS
    for est, check in estimator_checks_generator(est, legacy=True)
    if _check_name(check) != "check_array_api_input"
]


@pytest.mark.parametrize(("estimator", "check"), CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---- reference implementations ----------------------------------------------------------------------------
def rfa_loop(x0, keys, qk, attention, bias):
    """The documented formula written out with loops: phi[b, m] = sum_i a_{m,i} x~_i."""
    B, N, _ = keys.shape
    out = np.zeros((B, qk.shape[0], qk.shape[1]))
    for b in range(B):
        q = np.append(x0[b], 1.0) if bias else x0[b]
        ks = [np.append(k, 1.0) if bias else k for k in keys[b]]
        for m in range(qk.shape[0]):
            scores = np.array([q @ qk[m] @ k for k in ks])
            if attention == "relu":
                weights = np.maximum(scores, 0) / N
            else:
                weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
            out[b, m] = sum(w * k for w, k in zip(weights, ks, strict=True))
    return out.reshape(B, -1)


@pytest.mark.parametrize(
    ("attention", "bias", "mean"), [("relu", True, 0.0), ("softmax", True, 2.0), ("relu", False, 1.5)]
)
def test_rfa_features_equal_a_plain_loop(attention, bias, mean):
    x0, keys = sample_tokens(5, 3, 4, seed=1)
    qk = draw_qk(6, 4, mean, 0.7, bias, torch.Generator().manual_seed(0))
    fast = rfa_features(x0, keys, qk, attention, bias).numpy()
    slow = rfa_loop(x0.numpy(), keys.numpy(), qk.numpy(), attention, bias)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert fast.shape == (5, 6 * (4 + int(bias)))


def test_identity_mean_shifts_scores_by_inner_product():
    x0, keys = sample_tokens(3, 2, 4, seed=2)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    w0, w1 = draw_qk(2, 4, 0.0, 0.5, True, gen()), draw_qk(2, 4, 3.0, 0.5, True, gen())
    diff = torch.einsum("nd,mde,nke->nmk", x0, (w1 - w0)[:, :4, :4], keys)
    np.testing.assert_allclose(diff, 3.0 * torch.einsum("nd,nkd->nk", x0, keys)[:, None].expand_as(diff), atol=1e-12)
    assert torch.equal(w1[:, 4], w0[:, 4]) and torch.equal(w1[:, :, 4], w0[:, :, 4])


@pytest.mark.parametrize("shape", [(30, 12), (8, 20)])  # n > p and n < p
def test_ridge_equals_sklearn(shape):
    rng = np.random.default_rng(0)
    phi, y = rng.normal(size=shape), rng.normal(size=(shape[0], 2))
    for alpha in (0.3, 5.0):
        ours = ridge(phi, y, alpha)
        ref = Ridge(alpha=alpha, solver="svd").fit(phi, y)
        np.testing.assert_allclose(ours.coef.T, ref.coef_, atol=1e-10)
        np.testing.assert_allclose(ours.intercept, ref.intercept_, atol=1e-10)


def test_leave_one_out_equals_refitting_without_each_sample():
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(15, 6))
    y = phi @ rng.normal(size=6) + 0.5 * rng.normal(size=15) + 3.0
    alphas = [0.01, 0.3, 3.0, 30.0]
    sol = ridge(phi, y, alphas)
    brute = []
    for alpha in alphas:
        errs = []
        for i in range(15):
            keep = np.arange(15) != i
            fit = Ridge(alpha=alpha, solver="svd").fit(phi[keep], y[keep])
            errs.append((fit.predict(phi[i : i + 1])[0] - y[i]) ** 2)
        brute.append(np.mean(errs))
    np.testing.assert_allclose(sol.loo_mse, brute, rtol=1e-9)
    assert sol.alpha == alphas[int(np.argmin(brute))]


@pytest.mark.parametrize("module", ["rfa", "mlp"])
def test_closed_form_equals_gradient_trained_values(module):
    x0, keys = sample_tokens(40, 3, 3, seed=3)
    y = get_target("inner-p2")(x0, keys) + 0.1
    make = {
        "rfa": lambda: RandomFeatureAttention(dim=3, n_heads=4, qk_mean=1.0, seed=7),
        "mlp": lambda: RandomFeatureMLP(in_dim=12, n_features=16, seed=7),
    }[module]
    closed, trained = make(), make()
    assert torch.equal(trained.value, torch.zeros_like(trained.value))
    closed.fit_ridge(x0, keys, y, alpha=0.1)
    trained.fit_gradient(x0, keys, y, alpha=0.1)
    np.testing.assert_allclose(trained.value.detach(), closed.value.detach(), atol=1e-6)
    np.testing.assert_allclose(trained.intercept.item(), closed.intercept.item(), atol=1e-6)
    # only the readout trains: the random first layer is a frozen buffer
    assert [n for n, p in trained.named_parameters()] == ["value", "intercept"]


def test_estimators_equal_their_torch_modules_and_rfa_is_key_permutation_invariant():
    x0, keys = sample_tokens(60, 4, 3, seed=4)
    X, y = flatten_tokens(x0.numpy(), keys.numpy()), get_target("inner-p1")(x0, keys).numpy()
    rfa = RFARegressor(n_heads=8, token_dim=3, qk_mean=1.7, random_state=0).fit(X, y)
    np.testing.assert_allclose(rfa.to_module()(x0, keys).detach(), rfa.predict(X), atol=1e-10)
    mlp = RFMLPRegressor(n_components=32, random_state=0).fit(X, y)
    np.testing.assert_allclose(mlp.to_module(3)(x0, keys).detach(), mlp.predict(X), atol=1e-10)
    perm = flatten_tokens(x0.numpy(), keys.numpy()[:, [2, 0, 3, 1]])
    np.testing.assert_allclose(rfa.predict(perm), rfa.predict(X), atol=1e-10)
    assert not np.allclose(mlp.predict(perm), mlp.predict(X), atol=1e-3)
    back = split_tokens(X, 3)
    assert np.array_equal(back[0], x0.numpy()) and np.array_equal(back[1], keys.numpy())
    # same random_state -> same draw; another -> another
    again = RFARegressor(n_heads=8, token_dim=3, qk_mean=1.7, random_state=0).fit(X, y)
    assert np.array_equal(again.qk_, rfa.qk_)
    assert not np.allclose(RFARegressor(n_heads=8, token_dim=3, random_state=1).fit(X, y).qk_, rfa.qk_)


def test_rfa_cannot_learn_a_target_that_depends_on_key_order():
    x0, keys = sample_tokens(1500, 2, 2, seed=5)
    X, y = flatten_tokens(x0.numpy(), keys.numpy()), get_target("first-key")(x0, keys).numpy()
    alphas = list(np.logspace(-6, 3, 10))
    rfa = RFARegressor(n_heads=64, token_dim=2, qk_mean=2**0.5, alpha=alphas, random_state=0).fit(X[:1000], y[:1000])
    mlp = RFMLPRegressor(n_components=192, weight_std=2**0.5, alpha=alphas, random_state=0).fit(X[:1000], y[:1000])
    rfa_err, mlp_err = relative_mse(rfa.predict(X[1000:]), y[1000:]), relative_mse(mlp.predict(X[1000:]), y[1000:])
    assert rfa_err > 0.4  # at best the symmetric part, (1/N) of the variance explained with N = 2 keys
    assert mlp_err < 0.2


def test_bad_input_gets_clear_errors():
    with pytest.raises(InterpError, match="token_dim=3"):
        RFARegressor(token_dim=3).fit(np.zeros((4, 7)), np.zeros(4))
    with pytest.raises(InterpError, match="attention='sigmoid' is not allowed; choose one of: relu, softmax"):
        RFARegressor(attention="sigmoid").fit(np.zeros((4, 4)), np.zeros(4))
    with pytest.raises(InterpError, match="alpha must be a finite number >= 0"):
        RFMLPRegressor(alpha=-1.0).fit(np.zeros((4, 4)), np.zeros(4))
    with pytest.raises(UnknownNameError, match=r'Unknown target "inner-p0".*inner-p1'):
        get_target("inner-p0")
    with pytest.raises(UnknownNameError, match="Known methods"):
        RFAExperimentConfig(methods=("rfa", "mlp"))
    with pytest.raises(InterpError, match="sample_sizes"):
        RFAExperimentConfig.from_strings({"sample_sizes": "10,abc"})


# ---- the experiment at tiny size ----------------------------------------------------------------------------
def test_experiment_small_reproduces_the_mean_advantage_and_round_trips(tmp_path):
    config = RFAExperimentConfig.from_strings(
        {"sample_sizes": "32,256", "n_heads": "8", "repeats": "2", "n_test": "400", "targets": "inner-p1,bilinear-p2"}
    )
    result = run_experiment(config, progress=False)
    assert len(result.frame) == 2 * 3 * 2 * 2  # repeats x methods x sizes x targets
    table = result.table("inner-p1")
    assert table.loc[256, "rfa-mean"] < 0.5 * table.loc[256, "rfa"]  # non-zero mean helps on <x0, xi>
    assert table.loc[256, "rfa"] < table.loc[256, "rf-mlp"]
    assert table.loc[256, "rfa"] < table.loc[32, "rfa"]  # more samples, less error
    claims = result.claims()
    assert claims["mean_beats_zero_mean"]["inner-p1"]["at_largest_n"] is True
    assert set(claims["rfa_beats_rf_mlp"]) == {"inner-p1", "bilinear-p2"}
    result.save(tmp_path, figure=True)
    assert (tmp_path / "sample_complexity.png").stat().st_size > 10_000
    loaded = ExperimentResult.load(tmp_path)
    assert loaded.summary().equals(result.summary())
    assert json.loads((tmp_path / "results.json").read_text())["claims"] == json.loads(json.dumps(claims))
    again = run_experiment(config, progress=False)  # seeded: identical numbers
    assert again.frame.equals(result.frame)


def test_cli_rfa_experiment(tmp_path):
    runner = CliRunner()
    args = ["rfa", "experiment", "--out", str(tmp_path), "--no-progress", "--no-figure", "--set", "n_heads=4"]
    args += ["--set", "sample_sizes=16,64", "--set", "repeats=1", "--set", "n_test=100", "--set", "targets=inner-p1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Relative test MSE at n=64" in res.output and "mean_beats_zero_mean" in res.output
    assert (tmp_path / "results.json").is_file() and (tmp_path / "summary.csv").is_file()
    bad = runner.invoke(app, ["rfa", "experiment", "--out", str(tmp_path), "--set", "targets=inner-cosine"])
    assert bad.exit_code == 2 and "Unknown target" in bad.output
    listing = runner.invoke(app, ["rfa", "targets"])
    assert listing.exit_code == 0 and "bilinear-p2" in listing.output
