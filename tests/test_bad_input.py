"""The bad-input suite (issue 19): hostile input to the CLI and the library never ends in a traceback, never
loses finished work, and is refused before the work starts.

Table-driven: each CLI case is a command, the exit status it must end with (2: the command line is wrong,
1: something it points at is, 0: it works) and a phrase of its one-line error; no case may print a traceback.
Most run in-process (typer's CliRunner) on the tiny random models; `SUBPROCESS_CASES` run as real processes.
The library cases call the API with the same kinds of bad values. Property tests (hypothesis) cover head-label
parsing, prompt files and results files.

Unwritable folders: the tests run as root here, and root may write into a folder whose mode is read-only, so a
chmod alone proves nothing. Two stand-ins instead: a path below a regular FILE (the OS itself refuses it), and
a read-only folder whose os.access answer is patched to "no" (what a non-root user gets; as non-root the
chmod is real and the patch changes nothing).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import interp
import interp.core.validate
from interp.cli import Stopped, app, friendly_errors, run_child, signals_as_exceptions
from interp.core.errors import (
    HeadLabelError,
    InterpError,
    ModelLoadError,
    PromptError,
    ResultsError,
    ResultsFileError,
    UsageError,
)
from interp.core.heads import Head, parse_head, parse_heads
from interp.core.prompts import load_prompts
from interp.core.results import HeadScores
from interp.model.tiny import build_tiny

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-llama"]
SCAN = ["scan", "ablation-kl", *TINY, "--no-progress"]


# ---------------------------------------------------------------------------------------------------------
# Input files, made once for the module
# ---------------------------------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (PIL refuses it as a decompression bomb before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _results(**overrides: Any) -> str:
    data = {
        "format_version": 1,
        "metric": "ablation-kl",
        "model": "m",
        "n_layers": 2,
        "n_heads": 2,
        "scores": [[0.1, 0.2], [0.3, None]],
        "config": {},
        "provenance": {},
    }
    data.update(overrides)
    return json.dumps(data)


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad-inputs")
    f: dict[str, Path] = {}
    f["afile"] = d / "afile.txt"
    f["afile"].write_text("just a file\n")
    f["adir"] = d / "adir"
    f["adir"].mkdir()
    # results files
    good = HeadScores(np.array([[0.5, 0.1], [0.2, np.nan]]), metric="ablation-kl", model="m")
    f["good"] = good.save(d / "good.json")
    f["markup_results"] = HeadScores(np.ones((1, 2)), metric="ablation-kl", model="[/]x[bold red]y").save(
        d / "markup.json"
    )
    texts = {
        "nan": _results().replace("0.2", "NaN"),
        "inf": _results().replace("0.2", "Infinity"),
        "neginf": _results().replace("0.2", "-Infinity"),
        "huge": _results().replace("0.2", "1e999"),
        "bool_layers": _results(n_layers=True),
        "deep": _results(scores="DEEP").replace('"DEEP"', "[" * 100_000 + "]" * 100_000),
        "notjson": "{not json",
        "list": "[1, 2, 3]",
        "empty": "",
        "str_score": _results(scores=[[0.1, "high"], [0.3, None]]),
        "wrong_shape": _results(scores=[[0.1, 0.2]]),
        "extras_list": _results(extras=[1, 2]),
    }
    for name, text in texts.items():
        f[name] = d / f"{name}.json"
        f[name].write_text(text)
    f["notutf8"] = d / "notutf8.json"
    f["notutf8"].write_bytes(b"\xff\xfe\x00garbage")
    f["dirjson"] = d / "dir.json"
    f["dirjson"].mkdir()
    # prompt files
    f["p_notutf8"] = d / "p_notutf8.txt"
    f["p_notutf8"].write_bytes(b"hello\n\xff\xfe world\n")
    f["p_empty"] = d / "p_empty.txt"
    f["p_empty"].write_text("# nothing but a comment\n\n")
    f["p_badjsonl"] = d / "p_bad.jsonl"
    f["p_badjsonl"].write_text('{"prompt": "ok"}\n{"prompt": \n')
    f["p_deepjsonl"] = d / "p_deep.jsonl"
    f["p_deepjsonl"].write_text("[" * 100_000 + "]" * 100_000 + "\n")
    f["fifo"] = d / "prompts.fifo"
    os.mkfifo(f["fifo"])
    f["labels_bad"] = d / "labels_bad.jsonl"
    f["labels_bad"].write_text('{"prompt": "a", "label": "x"}\n{broken\n')
    # model directories
    model = d / "model"
    hf, tok = build_tiny("llama")
    hf.save_pretrained(model, safe_serialization=True)
    tok.save_pretrained(model)
    f["markup_model"] = _copy_model(model, d / "a[" / "]b")  # the path's text contains "[/]"
    trunc = _copy_model(model, d / "m_trunc")
    weights = next(trunc.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    f["m_trunc"] = trunc
    f["m_cfg_list"] = _copy_model(model, d / "m_cfg_list")
    (f["m_cfg_list"] / "config.json").write_text("[1, 2]")
    f["m_cfg_bytes"] = _copy_model(model, d / "m_cfg_bytes")
    (f["m_cfg_bytes"] / "config.json").write_bytes(b'{"model_type": "\xff\xfe"}')
    f["m_cfg_bad"] = _copy_model(model, d / "m_cfg_bad")
    (f["m_cfg_bad"] / "config.json").write_text('{"model_type": ')
    f["m_arch_str"] = _copy_model(model, d / "m_arch_str")
    config = json.loads((model / "config.json").read_text())
    (f["m_arch_str"] / "config.json").write_text(json.dumps({**config, "architectures": "LlamaForCausalLM"}))
    f["m_pickled"] = _copy_model(model, d / "m_pickled")
    for w in f["m_pickled"].glob("*.safetensors"):
        w.unlink()
    (f["m_pickled"] / "pytorch_model.bin").write_bytes(b"not loaded")
    f["bogus_gguf"] = d / "bogus.gguf"
    f["bogus_gguf"].write_bytes(b"GGUF" + os.urandom(256))
    # images
    f["big_png"] = d / "big.png"
    f["big_png"].write_bytes(_png_header_only(20_000, 20_000))
    f["bad_png"] = d / "bad.png"
    f["bad_png"].write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    # an ICL checkpoint that is not one
    f["bad_ckpt"] = d / "bad.pt"
    f["bad_ckpt"].write_bytes(os.urandom(64))
    (d / "bad.json").write_text('{"format": "interp-icl-checkpoint", "version": 1}')  # the weights are garbage
    # a sweep checkpoint with a truncated part: a finished run leaves its parts, then one is cut short
    ckpt = d / "sweep-ckpt"
    res = runner.invoke(app, [*SCAN, "--prompt", "hello", "--prompt", "world", "--set", f"checkpoint={ckpt}"])
    assert res.exit_code == 0, res.output
    part = sorted(ckpt.glob("part-*.npz"))[0]
    part.write_bytes(part.read_bytes()[:40])
    f["ckpt_trunc"] = ckpt
    return {k: str(v) for k, v in f.items()}


# ---------------------------------------------------------------------------------------------------------
# The CLI table
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # the class of problem
    args: tuple[str, ...]  # {name} = a file from `files`, {tmp} = this test's own folder
    code: int
    phrase: str
    unwritable: str | None = None  # a folder made read-only (see the module doc)
    env: tuple[tuple[str, str], ...] = ()
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    after: Callable[[Path], None] | None = None  # checks on {tmp} after the command
    own_error: bool = True  # False: typer's own usage error (its box, not our "Error:" line)


def C(kind: str, args: list[str], code: int, phrase: str, **kw: Any) -> Case:
    return Case(kind, tuple(args), code, phrase, **kw)


def _nothing_written(tmp: Path) -> None:
    assert not list(tmp.rglob("*.json")), "an output file was written although the command failed"


def _saved(name: str) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        assert HeadScores.load(tmp / name).n_layers == 3

    return check


def _generate_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    import interp.engine.compare as compare

    monkeypatch.setattr(compare, "generate_pair", lambda *a, **k: ("[/b] base", "[bold red]changed[/]"))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


LOST, MARKUP, COUNTS, NONFINITE, CORRUPT, LEAKS = (
    "finished work lost",
    "user text as markup",
    "silent wrong counts",
    "NaN / infinity",
    "corrupt inputs",
    "leaks",
)
HI = ["--prompt", "hi"]
ICL_TINY = [f"--set={kv}" for kv in ("d=2", "L=4", "batch_size=8", "eval_every=5", "eval_size=16")]


def _assert(condition: bool) -> None:
    assert condition


ASR = ["safety", "asr", "--heads", "L0H1", *TINY, "--no-progress"]

CASES: list[Case] = [
    # -- finished work lost: output paths and print options are checked before the work ---------------------
    C(LOST, [*SCAN, "--top", "0", "--out", "{tmp}/r.json"], 2, "--top must be >= 1", after=_nothing_written),
    C(LOST, [*SCAN, "--top", "-5"], 2, "--top must be >= 1"),
    C(LOST, [*SCAN, "--out", "{adir}"], 1, "is a folder"),
    C(LOST, [*SCAN, "--out", "{afile}/r.json"], 1, "is a file, not a folder"),
    C(LOST, [*SCAN, "--out", "{tmp}/ro/r.json"], 1, "not writable", unwritable="{tmp}/ro", after=_nothing_written),
    C(LOST, [*SCAN, "--out", "{tmp}/ro/new/sub/r.json"], 1, "not writable", unwritable="{tmp}/ro"),
    C(LOST, [*SCAN, "--out", "{tmp}/r.txt"], 2, "must be a .json path"),
    C(LOST, [*SCAN, "--set", "checkpoint={afile}"], 1, "is a file; give a folder"),
    C(LOST, [*SCAN, "--set", "checkpoint={tmp}/ro/ck"], 1, "not writable", unwritable="{tmp}/ro"),
    C(LOST, ["show", "{good}", "--top", "0"], 2, "--top must be >= 1"),
    C(LOST, ["show", "{good}", "--html", "{adir}"], 1, "is a folder"),
    C(LOST, ["show", "{good}", "--csv", "{afile}/t.csv"], 1, "is a file, not a folder"),
    C(LOST, ["show", "{good}", "--html", "{tmp}/ro/h.html"], 1, "not writable", unwritable="{tmp}/ro"),
    C(LOST, ["entropy", "report", "{good}", "--html", "{adir}"], 1, "is a folder"),
    C(LOST, ["entropy", "report", "{good}", "--csv", "{tmp}/ro/c.csv"], 1, "not writable", unwritable="{tmp}/ro"),
    C(LOST, ["entropy", "report", "{good}", "--heads-csv", "{afile}/h.csv"], 1, "is a file, not a folder"),
    C(LOST, ["entropy", "experiment", "--size", "tiny", "--out", "{afile}"], 1, "is a file; give a folder"),
    C(LOST, ["safety", "sahara", *TINY, "--out", "{adir}"], 1, "is a folder"),
    C(LOST, [*ASR, "--out-dir", "{afile}"], 1, "is a file; give a folder"),
    C(LOST, [*ASR, "--out-dir", "{tmp}/ro/asr"], 1, "not writable", unwritable="{tmp}/ro"),
    C(LOST, ["safety", "run", *TINY, "--out", "{afile}"], 1, "is a file; give a folder"),
    C(LOST, ["rfa", "experiment", "--out", "{afile}"], 1, "is a file; give a folder"),
    C(LOST, ["icl", "train", "--out", "{adir}", "--steps", "5"], 1, "is a folder"),
    C(LOST, ["icl", "train", "--out", "{tmp}/x.json", "--steps", "5"], 2, "must be a .pt path"),
    C(LOST, ["icl", "analyze", "{bad_ckpt}", "--out", "{afile}"], 1, "is a file; give a folder"),
    C(LOST, ["icl", "lengths", "{bad_ckpt}", "--csv", "{adir}"], 1, "is a folder"),
    C(LOST, ["probe", *TINY, "--out", "{adir}"], 1, "is a folder"),
    C(LOST, ["ray-sweep", *TINY, "--out", "{adir}"], 1, "is a folder"),
    C(LOST, ["ray-sweep", *TINY, "--checkpoint", "{afile}"], 1, "is a file; give a folder"),
    C(LOST, ["ray-sweep", *TINY, "--top", "0"], 2, "--top must be >= 1"),
    C(LOST, ["scenes", "--out", "{afile}"], 1, "is a file; give a folder"),
    C(LOST, ["vision", "train", "--set", "out={afile}"], 1, "is a file; give a folder"),
    C(LOST, ["vision", "experiment", "--set", "out={afile}"], 1, "is a file; give a folder"),
    # -- user text is never console markup ------------------------------------------------------------------
    C(MARKUP, ["ablate", *TINY, "--heads", "[/x]", *HI], 2, "Cannot parse head label '[/x]'"),
    C(MARKUP, ["ablate", *TINY, "--heads", "[bold red]L1H1", *HI], 2, "'[bold red]L1H1'"),
    C(MARKUP, ["scan", "ablation-kl", "--model", "[/]"], 1, "Model path [/] does not exist"),
    C(MARKUP, ["scan", "ablation-kl", "--model", "x[bold red]y"], 2, 'Unknown model "x[bold red]y"'),
    C(MARKUP, ["scan", "[/x]", *TINY], 2, 'Unknown metric "[/x]"'),
    C(MARKUP, [*SCAN, "--set", "[/x]=1"], 2, '"[/x]"'),
    C(MARKUP, ["show", "{markup_results}"], 0, "ablation-kl ([/]x[bold red]y)"),
    C(MARKUP, ["show", "{tmp}/[/x].json"], 1, "[/x].json does not exist"),
    C(MARKUP, [*SCAN, "--prompts", "{tmp}/[/x].txt"], 1, "[/x].txt does not exist"),
    C(MARKUP, [*SCAN, "--prompt", "[/b] :smile: [bold]", "--out", "{tmp}/r.json"], 0, "Top", after=_saved("r.json")),
    C(
        MARKUP,
        [
            "scan",
            "ablation-kl",
            "--model",
            "{markup_model}",
            "--prompt",
            "hi",
            "--no-progress",
            "--out",
            "{tmp}/r.json",
        ],
        0,
        "a[/]b)",
        after=_saved("r.json"),
    ),
    C(MARKUP, ["ablate", *TINY, "--heads", "L1H1", *HI], 0, "[bold red]changed[/]", patch=_generate_markup),
    C(MARKUP, [*SCAN, "--top", "[/x]"], 2, "valid integer", own_error=False),
    # -- counts: 0 and negative limits are refused, never read as "all" --------------------------------------
    C(COUNTS, [*SCAN, "--limit", "0"], 2, "--limit must be >= 1, got 0"),
    C(COUNTS, [*SCAN, "--limit", "-3"], 2, "--limit must be >= 1, got -3"),
    C(COUNTS, ["safety", "sahara", *TINY, "--limit", "0"], 2, "--limit must be >= 1"),
    C(COUNTS, ["probe", *TINY, "--limit", "0"], 2, "--limit must be >= 1"),
    C(COUNTS, ["ray-sweep", *TINY, "--limit", "-1"], 2, "--limit must be >= 1"),
    C(COUNTS, [*ASR, "--limit", "0"], 2, "--limit must be >= 1"),
    C(COUNTS, [*ASR, "--offset", "-1"], 2, "--offset must be >= 0"),
    C(COUNTS, [*ASR, "--harmless-limit", "0"], 2, "--harmless-limit must be >= 1"),
    C(COUNTS, [*ASR, "--offset", "100000"], 2, "No prompts left"),
    C(COUNTS, [*SCAN, *HI, "--prompts", "short"], 2, "not both"),
    C(COUNTS, ["icl", "lengths", "{bad_ckpt}", "--lengths", "0,5"], 2, "--lengths must be integers >= 1"),
    C(COUNTS, ["icl", "lengths", "{bad_ckpt}", "--n", "0"], 2, "--n must be >= 1"),
    C(COUNTS, ["icl", "train", "--out", "{tmp}/x.pt", "--steps", "0"], 2, "--steps must be >= 1"),
    C(COUNTS, ["scenes", "--out", "{tmp}/s", "--n", "0"], 2, "--n must be >= 1"),
    C(COUNTS, ["ablate", *TINY, "--heads", "L1H1", *HI, "--max-new-tokens", "0"], 2, "--max-new-tokens must be >= 1"),
    C(COUNTS, ["vision", "generate", *TINY, *HI, "--n-images", "-1"], 2, "--n-images must be >= 0"),
    # -- NaN and infinity: refused before the work, in options and in files ----------------------------------
    C(NONFINITE, [*SCAN, "--set", "alpha=inf"], 2, "alpha must be a finite number"),
    C(NONFINITE, [*SCAN, "--set", "alpha=nan"], 2, "alpha must be a finite number"),
    C(NONFINITE, [*SCAN, "--set", "eps=nan"], 2, "eps must be a finite number"),
    C(NONFINITE, [*SCAN, "--set", "checkpoint_every=nan"], 2, "checkpoint_every must be a finite number"),
    C(NONFINITE, [*SCAN, "--set", "checkpoint_every=inf"], 2, "checkpoint_every must be a finite number"),
    C(NONFINITE, [*SCAN, "--set", "kind=scale", "--set", "alpha=1e38"], 2, "alpha must be in [-1e+06, 1e+06]"),
    C(NONFINITE, ["icl", "train", "--out", "{tmp}/x.pt", "--set", "lr=inf"], 2, "lr must be a finite number"),
    C(NONFINITE, ["icl", "train", "--out", "{tmp}/x.pt", "--set", "lr=nan"], 2, "lr must be a finite number"),
    C(
        NONFINITE,
        ["icl", "train", "--out", "{tmp}/d.pt", "--steps", "5", "--no-progress", *ICL_TINY, "--set", "lr=1e30"],
        1,
        "Training diverged: eval MSE is nan",
        after=lambda tmp: _assert((tmp / "d.pt").is_file()),  # the run is kept for inspection
    ),
    C(NONFINITE, ["ablate", *TINY, "--heads", "L1H1", *HI, "--kind", "scale", "--alpha", "inf"], 2, "--alpha must"),
    C(NONFINITE, ["ablate", *TINY, "--heads", "L1H1", *HI, "--kind", "uniform", "--eps", "nan"], 2, "--eps must"),
    C(NONFINITE, ["entropy", "report", "{good}", "--collapse", "nan"], 2, "--collapse must be a finite number"),
    C(NONFINITE, ["show", "{nan}"], 1, "NaN is not valid JSON"),
    C(NONFINITE, ["show", "{inf}"], 1, "Infinity is not valid JSON"),
    C(NONFINITE, ["show", "{neginf}"], 1, "-Infinity is not valid JSON"),
    C(NONFINITE, ["show", "{huge}"], 1, "not a finite number"),
    C(NONFINITE, ["rfa", "experiment", "--out", "{tmp}/r", "--set", "alphas=1,inf"], 2, "must be a finite number"),
    C(NONFINITE, ["vision", "generate", *TINY, *HI, "--vhr", "--alpha", "inf"], 2, "--alpha must be a finite"),
    C(NONFINITE, ["safety", "sahara", *TINY, "--eps", "inf"], 2, "--eps must be a finite number"),
    C(NONFINITE, ["ray-sweep", *TINY, "--kind", "scale", "--alpha", "nan"], 2, "--alpha must be a finite number"),
    C(NONFINITE, ["safety", "run", *TINY, "--out", "{tmp}/s", "--budget-s", "inf"], 2, "--budget-s must be a finite"),
    C(
        COUNTS,
        ["safety", "run", *TINY, "--out", "{tmp}/s", "--stages", "dose", "--dose-ks", "100,200"],
        1,
        "every dose exceeds the model's 12 heads",
    ),
    # -- corrupt or impossible inputs: one line each ---------------------------------------------------------
    C(CORRUPT, ["show", "{notjson}"], 1, "corrupt: not valid JSON"),
    C(CORRUPT, ["show", "{list}"], 1, "expected a JSON object"),
    C(CORRUPT, ["show", "{bool_layers}"], 1, "n_layers and n_heads must be positive integers"),
    C(CORRUPT, ["show", "{deep}"], 1, "nested too deeply"),
    C(CORRUPT, ["show", "{notutf8}"], 1, "not UTF-8"),
    C(CORRUPT, ["show", "{empty}"], 1, "corrupt: not valid JSON"),
    C(CORRUPT, ["show", "{str_score}"], 1, "expected a number or null"),
    C(CORRUPT, ["show", "{wrong_shape}"], 1, "must be a list of 2 rows"),
    C(CORRUPT, ["show", "{extras_list}"], 1, "extras must be a JSON object"),
    C(CORRUPT, ["show", "{dirjson}"], 1, "is a folder"),
    C(CORRUPT, ["show", "/dev/zero"], 1, "not a regular file"),
    C(CORRUPT, [*SCAN, "--prompts", "/dev/zero"], 1, "not a regular file"),
    C(CORRUPT, [*SCAN, "--prompts", "{fifo}"], 1, "not a regular file"),
    C(CORRUPT, [*SCAN, "--prompts", "{p_notutf8}"], 1, "not UTF-8"),
    C(CORRUPT, [*SCAN, "--prompts", "{p_empty}"], 1, "holds no prompts"),
    C(CORRUPT, [*SCAN, "--prompts", "{p_badjsonl}"], 1, "line 2: not valid JSON"),
    C(CORRUPT, [*SCAN, "--prompts", "{p_deepjsonl}"], 1, "nested too deeply"),
    C(CORRUPT, [*SCAN, "--prompts", "{adir}"], 1, "is a folder"),
    C(CORRUPT, ["ablate", *TINY, "--heads", "L1H1", *HI, "--kind", "mean", "--reference", "/dev/zero"], 1, "regular"),
    C(CORRUPT, ["probe", *TINY, "--labels", "{labels_bad}"], 1, "line 2"),
    C(CORRUPT, ["scan", "ablation-kl", "--model", "{m_trunc}"], 1, "is truncated"),
    C(CORRUPT, ["scan", "ablation-kl", "--model", "{m_cfg_list}"], 1, "must hold a JSON object"),
    C(CORRUPT, ["scan", "ablation-kl", "--model", "{m_cfg_bytes}"], 1, "is not UTF-8 text"),
    C(CORRUPT, ["scan", "ablation-kl", "--model", "{m_cfg_bad}"], 1, "is not valid JSON"),
    C(CORRUPT, ["scan", "ablation-kl", "--model", "{m_arch_str}"], 1, '"architectures" must be a list'),
    C(CORRUPT, ["scan", "ablation-kl", "--model", "{m_pickled}"], 1, "pickled weights are not loaded"),
    C(CORRUPT, ["scan", "ablation-kl", "--model", "{afile}"], 1, "not a .gguf file"),
    C(
        CORRUPT,
        ["scan", "ablation-kl", "--model", "{bogus_gguf}"],
        1,
        "Could not read GGUF",
        env=(("INTERP_CACHE_DIR", "{tmp}/cache"),),
    ),
    C(CORRUPT, [*SCAN, "--prompt", "hello", "--prompt", "world", "--set", "checkpoint={ckpt_trunc}"], 1, "delete that"),
    C(CORRUPT, ["ablate", *TINY, "--heads", "L1H1", *HI, "--top-tokens", "100000"], 2, "--top-tokens must be in"),
    C(CORRUPT, ["ablate", *TINY, "--heads", "L1H1", *HI, "--top-tokens", "0"], 2, "--top-tokens must be >= 1"),
    C(CORRUPT, [*SCAN, "--device", "cuda"] if not _cuda() else [*SCAN, "--device", "cuda:999"], 1, "cuda"),
    C(CORRUPT, [*SCAN, "--device", "toaster"], 1, "Unknown device 'toaster'"),
    C(CORRUPT, [*SCAN, "--dtype", "float64"], 2, 'Unknown dtype "float64"'),
    C(CORRUPT, ["app", "--port", "99999"], 2, "--port must be in [1, 65535]"),
    C(CORRUPT, ["app", "--port", "0"], 2, "--port must be in [1, 65535]"),
    C(CORRUPT, ["scenes", "--out", "{tmp}/s", "--seed", "-1"], 2, "--seed must be >= 0"),
    C(CORRUPT, ["vision", "generate", *TINY, *HI, "--image", "{big_png}"], 1, "too large to load as an image"),
    C(CORRUPT, ["vision", "generate", *TINY, *HI, "--image", "{bad_png}"], 1, "not a readable image"),
    C(CORRUPT, ["ray-sweep", *TINY, "--kind", "scale"], 2, "--kind scale needs --alpha"),
    C(CORRUPT, ["ray-sweep", *TINY, "--kind", "shuffle"], 2, "Unknown intervention kind 'shuffle'"),
    C(CORRUPT, ["ray-sweep", *TINY, "--limit", "2", "--address", "127.0.0.1:{closed_port}"], 1, "Cannot reach"),
    C(CORRUPT, ["icl", "analyze", "{bad_ckpt}"], 1, "Cannot read checkpoint"),
    C(CORRUPT, ["ablate", *TINY, "--heads", "L1H1", *HI, "--kind", "resample"], 2, "needs --source"),
    C(CORRUPT, ["ablate", *TINY, "--heads", "L1H1", *HI, "--kind", "shuffle"], 2, "Unknown intervention kind"),
    C(CORRUPT, ["entropy", "report", "{good}"], 1, 'metric "entropy"'),
    C(CORRUPT, [*SCAN, "--set", "=x"], 2, "Unknown option"),
    C(CORRUPT, [*SCAN, "--set", "novalue"], 2, "--set expects key=value"),
    # -- leaks: a cache we cannot write to fails before a conversion, not after it ---------------------------
    C(
        LEAKS,
        ["scan", "ablation-kl", "--model", "{bogus_gguf}"],
        1,
        "The model cache",
        env=(("INTERP_CACHE_DIR", "{afile}/cache"),),
    ),
    C(
        LEAKS,
        ["scan", "ablation-kl", "--model", "{bogus_gguf}"],
        1,
        "The model cache",
        env=(("INTERP_CACHE_DIR", "{tmp}/ro/cache"),),
        unwritable="{tmp}/ro",
    ),
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the with-block ends


def _deny_writes_below(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)  # real for non-root users
    real_access, blocked = os.access, folder.resolve()

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and Path(path).resolve().is_relative_to(blocked):
            return False  # what a non-root user is told for this folder
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    real_probe = interp.core.validate.tempfile.TemporaryFile

    def probe(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
        if dir is not None and Path(dir).resolve().is_relative_to(blocked):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_probe(*args, dir=dir, **kwargs)

    monkeypatch.setattr(interp.core.validate.tempfile, "TemporaryFile", probe)


def _fill(text: str, values: dict[str, str]) -> str:
    return text.format(**values)


def _run_case(case: Case, files: dict[str, str], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    values = {**files, "tmp": str(tmp), "closed_port": str(_closed_port())}
    if case.unwritable:
        _deny_writes_below(monkeypatch, Path(_fill(case.unwritable, values)))
    for key, value in case.env:
        monkeypatch.setenv(key, _fill(value, values))
    if case.patch is not None:
        case.patch(monkeypatch)
    return runner.invoke(app, [_fill(a, values) for a in case.args])


@pytest.mark.timeout(120)  # the FIFO case would hang forever if the file were opened
@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind.split()[0]}-{i}" for i, c in enumerate(CASES)])
def test_cli_case(case: Case, files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _run_case(case, files, tmp_path, monkeypatch)
    out = res.output
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == case.code, out
    assert case.phrase in out, out
    if case.code and case.own_error:  # exactly one error line, and the phrase is on it
        errors = [line for line in out.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and case.phrase in errors[0], out
    if case.after is not None:
        case.after(tmp_path)


def test_the_table_covers_every_class() -> None:
    counts = {k: sum(c.kind == k for c in CASES) for k in (LOST, MARKUP, COUNTS, NONFINITE, CORRUPT, LEAKS)}
    assert sum(counts.values()) == len(CASES) >= 80 and all(counts.values()), counts


# ---------------------------------------------------------------------------------------------------------
# A finished scan is never lost: errors come before the work, results are saved before printing
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def spy_metric(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the ablation-kl analyzer's runs (the real one still runs)."""
    import interp.core.registry as registry

    calls: list[int] = []
    info = registry._METRICS["ablation-kl"]

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return info.fn(*args, **kwargs)

    monkeypatch.setitem(registry._METRICS, "ablation-kl", dataclasses.replace(info, fn=fn))
    return calls


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (["--top", "0", "--out", "{tmp}/r.json"], "--top must be >= 1"),
        (["--out", "{tmp}"], "is a folder"),
        (["--out", "{tmp}/ro/r.json"], "not writable"),
        (["--out", "{tmp}/f.txt/r.json"], "is a file, not a folder"),
    ],
    ids=["top-0", "out-onto-a-folder", "out-into-a-read-only-folder", "out-below-a-file"],
)
def test_option_and_path_errors_come_before_the_scan(spy_metric, tmp_path, monkeypatch, extra, phrase) -> None:
    (tmp_path / "f.txt").write_text("x")
    _deny_writes_below(monkeypatch, tmp_path / "ro")
    res = runner.invoke(app, [*SCAN, "--prompts", "short", *(a.format(tmp=tmp_path) for a in extra)])
    assert res.exit_code in (1, 2) and phrase in res.output and "Traceback" not in res.output
    assert spy_metric == [], "the scan ran although its options were bad: that work would have been lost"


