"""The collapse/overload report and the `interp entropy` / `interp scan entropy` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.core.errors import InterpError
from interp.core.results import HeadScores
from interp.lines.entropy.report import QUARTILES, EntropyReport, Thresholds, classify

# 3 layers x 4 heads of normalized entropy with known classes at the default thresholds (0.1, 0.75).
NORM = np.array(
    [
        [0.95, 0.80, 0.76, 0.50],  # 3 overloaded (0.76 > 0.75), 1 normal
        [0.75, 0.10, 0.40, 0.09],  # boundaries are not crossed: 0.75 and 0.10 are normal; 0.09 collapsed
        [0.01, 0.05, 0.30, 0.20],  # 2 collapsed
    ]
)


def _result(norm: np.ndarray = NORM) -> HeadScores:
    raw = norm * np.log(50.0)
    return HeadScores(
        scores=norm,
        metric="entropy",
        model="planted",
        extras={"value": "normalized", "raw": raw.tolist(), "normalized": norm.tolist(), "rows": 10},
    )


def test_classes_and_per_layer_counts() -> None:
    rep = EntropyReport(_result())
    assert rep.classes.tolist() == [
        ["overloaded", "overloaded", "overloaded", "normal"],
        ["normal", "normal", "normal", "collapsed"],
        ["collapsed", "collapsed", "normal", "normal"],
    ]
    table = rep.per_layer()
    assert table["overloaded"].tolist() == [3, 0, 0]
    assert table["collapsed"].tolist() == [0, 1, 2]
    assert table["normal"].tolist() == [1, 3, 2]
    assert table["frac_overloaded"].tolist() == [0.75, 0.0, 0.0]
    np.testing.assert_allclose(table["mean_normalized"], NORM.mean(1))
    np.testing.assert_allclose(table["mean_raw"], NORM.mean(1) * np.log(50.0))
    totals = rep.totals()
    assert (totals["heads"], totals["overloaded"], totals["collapsed"]) == (12, 3, 3)
    assert totals["frac_overloaded"] == 0.25
    heads = rep.heads()
    assert heads.loc[heads.label == "L2H0", "class"].item() == "collapsed"


def test_flagged_heads_are_the_collapsed_then_the_overloaded_most_extreme_first() -> None:
    flagged = EntropyReport(_result()).flagged()
    assert flagged["label"].tolist() == ["L2H0", "L2H1", "L1H3", "L0H0", "L0H1", "L0H2"]
    assert flagged["class"].tolist() == ["collapsed"] * 3 + ["overloaded"] * 3
    np.testing.assert_allclose(flagged["normalized"], [0.01, 0.05, 0.09, 0.95, 0.80, 0.76])
    assert EntropyReport(_result(), overload=0.9).flagged()["label"].tolist()[3:] == ["L0H0"]


def test_thresholds_are_configurable_and_checked() -> None:
    rep = EntropyReport(_result(), collapse=0.2, overload=0.9)
    assert rep.totals()["overloaded"] == 1 and rep.totals()["collapsed"] == 4
    with pytest.raises(InterpError, match="collapse < overload"):
        Thresholds(collapse=0.8, overload=0.5)
    with pytest.raises(InterpError, match="collapse < overload"):
        EntropyReport(_result(), overload=1.5)
    with pytest.raises(InterpError, match='metric "entropy"'):
        EntropyReport(HeadScores(NORM, metric="ablation-kl", model="m"))


def test_unscored_heads_have_no_class() -> None:
    norm = NORM.copy()
    norm[0, 0] = np.nan
    classes = classify(norm)
    assert classes[0, 0] == "" and classes[0, 1] == "overloaded"


def test_quartiles_follow_the_paper_bins() -> None:
    q = EntropyReport(_result()).quartiles()
    assert list(q.columns) == ["layer", *QUARTILES]
    np.testing.assert_allclose(q[list(QUARTILES)].sum(1), 1.0)
    assert q.loc[0, "[0.75, 1]"] == 0.75  # 0.95, 0.80, 0.76
    assert q.loc[0, "[0.5, 0.75)"] == 0.25  # 0.50
    assert q.loc[1, "[0.75, 1]"] == 0.25  # 0.75 itself falls in the top bin


def test_plots() -> None:
    rep = EntropyReport(_result())
    heat = rep.heatmap()
    np.testing.assert_allclose(np.array(heat.data[0].z, dtype=float), NORM)
    assert heat.data[0].text[0][0] == "O" and heat.data[0].text[2][0] == "C" and heat.data[0].text[0][3] == ""
    dist = rep.distribution()
    assert [t.name for t in dist.data] == ["collapsed", "normal", "overloaded", "per layer"]
    assert sorted(dist.data[2].y) == sorted([0.95, 0.80, 0.76])
    bars = rep.class_bars()
    assert list(bars.data[2].y) == [0.75, 0.0, 0.0]


# ---- command line ---------------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_scan_and_report(tmp_path) -> None:
    out = tmp_path / "e.json"
    res = runner.invoke(
        app, ["scan", "entropy", "--model", "tiny-gpt2", "--prompts", "short", "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert HeadScores.load(out, metric="entropy").scores.shape == (3, 4)
    csv, heads_csv, html = tmp_path / "layers.csv", tmp_path / "heads.csv", tmp_path / "r.html"
    args = ["entropy", "report", str(out), "--overload", "0.8", "--csv", str(csv), "--heads-csv", str(heads_csv)]
    res = runner.invoke(app, [*args, "--html", str(html)])
    assert res.exit_code == 0, res.output
    assert "overload > 0.8" in res.output and "All 12 heads" in res.output
    flagged = EntropyReport(HeadScores.load(out), overload=0.8).flagged()  # the per-head classes, printed
    for klass in ("collapsed", "overloaded"):
        part = flagged[flagged["class"] == klass]
        listed = ", ".join(f"{r.label} {r.normalized:.3f}" for r in part.itertuples()) or "none"
        assert f"{klass.capitalize()} heads ({len(part)}): {listed}" in " ".join(res.output.split())
    assert csv.read_text().splitlines()[0].startswith("layer,heads,collapsed,normal,overloaded")
    assert len(heads_csv.read_text().splitlines()) == 13
    assert html.read_text().count("plotly-graph-div") >= 3


def test_cli_report_errors(tmp_path) -> None:
    res = runner.invoke(app, ["entropy", "report", str(tmp_path / "missing.json")])
    assert res.exit_code == 1 and "does not exist" in res.output  # 1: a file problem, 2: a usage error
    bad = tmp_path / "kl.json"
    HeadScores(NORM, metric="ablation-kl", model="m").save(bad)
    res = runner.invoke(app, ["entropy", "report", str(bad)])
    assert res.exit_code == 1 and 'metric "entropy"' in res.output
    good = tmp_path / "e.json"
    _result().save(good)
    res = runner.invoke(app, ["entropy", "report", str(good)])
    out = " ".join(res.output.split())
    assert "Collapsed heads (3): L2H0 0.010, L2H1 0.050, L1H3 0.090" in out
    assert "Overloaded heads (3): L0H0 0.950, L0H1 0.800, L0H2 0.760" in out
    res = runner.invoke(app, ["entropy", "report", str(good), "--collapse", "0.9"])
    assert res.exit_code == 2 and "collapse < overload" in res.output
    res = runner.invoke(app, ["scan", "entropy", "--model", "tiny-gpt2", "--set", "value=bits"])
    assert res.exit_code == 2 and "normalized, raw" in res.output
    assert json.loads(good.read_text())["metric"] == "entropy"  # a failed command never touches results
