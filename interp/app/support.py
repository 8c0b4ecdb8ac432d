"""The logic behind the Streamlit head explorer (apps/head_explorer.py), kept free of Streamlit so it is testable.

Everything here is a thin layer over the library: forms generated from an analyzer's Config dataclass, the
attention pattern of one head with token labels, a one-pass attention-entropy overview, base vs intervened
generation and next-token tables, comparison of two results, exports and the matching CLI commands.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import html
import inspect
import itertools
import json
import math
import os
import shlex
import tempfile
import textwrap
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import numpy as np
import pandas as pd
import torch

from interp.core import figures
from interp.core.config import Config, _is_optional
from interp.core.errors import InterpError, PromptError, ResultsFileError
from interp.core.heads import Head
from interp.core.progress import Progress
from interp.core.prompts import load_prompts
from interp.core.registry import run_metric
from interp.core.results import HeadScores
from interp.engine.compare import show_token
from interp.engine.hookpoints import pattern_name
from interp.engine.interventions import HeadIntervention
from interp.engine.run import capture
from interp.lines.entropy.report import EntropyReport, Thresholds, classify
from interp.model.loaded import LoadedModel
from interp.model.registry import get_entry, list_models

if TYPE_CHECKING:
    import plotly.graph_objects as go


MODEL_ENV = "INTERP_APP_MODEL"
"""Environment variable naming the model the app loads on start (used when no --model is given)."""

QUICK_LOOK = "entropy"
"""Metric name of the one-pass overview the app shows before any scan."""

COLLAPSE, OVERLOAD = Thresholds().collapse, Thresholds().overload
"""Entropy classes as a fraction of the maximum entropy (shared/methods/entropy.md defaults)."""


# ---------------------------------------------------------------------------------------------------------
# Start-up and models
# ---------------------------------------------------------------------------------------------------------
def startup_model(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str:
    """The model to load on start: `--model X` after `--` on the command line, else $INTERP_APP_MODEL, else default."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model", default=None)
    args, _ = parser.parse_known_args(list(argv))
    return args.model or environ.get(MODEL_ENV) or "default"


_LAUNCHED: dict[str, LoadedModel] = {}


def launch_model(model: LoadedModel) -> str:
    """Offer a model object in the app's model picker (interp.app.serve); returns its key there."""
    for key, known in _LAUNCHED.items():
        if known is model:
            return key
    key, n = f"{model.name} (from Python)", 1
    while key in _LAUNCHED:  # another object under the same name: the app's caches are keyed by this string
        n += 1
        key = f"{model.name} (from Python, {n})"
    _LAUNCHED[key] = model
    return key


def launched_models() -> dict[str, LoadedModel]:
    """Model objects handed to the app from Python, newest first (the page preselects the first)."""
    return dict(reversed(_LAUNCHED.items()))


def startup_load_options(argv: Sequence[str]) -> dict[str, str | None]:
    """device / dtype for the start-up model: `--device X --dtype Y` after `--` on the command line."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    args, _ = parser.parse_known_args(list(argv))
    return {"device": args.device, "dtype": args.dtype}


def installed_models() -> tuple[list[str], list[dict[str, Any]]]:
    """(names of installed registered models, rows of the ones that are not installed, with install hints)."""
    rows = list_models()
    return [r["name"] for r in rows if r["installed"]], [r for r in rows if not r["installed"]]


def canonical_model_name(name: str) -> str | None:
    """The registry name for a name or alias ("default" -> "smollm2-135m-instruct"); None for a path."""
    try:
        return get_entry(name).name
    except InterpError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Forms from Config dataclasses
# ---------------------------------------------------------------------------------------------------------
FieldKind = Literal["choice", "bool", "int", "float", "str", "text"]


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One form widget for one Config field.

    kind: "choice" (Literal), "bool", "int", "float", "str", or "text" (anything else: optional values,
    tuples; entered as the CLI string form and parsed by Config.from_strings).
    """

    name: str
    kind: FieldKind
    default: Any
    choices: tuple[Any, ...] = ()
    optional: bool = False
    help: str = ""

    @property
    def text_default(self) -> str:
        """The default as the string a user would type (for "text" widgets)."""
        if self.default is None:
            return ""
        if isinstance(self.default, tuple | list):
            return ",".join(str(v) for v in self.default)
        return str(self.default)