def test_results_are_saved_before_they_are_printed(spy_metric, tmp_path, monkeypatch) -> None:
    import interp.cli.core as core

    def broken_printer(*args: Any) -> None:
        raise OSError(32, "Broken pipe")  # e.g. `interp scan … | head -1` closing the pipe

    monkeypatch.setattr(core, "print_top", broken_printer)
    out = tmp_path / "r.json"
    res = runner.invoke(app, [*SCAN, "--prompts", "short", "--out", str(out)])
    assert res.exit_code == 1 and "Broken pipe" in res.output and "Traceback" not in res.output
    assert spy_metric == [1] and HeadScores.load(out).metric == "ablation-kl"  # the finished scan is on disk


def test_a_write_that_fails_anyway_is_one_line(tmp_path, monkeypatch) -> None:
    """A disk that fills up during the run cannot be foreseen; it still ends in one line, exit 1."""
    import interp.core.results as results

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device", str(tmp_path / "r.json"))

    monkeypatch.setattr(results, "atomic_write", full)
    res = runner.invoke(app, [*SCAN, "--prompt", "hi", "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 1 and "No space left on device" in res.output and "Traceback" not in res.output


def test_debug_shows_the_traceback(monkeypatch) -> None:
    res = runner.invoke(app, ["--debug", *SCAN, "--limit", "0"])
    assert res.exit_code == 2 and "Traceback" in res.output and "Error: --limit must be >= 1" in res.output
    monkeypatch.setenv("INTERP_DEBUG", "1")
    res = runner.invoke(app, [*SCAN, "--top", "0"])
    assert res.exit_code == 2 and "Traceback" in res.output


# ---------------------------------------------------------------------------------------------------------
# Real processes: the console, exit status and signals as a user sees them
# ---------------------------------------------------------------------------------------------------------
SUBPROCESS_CASES = {  # each real process pays ~10 s of imports: two, run in parallel
    "top-0": (["scan", "ablation-kl", "--model", "tiny-llama", "--top", "0", "--out", "{tmp}/r.json"], 2, "--top"),
    "markup": (["ablate", "--model", "tiny-llama", "--heads", "[/x]", "--prompt", "hi"], 2, "'[/x]'"),
}


@pytest.fixture(scope="module", autouse=True)
def processes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real-process cases, started when the module starts: they run (importing torch, ~10 s each) while
    the in-process cases do, and `test_real_process` collects them at the end."""
    tmp = tmp_path_factory.mktemp("processes")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("INTERP_DEBUG", None)
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "interp", *(a.format(tmp=tmp) for a in args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (args, _, _) in SUBPROCESS_CASES.items()
    }
    yield {"tmp": tmp, **started}
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("name", list(SUBPROCESS_CASES))
def test_real_process(processes, name: str) -> None:
    out, _ = processes[name].communicate(timeout=300)
    code, tmp = processes[name].returncode, processes["tmp"]
    _, expected, phrase = SUBPROCESS_CASES[name]
    assert code == expected and phrase in out and "Traceback" not in out, out
    assert [line for line in out.splitlines() if line.startswith("Error: ")] == [out.strip().splitlines()[-1]]
    assert not (tmp / "r.json").exists()


# ---------------------------------------------------------------------------------------------------------
# Leaks: child processes, temporary folders
# ---------------------------------------------------------------------------------------------------------
def _sleeper(tmp_path: Path) -> tuple[list[str], Path]:
    pid_file = tmp_path / "child.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    return [sys.executable, "-c", code], pid_file


def _signal_when_started(pid_file: Path, signum: int) -> threading.Thread:
    def send() -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def sigint_raises():
    """SIGINT as in a terminal (KeyboardInterrupt): a shell starts background jobs with SIGINT ignored, and the
    test must not depend on how the test run was started."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_app_stops_its_child_on_sigterm_and_sigint(tmp_path, signum, sigint_raises) -> None:
    """`interp app` runs Streamlit through run_child: when we are stopped, the child is stopped too."""
    cmd, pid_file = _sleeper(tmp_path)
    thread = _signal_when_started(pid_file, signum)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as info, signals_as_exceptions():
        run_child(cmd)
    thread.join()
    assert isinstance(info.value, Stopped) == (signum == signal.SIGTERM)
    assert _gone(int(pid_file.read_text())), "the child process outlived us"
    assert time.monotonic() - started < 30


@pytest.mark.timeout(60)
def test_the_app_stops_its_child_when_the_signal_lands_on_another_thread(tmp_path, sigint_raises) -> None:
    """The OS may hand a process signal to any thread (tqdm's monitor, say); the main thread, waiting for the
    child, must still run the handler promptly (a blocking waitpid would wait out the child's 60 s)."""
    cmd, pid_file = _sleeper(tmp_path)

    def send() -> None:
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.05)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # delivered to this thread, not the main one

    threading.Thread(target=send, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), signals_as_exceptions():
        run_child(cmd)
    assert time.monotonic() - started < 30
    assert _gone(int(pid_file.read_text())), "the child process outlived us"


def test_the_app_command_runs_streamlit_through_run_child(monkeypatch) -> None:
    import interp.cli.core as core

    seen: list[list[str]] = []
    monkeypatch.setattr(core, "run_child", lambda cmd, env=None: seen.append(cmd) or 0)
    res = runner.invoke(app, ["app", "--port", "8123"])
    assert res.exit_code == 0 and seen and "--server.port" in seen[0] and "127.0.0.1" in seen[0]


def test_sigterm_during_a_command_runs_cleanup_and_exits_143(tmp_path) -> None:
    """SIGTERM becomes an exception inside every command, so `finally` blocks run (temporary folders go)."""
    from interp.core.files import atomic_directory

    target = tmp_path / "converted"

    def convert() -> None:
        with atomic_directory(target) as tmp:
            (tmp / "weights.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the signal

    wrapped = friendly_errors(convert)
    with pytest.raises(BaseException) as info:
        wrapped()
    assert getattr(info.value, "exit_code", None) == 128 + signal.SIGTERM
    assert not target.exists() and list(tmp_path.iterdir()) == []  # no temporary folder left


def test_stale_conversion_folders_are_removed_at_the_next_run(files, tmp_path, monkeypatch) -> None:
    from interp.core.files import _host

    models = tmp_path / "cache" / "models"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = models / f".bogus-0123.tmp-{_host()}-{int(dead.stdout)}-abc123"
    live = models / f".other-4567.tmp-{_host()}-{os.getpid()}-def456"  # ours, still "converting"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 1024)
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    res = runner.invoke(app, ["scan", "ablation-kl", "--model", files["bogus_gguf"]])
    assert res.exit_code == 1 and "Could not read GGUF" in res.output and "Traceback" not in res.output
    assert not stale.exists() and live.exists()
    assert not [p for p in models.iterdir() if p.name.startswith(".bogus")]


# ---------------------------------------------------------------------------------------------------------
# The library: the same classes of bad values, called directly
# ---------------------------------------------------------------------------------------------------------
def _iv(**kwargs: Any) -> Callable[[Any], Any]:
    return lambda m: interp.make_intervention(m, **{"heads": "L1H1", **kwargs})


def _scores(scores: Any, **kwargs: Any) -> Callable[[Any], Any]:
    return lambda m: HeadScores(scores, **{"metric": "m", "model": "x", **kwargs})


LIBRARY_CASES: list[tuple[str, Callable[[Any], Any], type[BaseException], str]] = [
    ("reference-string", _iv(kind="mean", reference="abc"), UsageError, "reference must be a list of prompts"),
    ("heads-int", lambda m: interp.make_intervention(m, 5), HeadLabelError, "Cannot interpret 5 as heads"),
    ("eps-string", _iv(kind="uniform", eps="0.1"), UsageError, "eps must be a number"),
    ("alpha-string", _iv(kind="scale", alpha="2"), UsageError, "alpha must be a number"),
    ("alpha-inf", _iv(kind="scale", alpha=math.inf), UsageError, "finite"),
    ("alpha-huge", _iv(kind="scale", alpha=1e38), UsageError, "alpha must be in"),
    ("scale-no-alpha", _iv(kind="scale"), UsageError, "needs alpha"),
    ("source-list", _iv(kind="resample", source=["a", "b"]), UsageError, "source must be one prompt"),
    ("bool-head", lambda m: parse_head((True, False)), HeadLabelError, "not booleans"),
    ("negative-head", lambda m: parse_head((-1, 0)), HeadLabelError, "negative index"),
    ("float-head", lambda m: parse_head((1.5, 2)), HeadLabelError, "Cannot interpret"),
    ("heads-none", lambda m: parse_heads(None), HeadLabelError, "Cannot interpret None"),  # type: ignore[arg-type]
    ("iv-string-heads", lambda m: interp.HeadIntervention("L0H0"), HeadLabelError, "tuple of heads"),  # type: ignore[arg-type]
    ("iv-bool-alpha", lambda m: interp.HeadIntervention((Head(0, 0),), "scale", True), UsageError, "alpha must be"),
    ("scores-1d", _scores(np.ones(3)), ResultsError, "must be [n_layers, n_heads]"),
    ("scores-empty", _scores(np.zeros((0, 3))), ResultsError, "both >= 1"),
    ("scores-inf", _scores([[0.5, math.inf]]), ResultsError, "infinite"),
    ("scores-strings", _scores([["a", "b"]]), ResultsError, "must be numbers"),
    ("scores-bools", _scores([[True, False]]), ResultsError, "must be numbers"),
    ("scores-ragged", _scores([[1.0], [1.0, 2.0]]), ResultsError, "rectangular"),
    ("metric-not-str", _scores([[1.0]], metric=5), ResultsError, "metric must be a string"),
    ("per-prompt-inf", _scores([[1.0]], per_prompt=[[[math.inf]]]), ResultsError, "infinite"),
    ("per-prompt-shape", _scores([[1.0]], per_prompt=[[1.0]]), ResultsError, "per_prompt must be"),
    ("limit-negative", lambda m: load_prompts("short", -2), UsageError, "limit must be >= 1"),
    ("limit-zero", lambda m: load_prompts("short", 0), UsageError, "limit must be >= 1"),
    ("prompts-source-int", lambda m: load_prompts(5), UsageError, "file path or a set name"),  # type: ignore[arg-type]
    ("scan-no-prompts", lambda m: interp.scan("ablation-kl", m, []), PromptError, "No prompts"),
    ("scan-prompts-int", lambda m: interp.scan("ablation-kl", m, 5), PromptError, "list of strings"),
    ("config-nan", lambda m: interp.get_metric("ablation-kl").make_config({"alpha": math.nan}), UsageError, "finite"),
    ("top-tokens", lambda m: _next_tokens(m, 10**6), UsageError, "k (tokens shown) must be in"),
    ("scenes-seed", lambda m: _scenes(-1), UsageError, "seed must be >= 0"),
    ("device-cuda", lambda m: _device("cuda:999"), ModelLoadError, "cuda:999"),
    ("results-load-fifo", lambda m: HeadScores.load("/dev/zero"), ResultsFileError, "not a regular file"),
]


def _next_tokens(model: Any, k: int) -> Any:
    from interp.engine.compare import next_token_table

    return next_token_table(model, "hi", interp.make_intervention(model, "L0H0"), k)


def _scenes(seed: int) -> Any:
    from interp.lines.vision.scenes import make_scenes

    return make_scenes(2, seed)


def _device(name: str) -> Any:
    from interp.model.loading import resolve_device

    return resolve_device(name)


@pytest.mark.parametrize(("name", "call", "error", "phrase"), LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_case(tiny_llama, name, call, error, phrase) -> None:
    with pytest.raises(error) as info:
        call(tiny_llama)
    assert isinstance(info.value, InterpError) and phrase in str(info.value)


def test_library_accepts_what_it_should(tiny_llama) -> None:
    prompts = ["hello world", "the cat sat"]
    from_list = interp.scan("ablation-kl", tiny_llama, prompts, progress=False)
    from_generator = interp.scan("ablation-kl", tiny_llama, (p for p in prompts), progress=False)
    np.testing.assert_array_equal(from_list.scores, from_generator.scores)
    assert parse_head((np.int64(1), np.int64(2))) == Head(1, 2) == parse_head([1, 2])
    assert parse_heads(Head(0, 3)) == (Head(0, 3),)
    iv = interp.make_intervention(tiny_llama, "L1H1", "mean", reference=("hello", "world"))
    assert iv.values is not None and iv.alpha == 1.0


# ---------------------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------------------
# Deterministic (the same examples on every run, nothing written to .hypothesis/), so CI never flakes; the same
# folder serves every example of a test (each example overwrites its file).
FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FAST
@given(
    layer=st.integers(0, 10**6), head=st.integers(0, 10**6), pad=st.sampled_from(["", " ", "\t"]), lower=st.booleans()
)
def test_labels_round_trip(layer: int, head: int, pad: str, lower: bool) -> None:
    label = f"{pad}L{layer}H{head}{pad}"
    parsed = parse_head(label.lower() if lower else label)
    assert parsed == Head(layer, head) == parse_head(parsed.label) == parse_head((layer, head))


@FAST
@given(value=st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none(), st.booleans(),
                       st.tuples(st.integers(-5, 5) | st.booleans() | st.floats(), st.integers(-5, 5) | st.text()),
                       st.lists(st.integers(), max_size=3)),
       n_layers=st.integers(1, 40), n_heads=st.integers(1, 40))  # fmt: skip
def test_any_head_value_parses_in_range_or_fails_cleanly(value: Any, n_layers: int, n_heads: int) -> None:
    try:
        head = parse_head(value, n_layers, n_heads)
    except HeadLabelError:
        return
    assert 0 <= head.layer < n_layers and 0 <= head.head < n_heads
    assert not isinstance(value, bool) and not any(
        isinstance(v, bool) for v in (value if isinstance(value, tuple | list) else ())
    )


@FAST
@given(text=st.text(max_size=60))
def test_any_head_list_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        heads = parse_heads(text, 12, 12)
    except HeadLabelError:
        return
    assert heads and len(set(heads)) == len(heads) and parse_heads(",".join(h.label for h in heads)) == heads


@FAST
@given(
    prompts=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40), min_size=1, max_size=8
    )
)
def test_prompt_files_round_trip(tmp_path, prompts: list[str]) -> None:
    """Prompts written one per line (txt) or as JSONL come back exactly as they are meant to."""
    folder = tmp_path
    jsonl = folder / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n", encoding="utf-8")
    assert load_prompts(jsonl) == prompts
    lines = [" ".join(p.split()) for p in prompts]  # one line each: whitespace collapsed
    expected = [line for line in lines if line and not line.startswith("#")]
    txt = folder / "p.txt"
    txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if expected:
        assert load_prompts(txt) == expected
        assert load_prompts(txt, 1) == expected[:1]
    else:
        with pytest.raises(PromptError, match="holds no prompts"):
            load_prompts(txt)


