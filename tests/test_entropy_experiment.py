"""The LayerNorm-free experiment at tiny size: it runs, is seeded, and writes what docs/entropy.md shows."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from interp.cli import app
from interp.core.errors import InterpError
from interp.core.results import HeadScores
from interp.lines.entropy.experiment import (
    VARIANTS,
    CharData,
    ExperimentConfig,
    _train_in_worker,
    run_experiment,
    train_variant,
)
from interp.lines.entropy.model import GPT, GPTConfig
from interp.lines.entropy.report import EntropyReport


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Small training steps on a shared 2-core machine run many times faster on one thread (no OpenMP
    # oversubscription); run_experiment sets this itself, train_variant does not.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> CharData:
    return CharData.load()


def test_corpus_is_bundled_and_split(data: CharData) -> None:
    assert len(data.vocab) == 76 and "\n" in data.vocab
    assert len(data.train) + len(data.val) == 1_151_183
    assert len(data.val) == pytest.approx(0.1 * 1_151_183, abs=1)
    x, y = data.val_windows(4, 16)
    assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])


def test_variants_differ_only_in_their_switches() -> None:
    base = GPTConfig(vocab_size=10, n_layer=2, n_head=2, d_model=8, n_ctx=8)
    torch.manual_seed(0)
    std = GPT(base)
    torch.manual_seed(0)
    noln = GPT(GPTConfig(**{**base.to_dict(), "layernorm": False, "activation": "relu"}))
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in noln.modules())
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in std.modules()) == 5  # 2 per block + final
    assert isinstance(noln.blocks[0].act, torch.nn.ReLU)
    shared = {k: v for k, v in std.state_dict().items() if k in noln.state_dict()}
    assert shared and all(torch.equal(v, noln.state_dict()[k]) for k, v in shared.items())  # same init
    logits, patterns = std(torch.randint(0, 10, (3, 8)))
    assert logits.shape == (3, 8, 10) and len(patterns) == 2 and patterns[0].shape == (3, 2, 8, 8)
    torch.testing.assert_close(patterns[1].sum(-1), torch.ones(3, 2, 8))
    assert torch.all(patterns[0].triu(1) == 0)  # causal


def test_tiny_experiment_writes_results(tmp_path, data: CharData) -> None:
    record = run_experiment(ExperimentConfig.tiny(), tmp_path, progress=False)
    assert [v["variant"] for v in record["variants"]] == list(VARIANTS)
    for v in record["variants"]:
        assert not v["diverged"]
        assert v["val_loss"] < math.log(len(data.vocab))  # learned something in 12 steps
        assert len(v["per_layer"]["frac_overloaded"]) == 2
        result = HeadScores.load(tmp_path / f"{v['variant']}.entropy.json", metric="entropy")
        assert EntropyReport(result).totals()["frac_overloaded"] == pytest.approx(v["frac_overloaded"])
    assert record["theta"].keys() == {"noln-gelu-entreg"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["steps"] == 12 and saved["environment"]["start"]["torch_threads"] == 1
    assert saved["total_cpu_seconds"] > 0 and all(v["cpu_seconds"] > 0 for v in saved["variants"])
    # The regularizer's every option is on record: the released code's defaults.
    assert saved["regularizer"] == {
        "n_layers": 2,
        "n_heads": 2,
        "gamma": 0.2,
        "lam": 1e-5,
        "margin": "hard",
        "thresholds": "raw",
        "share_thresholds": False,
        "context_size": None,
        "per": "row",
        "reduction": "sum",
    }
    png = (tmp_path / "entropy_experiment.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (tmp_path / "results.md").read_text()
    assert all(name in table for name in VARIANTS) and "val loss" in table


def test_training_is_seeded(data: CharData) -> None:
    cfg = ExperimentConfig.tiny(steps=4)
    a, _ = train_variant("noln-gelu-entreg", cfg, data, progress=False)
    b, _ = train_variant("noln-gelu-entreg", cfg, data, progress=False)
    c, _ = train_variant("noln-gelu-entreg", ExperimentConfig.tiny(steps=4, seed=1), data, progress=False)
    assert a.val_loss == b.val_loss and np.array_equal(a.entropy.scores, b.entropy.scores)
    assert a.theta == b.theta and a.theta != [[0.5, 0.5], [0.5, 0.5]]  # the thresholds did learn
    assert c.val_loss != a.val_loss


def test_worker_result_round_trips(data: CharData) -> None:
    """What a worker process sends back (the entropy as a dict: HeadScores do not pickle) rebuilds the same
    result as training in this process. (The full run compared 1 and 2 processes: identical, docs/entropy.md.)"""
    cfg = ExperimentConfig.tiny(steps=3)
    direct, _ = train_variant("noln-gelu-entreg", cfg, data, progress=False)
    sent, entropy = _train_in_worker("noln-gelu-entreg", cfg, data)
    assert sent.entropy is None and entropy is not None
    back = HeadScores.from_dict(entropy)
    assert sent.val_loss == direct.val_loss and sent.theta == direct.theta
    np.testing.assert_array_equal(back.scores, direct.entropy.scores)
    np.testing.assert_array_equal(back.per_prompt, direct.entropy.per_prompt)
    assert back.extras["raw"] == direct.entropy.extras["raw"]


def test_experiment_config_errors() -> None:
    with pytest.raises(InterpError, match="hard, hinge"):
        ExperimentConfig(margin="soft")
    with pytest.raises(InterpError, match="raw, sigmoid"):
        ExperimentConfig(thresholds="tanh")
    with pytest.raises(InterpError, match="workers"):
        ExperimentConfig(workers=0)
    with pytest.raises(InterpError, match="Unknown variant"):
        ExperimentConfig(variants=("standard", "no-attention"))
    with pytest.raises(InterpError, match="steps"):
        ExperimentConfig(steps=0)
    with pytest.raises(InterpError, match="does not exist"):
        CharData.load("/nonexistent/corpus.txt")


def test_cli_experiment_tiny(tmp_path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "entropy",
            "experiment",
            "--size",
            "tiny",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--set",
            "variants=standard,noln-relu",
            "--set",
            "steps=3",
        ],
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [v["variant"] for v in saved["variants"]] == ["standard", "noln-relu"]
    bad = CliRunner().invoke(app, ["entropy", "experiment", "--size", "huge"])
    assert bad.exit_code == 2 and "default, tiny" in bad.output