def field_docs(config_cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) of a dataclass and its bases."""
    docs: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def config_fields(config_cls: type[Config]) -> list[FieldSpec]:
    """The widgets a form needs for `config_cls`, one per field, with defaults, choices and help text."""
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    specs = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        optional, inner = _is_optional(hints[f.name])
        help_text = f.metadata.get("help", "") or docs.get(f.name, "")
        if optional:
            kind: FieldKind = "text"  # empty means None, which a number box or checkbox cannot express
        elif get_origin(inner) is Literal:
            kind = "choice"
        else:
            kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(inner, "text")
        choices = get_args(inner) if kind == "choice" else ()
        specs.append(FieldSpec(f.name, kind, default, choices, optional, help_text))
    return specs


def changed_options(config: Config) -> dict[str, Any]:
    """The fields of `config` that differ from the class defaults (what a CLI command has to --set)."""
    defaults = {s.name: s.default for s in config_fields(type(config))}
    return {k: v for k, v in config.to_dict().items() if k not in defaults or defaults[k] != v}


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def scan_command(
    metric: str, model: str, prompts: str, options: Mapping[str, Any], limit: int | None = None, out: str = ""
) -> str:
    """The `interp scan` command that reproduces a scan (prompts: a built-in set name or a file path)."""
    parts = ["interp", "scan", metric, "--model", model, "--prompts", prompts]
    if limit:
        parts += ["--limit", str(limit)]
    for key, value in options.items():
        parts += ["--set", f"{key}={_cli_value(value)}"]
    parts += ["--out", out or f"{metric}.json"]
    return shlex.join(parts)


def ablate_command(
    model: str,
    intervention: HeadIntervention,
    prompt: str,
    *,
    max_new_tokens: int,
    template: str,
    top_tokens: int,
    reference: str = "reference",
    source: str | None = None,
) -> str:
    """The `interp ablate` command that reproduces an intervention-playground run."""
    parts = ["interp", "ablate", "--model", model, "--heads", ",".join(h.label for h in intervention.heads)]
    parts += ["--kind", intervention.kind, "--prompt", prompt]
    if intervention.kind == "scale":
        parts += ["--alpha", f"{intervention.alpha:g}"]
    if intervention.kind == "uniform":
        parts += ["--eps", f"{intervention.eps:g}"]
    if intervention.kind == "mean":
        parts += ["--reference", reference]
    if intervention.kind == "resample" and source:
        parts += ["--source", source]
    parts += ["--max-new-tokens", str(max_new_tokens), "--template", template, "--top-tokens", str(top_tokens)]
    return shlex.join(parts)


# ---------------------------------------------------------------------------------------------------------
# Prompts and result files
# ---------------------------------------------------------------------------------------------------------
def _via_file(data: bytes, name: str, suffix: str, read: Any) -> Any:
    """Write uploaded bytes to a temporary file and read it with the library's own file reader and checks."""
    with tempfile.TemporaryDirectory(prefix="interp-upload-") as tmp:
        path = Path(tmp) / (Path(name).stem + suffix)
        path.write_bytes(data)
        try:
            return read(path)
        except InterpError as exc:  # name the upload, not the temporary file
            raise type(exc)(str(exc).replace(str(path), name)) from None


def prompts_from_text(text: str) -> list[str]:
    """Pasted prompts: one per line; blank lines and lines starting with '#' are skipped."""
    return _via_file(text.encode("utf-8"), "pasted prompts", ".txt", load_prompts)


def prompts_from_upload(data: bytes, name: str) -> list[str]:
    """An uploaded prompts file (.txt: one per line, or .jsonl with a "prompt" field)."""
    suffix = Path(name).suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise PromptError(f"{name}: upload a .txt file (one prompt per line) or a .jsonl file with a prompt field.")
    return _via_file(data, name, suffix, load_prompts)


def result_from_upload(data: bytes, name: str) -> HeadScores:
    """An uploaded HeadScores JSON file, checked like HeadScores.load."""
    if Path(name).suffix.lower() != ".json":
        raise ResultsFileError(f"{name}: results are HeadScores JSON files (*.json).")
    return _via_file(data, name, ".json", HeadScores.load)


def result_json(result: HeadScores) -> str:
    return json.dumps(result.to_dict(), indent=1, allow_nan=False)


def result_csv(result: HeadScores) -> str:
    return result.to_frame().to_csv(index=False)


def figure_html(fig: go.Figure) -> str:
    """A standalone HTML page with plotly.js embedded, so it opens offline (interp.core.figures)."""
    return figures.figure_html(fig)


