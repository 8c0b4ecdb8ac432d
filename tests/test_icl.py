"""In-context linear regression: model forward, baselines, pattern metrics, trainer, checkpoints, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from interp.core.errors import InterpError, ResultsFileError
from interp.core.results import HeadScores
from interp.lines.icl import (
    DataConfig,
    ICLAttention,
    TrainConfig,
    analyze,
    bayes_lambda,
    compare,
    debiased_gd_predict,
    gd_predict,
    head_patterns,
    length_curve,
    load_checkpoint,
    ols_predict,
    optimal_gd_step,
    pattern_predict,
    pattern_scores,
    pattern_summary,
    ridge_predict,
    sample_prompts,
    train,
)
from interp.lines.icl.baselines import debiased_gd_feature, fit_scale, gd_feature, model_predict


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is fastest, and extra threads crawl on a loaded shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_model(attention: str = "softmax", d: int = 3, heads: int = 3, seed: int = 0) -> ICLAttention:
    model = ICLAttention(d, heads, attention, init_std=0.5, generator=torch.Generator().manual_seed(seed))
    return model.double()


def _planted(omega: list[float], mu: list[float], d: int = 4, attention: str = "softmax") -> ICLAttention:
    """KQ_h = omega_h on the x-x diagonal, OV_h = mu_h at (y -> y), zero elsewhere: the paper's exact patterns."""
    model = ICLAttention(d, len(omega), attention, init_std=0.0).double()
    with torch.no_grad():
        for h, (w, m) in enumerate(zip(omega, mu, strict=True)):
            model.kq[h, :d, :d] = w * torch.eye(d, dtype=torch.float64)
            model.ov[h, -1, -1] = m
    return model


