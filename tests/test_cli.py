"""The command line on tiny models: output, files and one-line errors (exit status 1 or 2, no traceback)."""

import json

import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.core.results import HeadScores

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\nhello world\n\nthe cat sat\nwhat is this?\n")
    return path


def test_models_lists_names_and_install_state():
    code, out = run("models")
    assert code == 0
    for name in ("smollm2-135m-instruct", "default", "tiny-llama", "tiny-gpt2"):
        assert name in out


def test_metrics_lists_ablation_kl():
    code, out = run("metrics")
    assert code == 0 and "ablation-kl" in out and "kind" in out


def test_scan_writes_a_file_that_loads_back(tmp_path, prompts_file):
    out_file = tmp_path / "r.json"
    code, out = run(
        "scan",
        "ablation-kl",
        "--model",
        "tiny-llama",
        "--prompts",
        str(prompts_file),
        "--out",
        str(out_file),
        "--top",
        "3",
        "--no-progress",
    )
    assert code == 0, out
    result = HeadScores.load(out_file)
    assert result.metric == "ablation-kl" and result.provenance["n_prompts"] == 3
    best = result.top(1).label.iloc[0]
    assert best in out and "Top 3 heads" in out
    assert json.loads(out_file.read_text())["n_layers"] == 3


def test_scan_jsonl_prompts_and_options(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hello"}\n{"prompt": "world peace"}\n')
    out_file = tmp_path / "r.json"
    code, out = run(
        "scan",
        "ablation-kl",
        "-m",
        "tiny-gpt2",
        "-p",
        str(path),
        "-o",
        str(out_file),
        "--set",
        "kind=scale",
        "--set",
        "alpha=0.5",
        "--no-progress",
    )
    assert code == 0, out
    assert HeadScores.load(out_file).config["kind"] == "scale"


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [  # status 2: the command line is wrong; 1: something it points at (a file, a model) is
        (["scan", "ablation-kll", "-m", "tiny-llama"], 2, 'Did you mean "ablation-kl"'),
        (["scan", "ablation-kl", "-m", "tiny-lama"], 2, 'Did you mean "tiny-llama"'),
        (["scan", "ablation-kl", "-m", "tiny-llama", "--set", "kind=shuffle"], 2, "choose one of"),
        (["scan", "ablation-kl", "-m", "tiny-llama", "--set", "colour=red"], 2, "Unknown option"),
        (["scan", "ablation-kl", "-m", "tiny-llama", "-p", "missing.txt"], 1, "does not exist"),
        (["ablate", "-m", "tiny-llama", "--heads", "L9H0", "--prompt", "hi"], 2, "3 layers"),
        (["ablate", "-m", "tiny-llama", "--heads", "L1X", "--prompt", "hi"], 2, "L<layer>H<head>"),
        (["ablate", "-m", "tiny-llama", "--heads", "L1H0", "--prompt", "  "], 1, "empty"),
    ],
)
def test_bad_input_gives_one_clear_line(args, status, message):
    code, out = run(*args)
    assert code == status
    assert message in out
    assert "Traceback" not in out


def test_empty_prompts_file_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# only a comment\n\n")
    code, out = run("scan", "ablation-kl", "-m", "tiny-llama", "-p", str(path))
    assert code == 1 and "holds no prompts" in out


def test_show_and_corrupt_results(tmp_path, prompts_file):
    good = tmp_path / "r.json"
    run("scan", "ablation-kl", "-m", "tiny-llama", "-p", str(prompts_file), "-o", str(good), "--no-progress")
    html, csv = tmp_path / "r.html", tmp_path / "r.csv"
    code, out = run("show", str(good), "--html", str(html), "--csv", str(csv))
    assert code == 0 and html.read_text().count("plotly") > 0 and csv.read_text().startswith("layer,head,label,score")
    bad = tmp_path / "bad.json"
    bad.write_text('{"metric": "ablation-kl", "scores": [[1, 2]')
    code, out = run("show", str(bad))
    assert code == 1 and "corrupt" in out


def test_ablate_prints_both_generations(prompts_file):
    code, out = run(
        "ablate",
        "-m",
        "tiny-llama",
        "--heads",
        "L1H0,L2H3",
        "--kind",
        "scale",
        "--alpha",
        "0",
        "--prompt",
        "hello",
        "--max-new-tokens",
        "4",
    )
    assert code == 0, out
    assert "base" in out and "intervened" in out and "scale x0 on L1H0,L2H3" in out
    assert "KL base||intervened" in out


def test_scan_labels_shortcut(tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [{"prompt": f"good thing number {i}", "label": "a"} for i in range(6)]
    rows += [{"prompt": f"bad item {i} here", "label": "b"} for i in range(6)]
    labels.write_text("\n".join(json.dumps(r) for r in rows))
    out_file = tmp_path / "p.json"
    code, out = run(
        "scan",
        "probe",
        "-m",
        "tiny-llama",
        "--labels",
        str(labels),
        "--set",
        "folds=2",
        "--set",
        "control=shuffled",
        "-o",
        str(out_file),
        "--no-progress",
    )
    assert code == 0, out
    assert HeadScores.load(out_file).config["labels"] == str(labels)
    code, out = run("scan", "ablation-kl", "-m", "tiny-llama", "--labels", str(labels))
    assert code == 2 and "takes no --labels" in out
