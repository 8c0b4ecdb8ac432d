import json
import math

import numpy as np
import pytest

from interp.core.errors import ResultsFileError
from interp.core.results import HeadScores


def make(scores=None, **kw):
    if scores is None:
        scores = np.array([[0.5, np.nan, 0.1], [2.0, -1.0, 1.0 / 3.0]])
    return HeadScores(
        scores=scores, metric="m", model="tiny", config={"kind": "zero", "n": [1, 2]}, provenance={"seed": 0}, **kw
    )


def test_roundtrip_is_identical(tmp_path):
    result = make(per_prompt=np.arange(12, dtype=float).reshape(2, 2, 3), extras={"steps": [{"head": "L0H1"}]})
    path = result.save(tmp_path / "r.json")
    loaded = HeadScores.load(path)
    assert loaded == result
    assert np.isnan(loaded.scores[0, 1])
    assert loaded.scores[1, 2] == 1.0 / 3.0  # floats survive exactly
    data = json.loads(path.read_text())
    for key in ("metric", "model", "n_layers", "n_heads", "scores", "config", "provenance"):
        assert key in data
    assert data["scores"][0][1] is None


def test_is_immutable():
    result = make()
    with pytest.raises(ValueError):
        result.scores[0, 0] = 1.0
    with pytest.raises(AttributeError):
        result.metric = "other"
    with pytest.raises(TypeError):
        result.config["kind"] = "mean"


def test_frame_top_and_lookup():
    result = make()
    frame = result.to_frame()
    assert list(frame.columns) == ["layer", "head", "label", "score"]
    assert len(frame) == 6 and frame.label.tolist()[:3] == ["L0H0", "L0H1", "L0H2"]
    top = result.top(2)
    assert top.label.tolist() == ["L1H0", "L0H0"]
    assert result.top(10).shape[0] == 5  # NaN left out
    assert result.top(1, ascending=True).label.tolist() == ["L1H1"]
    assert result["L1H0"] == 2.0
    with pytest.raises(ValueError):
        result.top(0)


def test_heatmap_hover_shows_label_and_value():
    fig = make().heatmap()
    trace = fig.data[0]
    assert trace.customdata[1][0] == "L1H0"
    assert "%{customdata}" in trace.hovertemplate and "%{z" in trace.hovertemplate
    assert trace.z[0][1] is None and trace.z[1][0] == 2.0


def test_rank_agreement():
    a = make(np.arange(12, dtype=float).reshape(3, 4))
    assert a.rank_agreement(a, k=3) == {"spearman": pytest.approx(1.0), "top3_overlap": 1.0}
    b = make(-np.arange(12, dtype=float).reshape(3, 4))
    assert a.rank_agreement(b, k=3)["spearman"] == pytest.approx(-1.0)


def test_unserializable_config_fails_at_construction():
    with pytest.raises(TypeError, match="JSON-serializable"):
        HeadScores(scores=np.zeros((1, 1)), metric="m", model="x", config={"f": object()})
    with pytest.raises(TypeError):
        HeadScores(scores=np.zeros((1, 1)), metric="m", model="x", config={"bad": math.nan})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"metric": "m"}', "missing key"),
        (None, "rows"),  # filled below: wrong shape
        (None, "expected a number"),
    ],
)
def test_corrupt_files_give_clear_errors(tmp_path, content, message):
    good = make().to_dict()
    if content is None and message == "rows":
        good["scores"] = good["scores"][:1]
        content = json.dumps(good)
    elif content is None:
        good["scores"][0][0] = "high"
        content = json.dumps(good)
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultsFileError, match=message):
        HeadScores.load(path)


def test_missing_and_mismatched_files(tmp_path):
    with pytest.raises(ResultsFileError, match="does not exist"):
        HeadScores.load(tmp_path / "nope.json")
    path = make().save(tmp_path / "r.json")
    with pytest.raises(ResultsFileError, match="metric"):
        HeadScores.load(path, metric="ablation-kl")
    with pytest.raises(ResultsFileError, match="model"):
        HeadScores.load(path, model="default")
    with pytest.raises(ResultsFileError, match=".json"):
        make().save(tmp_path / "r.csv")


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = make().save(tmp_path / "r.json")
    before = path.read_text()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        make(np.ones((2, 3))).save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