# ---------------------------------------------------------------------------------------------------------
# Attention patterns and entropy
# ---------------------------------------------------------------------------------------------------------
def token_labels(model: LoadedModel, input_ids: torch.Tensor) -> list[str]:
    """input_ids: [pos] -> one visible label per token."""
    return [show_token(model.tokenizer.decode([int(i)])) for i in input_ids.tolist()]


def attention_pattern(
    model: LoadedModel, prompt: str, head: Head, template: str = "auto"
) -> tuple[np.ndarray, list[str]]:
    """The head's attention pattern on one prompt: ([query, key] weights, token labels)."""
    head = model.parse_heads([head])[0]
    batch = model.tokenize([prompt], template)  # one prompt: no padding, positions are the prompt's own
    name = pattern_name(head.layer)
    pattern = capture(model, batch, [name], reduce=lambda t: t[0, head.head].float())[name]  # [q, k]
    n = batch.input_ids.shape[1]
    if tuple(pattern.shape) != (n, n):  # e.g. another thread's forward pass ran through the same hooks
        raise InterpError(f"{name} gave a {tuple(pattern.shape)} pattern for a {n}-token prompt; run it again.")
    return pattern.cpu().numpy(), token_labels(model, batch.input_ids[0])


def attention_entropy(
    model: LoadedModel, prompts: Sequence[str], template: str = "auto", progress: Progress = False
) -> HeadScores:
    """The first page's quick look: the registered `entropy` analyzer (one forward pass per batch).

    scores = normalized entropy (0 = attends to one token, 1 = uniform); extras["raw"] holds nats."""
    return run_metric("entropy", model, prompts, template=template, progress=progress)


def entropy_class(normalized: float, collapse: float = COLLAPSE, overload: float = OVERLOAD) -> str:
    """ "collapsed" (< collapse of the maximum), "overloaded" (> overload), "normal", or "unknown" (NaN)."""
    label = classify(np.array([normalized], dtype=float), Thresholds(collapse, overload))[0]
    return label or "unknown"


def entropy_classes(
    result: HeadScores, collapse: float = COLLAPSE, overload: float = OVERLOAD
) -> tuple[str, pd.DataFrame]:
    """For an `entropy` result: a one-line count of collapsed / normal / overloaded heads, and the flagged heads
    (collapsed lowest first, then overloaded highest first) as label, normalized, raw (nats), class."""
    report = EntropyReport(result, collapse, overload)
    t = report.totals()
    line = (
        f"{t['heads']} heads: {t['collapsed']} collapsed (< {collapse:g} of max), {t['normal']} normal, "
        f"{t['overloaded']} overloaded (> {overload:g} of max)."
    )
    return line, report.flagged()[["label", "normalized", "raw", "class"]]


def top_attended(pattern: np.ndarray, tokens: Sequence[str], k: int = 8) -> pd.DataFrame:
    """The key tokens that get the most attention: from the last position, and averaged over the queries that see them.

    pattern: [q, k] causal attention of one head on one prompt.
    """
    n = pattern.shape[0]
    seen_by = np.arange(n, 0, -1)  # key j is visible to queries j..n-1
    frame = pd.DataFrame(
        {
            "position": np.arange(n),
            "token": list(tokens),
            "from last token": pattern[-1],
            "mean over queries": pattern.sum(0) / seen_by,
        }
    )
    return frame.sort_values("from last token", ascending=False, kind="stable").head(k).reset_index(drop=True)


def pattern_figure(pattern: np.ndarray, tokens: Sequence[str], title: str) -> go.Figure:
    """Token-by-token heatmap of one head's attention (rows: queries, columns: keys), token labels on both axes."""
    import plotly.graph_objects as go

    n = len(tokens)
    labels = [html.escape(t) for t in tokens]  # plotly reads tick and hover text as HTML: "<s>" would strike out
    masked = np.where(np.tril(np.ones((n, n), dtype=bool)), pattern, np.nan)  # the causal upper triangle is blank
    hover = [[f"{labels[q]} → {labels[k]}" for k in range(n)] for q in range(n)]
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isnan(masked), None, masked).tolist(),
            x=list(range(n)),
            y=list(range(n)),
            customdata=hover,
            colorscale="Blues",
            zmin=0,
            hovertemplate="query %{y} → key %{x}<br>%{customdata}<br>attention %{z:.4f}<extra></extra>",
            colorbar={"title": "attention"},
        )
    )
    axis = {"tickmode": "array", "tickvals": list(range(n)), "ticktext": labels, "showgrid": False}
    axis["tickfont"] = {"size": 11 if n <= 40 else 8}
    fig.update_layout(
        title=title,
        xaxis={**axis, "title": "key token", "tickangle": -60},
        yaxis={**axis, "title": "query token", "autorange": "reversed"},
        height=max(420, min(14 * n, 1400) + 200),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        plot_bgcolor="white",
    )
    return fig