@FAST
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".txt", ".jsonl"]))
def test_any_bytes_as_a_prompt_file_load_or_fail_cleanly(tmp_path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    path.write_bytes(data)
    try:
        prompts = load_prompts(path)
    except PromptError:
        return
    assert prompts and all(isinstance(p, str) and (suffix == ".jsonl" or p.strip()) for p in prompts)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
CELL = st.none() | st.floats(allow_nan=False, allow_infinity=False, width=64) | st.integers(-(10**6), 10**6)


@FAST
@given(n_layers=st.integers(1, 4), n_heads=st.integers(1, 4), data=st.data())
def test_valid_results_round_trip(tmp_path, n_layers: int, n_heads: int, data: st.DataObject) -> None:
    grid = data.draw(st.lists(st.lists(CELL, min_size=n_heads, max_size=n_heads), min_size=n_layers, max_size=n_layers))
    scores = np.array([[np.nan if x is None else float(x) for x in row] for row in grid])
    result = HeadScores(scores, metric=data.draw(st.text(max_size=10)), model=data.draw(st.text(max_size=10)),
                        config=data.draw(st.dictionaries(st.text(max_size=5), JSON, max_size=3)))  # fmt: skip
    assert HeadScores.load(result.save(tmp_path / "r.json")) == result


@FAST
@given(payload=JSON, key=st.sampled_from(["scores", "n_layers", "n_heads", "metric", "model", "config", "per_prompt",
                                          "extras", "format_version"]))  # fmt: skip
def test_any_json_in_a_results_field_loads_or_fails_cleanly(payload: Any, key: str) -> None:
    data = json.loads(_results())
    data[key] = payload
    try:
        result = HeadScores.from_dict(data)
    except ResultsFileError:
        return
    assert np.isfinite(result.scores[~np.isnan(result.scores)]).all()
    assert HeadScores.from_dict(result.to_dict()) == result  # what loads, saves


@FAST
@given(data=st.binary(max_size=400))
def test_any_bytes_as_a_results_file_load_or_fail_cleanly(tmp_path, data: bytes) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(data)
    with pytest.raises(ResultsFileError):
        HeadScores.load(path)


@FAST
@given(cell=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "true", '"x"', "[1]", "{}"]),
       where=st.tuples(st.integers(0, 1), st.integers(0, 1)))  # fmt: skip
def test_any_bad_cell_is_refused_and_named(tmp_path, cell: str, where: tuple[int, int]) -> None:
    grid = [["0.5", "0.25"], ["0.125", "null"]]
    grid[where[0]][where[1]] = cell
    path = tmp_path / "r.json"
    path.write_text(
        _results(scores="GRID").replace('"GRID"', "[" + ",".join("[" + ",".join(r) + "]" for r in grid) + "]")
    )
    with pytest.raises(ResultsFileError) as info:
        HeadScores.load(path)
    label = f"L{where[0]}H{where[1]}"
    assert label in str(info.value) or cell in ("NaN", "Infinity", "-Infinity")  # literals fail at parse time