# ---- model ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_forward_equals_explicit_per_head_formula(attention: str) -> None:
    model = _random_model(attention)
    p = sample_prompts(DataConfig(d=3, L=7), 5, seed=1, dtype=torch.float64)
    z, zq = p.z, p.zq
    kq, ov = model.kq.detach(), model.ov.detach()
    full = torch.zeros(p.n, 4, dtype=torch.float64)
    per_head = torch.zeros(p.n, model.n_heads, dtype=torch.float64)
    for b in range(p.n):
        for h in range(model.n_heads):
            scores = [float(z[b, i] @ kq[h] @ zq[b]) for i in range(p.L)]  # z_i^T KQ_h z_q
            if attention == "softmax":
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                weights = [w / sum(weights) for w in weights]
            else:
                weights = scores
            head_out = sum(weights[i] * (ov[h] @ z[b, i]) for i in range(p.L))  # OV_h sum_i a_i z_i
            full[b] += head_out
            per_head[b, h] = head_out[-1]
    with torch.no_grad():
        torch.testing.assert_close(model.full_output(z, zq), full, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model(z, zq), full[:, -1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.head_predictions(z, zq), per_head, rtol=1e-12, atol=1e-12)
        weights = model.attention_weights(z, zq)
        assert weights.shape == (p.n, model.n_heads, p.L)
        if attention == "softmax":
            torch.testing.assert_close(weights.sum(-1), torch.ones(p.n, model.n_heads, dtype=torch.float64))


def test_model_rejects_bad_shapes_and_kinds() -> None:
    model = _random_model()
    p = sample_prompts(DataConfig(d=4, L=5), 2, seed=0, dtype=torch.float64)
    with pytest.raises(InterpError, match="Expected z"):
        model(p.z, p.zq)  # d=4 tokens into a d=3 model
    with pytest.raises(InterpError, match="softmax, linear"):
        ICLAttention(3, 2, "relu")  # type: ignore[arg-type]


# ---- data -------------------------------------------------------------------------------------------------
def test_prompts_follow_the_task_distribution() -> None:
    cfg = DataConfig(d=3, L=20, noise_var=0.25)
    p = sample_prompts(cfg, 4000, seed=3, dtype=torch.float64)
    assert p.z.shape == (4000, 20, 4) and p.zq.shape == (4000, 4) and torch.all(p.zq[:, -1] == 0)
    residual = p.y - torch.einsum("nld,nd->nl", p.x, p.beta)
    assert abs(float(residual.var()) - 0.25) < 0.01
    assert abs(float((p.beta**2).mean()) - 1 / 3) < 0.01  # beta ~ N(0, I/d)
    q_residual = p.yq - (p.xq * p.beta).sum(-1)
    assert abs(float(q_residual.var()) - 0.25) < 0.03  # the query label is noisy too
    again = sample_prompts(cfg, 4000, seed=3, dtype=torch.float64)
    assert torch.equal(p.z, again.z) and torch.equal(p.yq, again.yq)
    assert not torch.equal(p.z, sample_prompts(cfg, 4000, seed=4, dtype=torch.float64).z)


def test_toeplitz_covariance_and_config_checks() -> None:
    cfg = DataConfig(d=3, L=50, covariance="toeplitz", rho=0.6)
    x = sample_prompts(cfg, 2000, seed=0, dtype=torch.float64).x.reshape(-1, 3)
    torch.testing.assert_close(torch.cov(x.T), cfg.covariance_matrix(), atol=0.02, rtol=0)
    assert float(cfg.covariance_matrix()[0, 2]) == pytest.approx(0.36)
    with pytest.raises(InterpError, match="rho"):
        DataConfig(rho=1.0)
    with pytest.raises(InterpError, match="identity, toeplitz"):
        DataConfig(covariance="diag")  # type: ignore[arg-type]
    with pytest.raises(InterpError, match="noise_var"):
        DataConfig(noise_var=-0.1)


# ---- baselines --------------------------------------------------------------------------------------------
def test_gd_and_debiased_gd_match_their_sums() -> None:
    p = sample_prompts(DataConfig(d=3, L=6), 4, seed=2, dtype=torch.float64)
    for b in range(p.n):
        x, y, xq = p.x[b].numpy(), p.y[b].numpy(), p.xq[b].numpy()
        g = sum(y[i] * x[i] @ xq for i in range(6)) / 6
        xbar = x.mean(axis=0)
        g_deb = sum(y[i] * (x[i] - xbar) @ xq for i in range(6)) / 6
        assert float(gd_predict(p, 0.7)[b]) == pytest.approx(0.7 * g, rel=1e-12)
        assert float(debiased_gd_predict(p, 1.3)[b]) == pytest.approx(1.3 * g_deb, rel=1e-12)


def test_ridge_and_ols_match_closed_forms() -> None:
    from sklearn.linear_model import Ridge

    p = sample_prompts(DataConfig(d=4, L=9), 5, seed=5, dtype=torch.float64)
    lam = bayes_lambda(4, 0.1)
    assert lam == pytest.approx(0.4)
    ridge, ols = ridge_predict(p, lam), ols_predict(p)
    for b in range(p.n):
        x, y, xq = p.x[b].numpy(), p.y[b].numpy(), p.xq[b].numpy()
        beta = np.linalg.solve(x.T @ x + lam * np.eye(4), x.T @ y)
        assert float(ridge[b]) == pytest.approx(xq @ beta, rel=1e-10)
        sk = Ridge(alpha=lam, fit_intercept=False).fit(x, y)
        assert float(ridge[b]) == pytest.approx(float(sk.predict(xq[None])[0]), rel=1e-8)
        assert float(ols[b]) == pytest.approx(xq @ np.linalg.lstsq(x, y, rcond=None)[0], rel=1e-10)


def test_bayes_ridge_beats_other_penalties_and_gd_step_matches_theory() -> None:
    # Short prompts and large noise make the penalty matter: lambda = noise_var * d = 2.5 is Bayes-optimal.
    cfg = DataConfig(d=5, L=8, noise_var=0.5)
    assert bayes_lambda(5, 0.5) == pytest.approx(2.5)
    p = sample_prompts(cfg, 8000, seed=11, dtype=torch.float64)
    mse = {lam: float(((ridge_predict(p, lam) - p.yq) ** 2).mean()) for lam in (0.5, 2.5, 12.5)}
    assert mse[2.5] < mse[0.5] - 0.05 and mse[2.5] < mse[12.5] - 0.05
    assert float(((ols_predict(p) - p.yq) ** 2).mean()) > mse[0.5]
    # The fitted best step of one-step GD converges to the closed-form optimum L / (L + d + 1 + noise_var * d).
    for d, L, noise in ((5, 40, 0.1), (5, 8, 0.5)):
        q = sample_prompts(DataConfig(d=d, L=L, noise_var=noise), 20_000, seed=12, dtype=torch.float64)
        assert fit_scale(gd_feature(q), q.yq) == pytest.approx(optimal_gd_step(d, L, noise), abs=0.02)


def test_pattern_predictor_equals_a_model_with_planted_patterns() -> None:
    omega, mu = [0.15, -0.15, 0.3], [2.0, -2.0, 0.5]
    model = _planted(omega, mu, d=4)
    p = sample_prompts(DataConfig(d=4, L=12), 64, seed=6, dtype=torch.float64)
    torch.testing.assert_close(model_predict(model, p), pattern_predict(p, omega, mu), rtol=1e-12, atol=1e-12)


def test_paired_heads_implement_debiased_gd_with_c() -> None:
    """Small omega, zero-sum mu: the model is c * debiased GD to first order, c = sum_h omega_h mu_h."""
    omega, mu = [0.01, -0.01], [40.0, -40.0]
    model = _planted(omega, mu, d=5)
    p = sample_prompts(DataConfig(d=5, L=40), 2000, seed=7, dtype=torch.float64)
    c = pattern_summary(model.kq.detach(), model.ov.detach())["c"]
    assert c == pytest.approx(0.8)
    pred, deb = model_predict(model, p), debiased_gd_predict(p, c)
    assert float((pred - deb).norm() / deb.norm()) < 0.02
    plain = gd_predict(p, c)  # the un-debiased GD predictor is further away
    assert float((pred - plain).norm()) > 3 * float((pred - deb).norm())
    assert fit_scale(debiased_gd_feature(p), pred) == pytest.approx(0.8, rel=0.02)


# ---- pattern metrics ----------------------------------------------------------------------------------------
def test_patterns_score_one_on_exact_patterns() -> None:
    model = _planted([0.13, -0.13, 0.2, -0.2], [3.45, -3.45, 1.0, -1.0], d=5)
    with torch.no_grad():
        model.kq[:, :, -1] = 7.0  # the query's y slot is always 0: these entries must not count
        model.ov[:, :-1, :] = 5.0  # rows that never reach the prediction must not count either
    kq, ov = model.kq.detach(), model.ov.detach()
    table = head_patterns(kq, ov)
    for column in ("kq_diag_share", "kq_homogeneity", "ov_last_share", "kq_xblock_share"):
        np.testing.assert_allclose(table[column], 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["kq_diag_rel_var"], 0.0, atol=1e-12)
    np.testing.assert_allclose(table["omega"], [0.13, -0.13, 0.2, -0.2], atol=1e-12)
    np.testing.assert_allclose(table["mu"], [3.45, -3.45, 1.0, -1.0], atol=1e-12)
    summary = pattern_summary(kq, ov)
    assert summary["c"] == pytest.approx(2 * 0.13 * 3.45 + 2 * 0.2)
    assert summary["zero_sum_residual"] == pytest.approx(0.0, abs=1e-12)
    assert summary["sign_consistency"] == pytest.approx(1.0)
    assert (summary["n_positive"], summary["n_negative"], summary["n_active"]) == (2, 2, 4)


def test_patterns_score_less_on_random_and_broken_matrices() -> None:
    gen = torch.Generator().manual_seed(0)
    kq, ov = torch.randn(6, 6, 6, generator=gen), torch.randn(6, 6, 6, generator=gen)
    table = head_patterns(kq, ov)
    for column in ("kq_diag_share", "kq_homogeneity", "ov_last_share"):
        assert (table[column] < 0.99).all(), column
    assert table["kq_diag_share"].max() < 0.9 and table["ov_last_share"].max() < 0.9
    summary = pattern_summary(kq, ov)
    assert summary["zero_sum_residual"] > 0 and summary["sign_consistency"] < 1
    # Diagonal but uneven: diagonal share stays 1, homogeneity drops.
    uneven = torch.zeros(1, 3, 3)
    uneven[0, :2, :2] = torch.diag(torch.tensor([1.0, 3.0]))
    row = head_patterns(uneven, torch.ones(1, 3, 3)).iloc[0]
    assert row.kq_diag_share == pytest.approx(1.0) and row.kq_homogeneity < 0.95
    assert row.kq_diag_rel_var == pytest.approx(0.25)  # diag (1, 3): var 1 / mean^2 4
    assert row.kq_homogeneity == pytest.approx(1 / math.sqrt(1.25))
    # Same-sign heads: nothing cancels the bias term.
    same = _planted([0.2, 0.2], [1.0, 2.0], d=3)
    s = pattern_summary(same.kq.detach(), same.ov.detach())
    assert s["zero_sum_residual"] == pytest.approx(1.0) and (s["n_positive"], s["n_negative"]) == (2, 0)
    with pytest.raises(InterpError, match="n_heads, d\\+1, d\\+1"):
        head_patterns(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


def test_pattern_scores_are_head_scores_that_round_trip(tmp_path) -> None:
    model = _planted([0.1, -0.1], [2.0, -2.0], d=3)
    scores = pattern_scores(model.kq.detach(), model.ov.detach(), "planted", config={"d": 3})
    result = scores["icl-ov-last-share"]
    assert isinstance(result, HeadScores) and (result.n_layers, result.n_heads) == (1, 2)
    assert result["L0H1"] == pytest.approx(1.0) and scores["icl-mu"]["L0H1"] == pytest.approx(-2.0)
    assert result.extras["summary"]["c"] == pytest.approx(0.4)
    assert HeadScores.load(result.save(tmp_path / "ov.json")) == result


# ---- trainer and checkpoints -------------------------------------------------------------------------------
TINY = {"n_heads": 2, "d": 3, "L": 10, "steps": 60, "batch_size": 32, "eval_every": 20, "eval_size": 256}


def test_trainer_is_deterministic_and_resumes_exactly(tmp_path) -> None:
    cfg = TrainConfig(**TINY, checkpoint_every=30, seed=4)
    a = train(cfg, out=tmp_path / "a.pt", progress=False)
    b = train(cfg, progress=False)
    assert torch.equal(a.model.kq, b.model.kq) and torch.equal(a.model.ov, b.model.ov)
    assert [r["eval_mse"] for r in a.curve] == [r["eval_mse"] for r in b.curve]
    other = train(TrainConfig(**TINY, seed=5), progress=False)
    assert not torch.equal(a.model.kq, other.model.kq)
    # Interrupt the same run after its step-30 checkpoint, then resume it: it must end where `a` ended.
    half = tmp_path / "half.pt"
    with pytest.raises(_Stop):
        train(cfg, out=half, progress=False, on_eval=_stop_at(40))
    assert load_checkpoint(half).step == 30
    resumed = train(cfg, out=half, progress=False, resume=True)
    assert torch.equal(resumed.model.kq, a.model.kq) and torch.equal(resumed.model.ov, a.model.ov)
    assert [r["step"] for r in resumed.curve] == [0, 20, 40, 60]
    assert resumed.curve[-1]["eval_mse"] == a.curve[-1]["eval_mse"]


class _Stop(Exception):
    pass


def _stop_at(step: int):
    def callback(row: dict) -> None:
        if row["step"] >= step:
            raise _Stop

    return callback


def test_checkpoint_round_trip_and_clear_errors(tmp_path) -> None:
    cfg = TrainConfig(**TINY)
    result = train(cfg, out=tmp_path / "m.pt", progress=False)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.name == "m" and ckpt.config == cfg and ckpt.step == 60
    assert torch.equal(ckpt.model.kq, result.model.kq) and torch.equal(ckpt.model.ov, result.model.ov)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["arch"] == {"d": 3, "n_heads": 2, "attention": "softmax", "init_std": 0.01}
    assert [r["step"] for r in meta["curve"]] == [0, 20, 40, 60] and meta["train_seconds"] > 0
    with pytest.raises(ResultsFileError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(InterpError, match=r"must end in \.pt"):
        load_checkpoint(tmp_path / "m.json")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.json").write_text(json.dumps(meta))
    with pytest.raises(ResultsFileError, match="Cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "w.pt").write_bytes((tmp_path / "m.pt").read_bytes())
    (tmp_path / "w.json").write_text(json.dumps({**meta, "arch": {**meta["arch"], "n_heads": 3}}))
    with pytest.raises(ResultsFileError, match="does not match its metadata"):
        load_checkpoint(tmp_path / "w.pt")
    (tmp_path / "m.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(ResultsFileError, match="not an interp ICL checkpoint"):
        load_checkpoint(tmp_path / "m.pt")
    with pytest.raises(InterpError, match="lr_min"):
        TrainConfig(lr=1e-3, lr_min=1e-2)
    with pytest.raises(InterpError, match="softmax, linear"):
        TrainConfig.from_strings({"attention": "relu"})


def test_tiny_training_learns_in_context() -> None:
    cfg = TrainConfig(n_heads=2, d=3, L=10, steps=300, batch_size=128, lr=1e-2, eval_every=100, eval_size=2048, seed=1)
    result = train(cfg, progress=False)
    first, last = result.curve[0]["eval_mse"], result.curve[-1]["eval_mse"]
    # Zero-prediction MSE is Var(y_q) = 1 + noise; a model that reads the context must do clearly better.
    assert first > 0.9 and last < 0.7 * first
    p = sample_prompts(cfg.data_config(), 4096, seed=99)
    model_mse = float(((model_predict(result.model, p) - p.yq) ** 2).mean())
    assert model_mse < 0.8


# ---- analysis, lengths, CLI ----------------------------------------------------------------------------------
def test_analyze_and_length_curve(tmp_path) -> None:
    cfg = TrainConfig(**TINY)
    train(cfg, out=tmp_path / "soft.pt", progress=False)
    train(TrainConfig(**{**TINY, "attention": "linear"}), out=tmp_path / "lin.pt", progress=False)
    report = analyze(tmp_path / "soft.pt", [tmp_path / "lin.pt"], n_test=512)
    assert list(report.patterns["label"]) == ["L0H0", "L0H1"]
    names = set(report.mse["predictor"])
    assert {"soft", "lin", "ridge = Bayes-optimal", "OLS", "one-step GD, best step", "debiased GD, best c"} <= names
    assert "pattern model of soft" in names and "pattern model of lin" not in names
    ridge = report.mse.set_index("predictor").loc["ridge = Bayes-optimal", "mse"]
    assert ridge < report.mse.set_index("predictor").loc["zero predictor", "mse"]
    # Debiased GD with a model's c is only listed for heads whose mu's cancel (c=None leaves it out).
    test, fit = (sample_prompts(cfg.data_config(), 64, seed=s, dtype=torch.float64) for s in (0, 1))
    models = {"m": load_checkpoint(tmp_path / "soft.pt").model}
    rows = compare(models, test, fit, cfg.data_config(), c_from={"m": (None, [0.1], [1.0])})["predictor"]
    assert "pattern model of m" in set(rows) and "debiased GD, c of m" not in set(rows)
    rows = compare(models, test, fit, cfg.data_config(), c_from={"m": (0.5, [0.1], [1.0])})["predictor"]
    assert "debiased GD, c of m" in set(rows)
    files = report.save(tmp_path / "out")
    assert all(f.is_file() for f in files)
    assert HeadScores.load(tmp_path / "out" / "scores" / "icl-kq-diag-share.json").model == "soft"
    curve = length_curve({"soft": load_checkpoint(tmp_path / "soft.pt").model}, cfg.data_config(), [5, 20], n=256)
    assert set(curve["L"]) == {5, 20} and len(curve) == 2 * 3
    with pytest.raises(InterpError, match="positive"):
        length_curve({}, cfg.data_config(), [0])


def test_cli_train_analyze_lengths(tmp_path) -> None:
    from interp.cli import app

    runner = CliRunner()
    ckpt = tmp_path / "cli.pt"
    sets = ["--set", "d=3", "--set", "L=10", "--set", "batch_size=32", "--set", "eval_every=20"]
    res = runner.invoke(app, ["icl", "train", "--out", str(ckpt), "--heads", "2", "--steps", "40", *sets])
    assert res.exit_code == 0, res.output
    assert ckpt.is_file() and "eval MSE" in res.output
    res = runner.invoke(app, ["icl", "train", "--out", str(ckpt), "--steps", "40", *sets])
    assert res.exit_code == 2 and "--resume" in res.output  # never overwrite a checkpoint silently
    res = runner.invoke(app, ["icl", "analyze", str(ckpt), "--n-test", "256", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "kq_diag_share" in res.output and "ridge = Bayes-optimal" in res.output
    assert (tmp_path / "a" / "patterns.csv").is_file() and (tmp_path / "a" / "matrices.html").is_file()
    res = runner.invoke(app, ["icl", "lengths", str(ckpt), "--lengths", "5,20", "--n", "128"])
    assert res.exit_code == 0 and "Test MSE vs prompt length" in res.output
    res = runner.invoke(app, ["icl", "analyze", str(tmp_path / "nope.pt")])
    assert res.exit_code == 1 and "does not exist" in res.output  # 1: a file problem, 2: a usage error
    res = runner.invoke(app, ["icl", "train", "--out", str(tmp_path / "x.pt"), "--set", "lr=-1"])
    assert res.exit_code == 2 and "lr" in res.output


def test_static_figures_write_pngs(tmp_path) -> None:
    from interp.lines.icl.figures import plot_length_curve, plot_matrices, plot_training_curves

    model = _planted([0.2, -0.2], [1.0, -1.0], d=3)
    plot_matrices(model.kq.detach().numpy(), model.ov.detach().numpy(), "planted", tmp_path / "m.png")
    curve = [{"step": 0, "eval_mse": 1.0}, {"step": 10, "eval_mse": 0.5}]
    plot_training_curves({"run": curve}, {"ridge": 0.2}, tmp_path / "c.png")
    frame = pd.DataFrame({"L": [5, 10, 5, 10], "predictor": ["a", "a", "b", "b"], "mse": [1.0, 0.5, 0.8, 0.4]})
    plot_length_curve(frame, 5, tmp_path / "l.png")
    for name in ("m", "c", "l"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