def clickable_heatmap(result: HeadScores) -> go.Figure:
    """result.heatmap() with an invisible marker on every cell, so a click selects a head.

    Plotly heatmaps do not emit selection events; scatter points do. The markers also carry the hover text (head
    label and exact value) and the heatmap's own hover is switched off, so the pointer always lands on a marker.
    """
    import plotly.graph_objects as go

    fig = result.heatmap()
    layer, head = np.meshgrid(np.arange(result.n_layers), np.arange(result.n_heads), indexing="ij")
    values = [f"{v:.6g}" if not math.isnan(v) else "not scored" for v in result.scores.ravel()]
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector={"type": "heatmap"})
    fig.add_trace(
        go.Scatter(
            x=head.ravel(),
            y=layer.ravel(),
            mode="markers",
            marker={"size": 12, "opacity": 0},
            selected={"marker": {"opacity": 0}},
            unselected={"marker": {"opacity": 0}},
            customdata=np.stack([[f"L{a}H{b}" for a, b in zip(layer.ravel(), head.ravel(), strict=True)], values], -1),
            hovertemplate="%{customdata[0]}: %{customdata[1]}<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_layout(hovermode="closest", hoverdistance=-1, clickmode="event+select")
    # Pin the axes to the cells: autorange would pad for the markers and shift rows against the heatmap.
    fig.update_xaxes(range=[-0.5, result.n_heads - 0.5], autorange=False)
    fig.update_yaxes(range=[result.n_layers - 0.5, -0.5], autorange=False)
    return fig


def per_prompt_frame(result: HeadScores, head: Head, prompts: Sequence[str] | None) -> pd.DataFrame | None:
    """The head's score on each prompt (None when the result kept no per-prompt scores)."""
    if result.per_prompt is None:
        return None
    values = result.per_prompt[:, head.layer, head.head]
    labels = list(prompts) if prompts is not None and len(prompts) == len(values) else [None] * len(values)
    return pd.DataFrame({"prompt #": np.arange(len(values)), "prompt": labels, "score": values})


# ---------------------------------------------------------------------------------------------------------
# The intervention playground
# ---------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------
# Comparing two results
# ---------------------------------------------------------------------------------------------------------
def check_comparable(a: HeadScores, b: HeadScores) -> None:
    if a.scores.shape != b.scores.shape:
        raise InterpError(
            f"Cannot compare a {a.n_layers}x{a.n_heads} result ({a.model}) with a {b.n_layers}x{b.n_heads} one "
            f"({b.model}): both must come from models with the same layers and heads."
        )


def agreement(a: HeadScores, b: HeadScores, k: int = 10) -> dict[str, float]:
    """Spearman rank correlation and top-k overlap (HeadScores.rank_agreement) with a clear error on shape."""
    check_comparable(a, b)
    return a.rank_agreement(b, k)


def difference_figure(a: HeadScores, b: HeadScores, title: str = "B − A") -> go.Figure:
    """Layer x head heatmap of b - a on a diverging scale centred at zero; hover shows both values."""
    check_comparable(a, b)
    diff = HeadScores(b.scores - a.scores, "B − A", f"{a.model} vs {b.model}")
    hover = [
        [f"L{layer}H{h}: A={a.scores[layer, h]:.4g}, B={b.scores[layer, h]:.4g}" for h in range(a.n_heads)]
        for layer in range(a.n_layers)
    ]
    fig = diff.heatmap(title=title, colorscale="RdBu_r")
    fig.update_traces(zmid=0, customdata=hover, hovertemplate="%{customdata}<br>B − A = %{z:.6g}<extra></extra>")
    return fig


def describe_result(result: HeadScores) -> str:
    """A one-line label: metric, model, number of prompts, time."""
    n = result.per_prompt.shape[0] if result.per_prompt is not None else result.provenance.get("n_prompts")
    when = str(result.provenance.get("time", result.provenance.get("created", "")))[:19]
    parts = [result.metric, result.model, f"{n} prompts" if n is not None else "", when]
    return " · ".join(p for p in parts if p)


@dataclasses.dataclass(frozen=True)
class Run:
    """A result in the app's history, with what is needed to explain and reproduce it."""

    result: HeadScores
    prompts: tuple[str, ...] | None = None
    command: str | None = None
    origin: str = "scan"  # "scan" | "quick look" | "file"
