"""`HeadScores`: the one result type every analyzer returns.

An immutable [n_layers, n_heads] table of scores (NaN = not scored) with the metric, the model, the config
that produced it and its provenance. It saves to and loads from JSON (atomically, with validation), turns
into a long-form DataFrame, and draws itself as a plotly heatmap.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.core import validate
from interp.core.errors import ResultsError, ResultsFileError
from interp.core.files import atomic_write
from interp.core.heads import Head, parse_head
from interp.core.registry import metric_direction

if TYPE_CHECKING:  # plotly is imported lazily: it is only needed for drawing
    import plotly.graph_objects as go

FORMAT_VERSION = 1
REQUIRED_KEYS = ("metric", "model", "n_layers", "n_heads", "scores", "config", "provenance")


def _freeze(value: Any) -> Any:
    """Deep-freeze JSON-like data: dicts become read-only mappings, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of `_freeze`, for writing JSON."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def _jsonable(value: Any, what: str) -> Any:
    """Round-trip through JSON so a result that could not be saved fails at construction, not at save."""
    try:
        return json.loads(json.dumps(_thaw(value), allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"HeadScores {what} must be JSON-serializable: {exc}") from exc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def _readonly(array: Any, what: str) -> np.ndarray:
    """A read-only float64 copy; numbers only, NaN allowed (= not scored), infinities refused (JSON has none,
    and an infinite score would rank first)."""
    try:
        raw = np.asarray(array)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ResultsError(f"HeadScores {what} must be a rectangular array of numbers: {exc}") from None
    if raw.dtype.kind not in "iuf":  # bools, strings, objects: `load` refuses them too
        raise ResultsError(f"HeadScores {what} must be numbers (NaN = not scored), got dtype {raw.dtype}.")
    out = np.array(raw, dtype=np.float64, copy=True)
    infinite = np.argwhere(np.isinf(out))
    if len(infinite):
        where = ", ".join("[" + ", ".join(map(str, idx)) + "]" for idx in infinite[:5].tolist())
        raise ResultsError(
            f"HeadScores {what} hold {len(infinite)} infinite value(s) (at {where}); a score must be finite, "
            "or NaN for a head that was not scored."
        )
    out.setflags(write=False)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null for a head that was not scored)")


def _nan_to_none(array: np.ndarray) -> list:
    """Nested lists with None for NaN (JSON has no NaN)."""
    return [_nan_to_none(a) for a in array] if array.ndim > 1 else [None if math.isnan(x) else float(x) for x in array]


@dataclass(frozen=True, eq=False)
class HeadScores:
    """Scores for every attention head of one model under one metric.

    scores: [n_layers, n_heads] float64, NaN where a head was not scored.
    per_prompt: optional [n_prompts, n_layers, n_heads], the per-prompt values behind `scores`.
    extras: analyzer-specific JSON data (e.g. a group search's steps).
    """

    scores: np.ndarray
    metric: str
    model: str
    config: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    per_prompt: np.ndarray | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # What `load` would refuse is refused here too, so every HeadScores can be saved and loaded back.
        for name in ("metric", "model"):
            if not isinstance(getattr(self, name), str):
                raise ResultsError(f"HeadScores {name} must be a string, got {getattr(self, name)!r}.")
        scores = _readonly(self.scores, "scores")
        if scores.ndim != 2 or 0 in scores.shape:
            raise ResultsError(
                f"HeadScores scores must be [n_layers, n_heads] with both >= 1, got shape {scores.shape}."
            )
        object.__setattr__(self, "scores", scores)
        if self.per_prompt is not None:
            per_prompt = _readonly(self.per_prompt, "per_prompt")
            if per_prompt.ndim != 3 or per_prompt.shape[1:] != scores.shape:
                raise ResultsError(
                    f"HeadScores per_prompt must be [n_prompts, {scores.shape[0]}, {scores.shape[1]}], "
                    f"got shape {per_prompt.shape}."
                )
            object.__setattr__(self, "per_prompt", per_prompt)
        for name in ("config", "provenance", "extras"):
            object.__setattr__(self, name, _freeze(_jsonable(getattr(self, name), name)))

    # ---- shape and access -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.scores.shape[1])

    def __getitem__(self, head: Head | str | tuple[int, int]) -> float:
        h = parse_head(head, self.n_layers, self.n_heads)
        return float(self.scores[h.layer, h.head])

    def to_frame(self) -> pd.DataFrame:
        """Long form: one row per head with columns layer, head, label, score (NaN kept)."""
        layer, head = np.meshgrid(np.arange(self.n_layers), np.arange(self.n_heads), indexing="ij")
        return pd.DataFrame(
            {
                "layer": layer.ravel(),
                "head": head.ravel(),
                "label": [f"L{a}H{b}" for a, b in zip(layer.ravel(), head.ravel(), strict=True)],
                "score": self.scores.ravel(),
            }
        )

    def top(self, k: int = 10, ascending: bool | None = None) -> pd.DataFrame:
        """The k most important heads; unscored heads are left out.

        ascending: None ranks by the metric's registered direction (largest first, or most negative first
        for metrics such as ablation-effect); True / False force lowest / highest first."""
        validate.count("k", k)
        if ascending is None:
            ascending = metric_direction(self.metric) == "low"
        frame = self.to_frame().dropna(subset=["score"])
        # A stable sort keeps ties in layer-major order, so top() is deterministic.
        frame = frame.sort_values("score", ascending=ascending, kind="stable")
        return frame.head(k).reset_index(drop=True)

    def top_heads(self, k: int = 10, ascending: bool | None = None) -> list[Head]:
        return [Head(int(r.layer), int(r.head)) for r in self.top(k, ascending).itertuples()]

    def rank_agreement(self, other: HeadScores, k: int = 10) -> dict[str, float]:
        """Spearman rank correlation and top-k overlap with another result of the same shape."""
        from scipy.stats import spearmanr

        if self.scores.shape != other.scores.shape:
            raise ValueError(f"shapes differ: {self.scores.shape} vs {other.scores.shape}")
        both = ~np.isnan(self.scores) & ~np.isnan(other.scores)
        rho = float(spearmanr(self.scores[both], other.scores[both]).statistic) if both.sum() > 2 else math.nan
        mine = {h.label for h in self.top_heads(k)}
        theirs = {h.label for h in other.top_heads(k)}
        return {"spearman": rho, f"top{k}_overlap": len(mine & theirs) / max(1, min(k, len(mine)))}

    # ---- plotting ---------------------------------------------------------------------------------------
    def heatmap(self, title: str | None = None, colorscale: str = "Viridis") -> go.Figure:
        """Layer x head heatmap; hovering shows the head label and the exact value."""
        import plotly.graph_objects as go

        labels = [[f"L{layer}H{h}" for h in range(self.n_heads)] for layer in range(self.n_layers)]
        fig = go.Figure(
            go.Heatmap(
                z=np.where(np.isnan(self.scores), None, self.scores).tolist(),
                x=list(range(self.n_heads)),
                y=list(range(self.n_layers)),
                customdata=labels,
                colorscale=colorscale,
                hovertemplate="%{customdata}: %{z:.6g}<extra></extra>",
                colorbar={"title": self.metric},
            )
        )
        fig.update_layout(
            title=title or f"{self.metric} — {self.model}",
            xaxis_title="head",
            yaxis_title="layer",
            yaxis={"autorange": "reversed", "dtick": 1 if self.n_layers <= 32 else None},
            xaxis={"dtick": 1 if self.n_heads <= 32 else None},
            height=max(320, 18 * self.n_layers + 120),
        )
        return fig

    # ---- comparison -------------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeadScores):
            return NotImplemented
        return (
            self.metric == other.metric
            and self.model == other.model
            and np.array_equal(self.scores, other.scores, equal_nan=True)
            and _thaw(self.config) == _thaw(other.config)
            and _thaw(self.provenance) == _thaw(other.provenance)
            and _thaw(self.extras) == _thaw(other.extras)
            and (
                (self.per_prompt is None and other.per_prompt is None)
                or (
                    self.per_prompt is not None
                    and other.per_prompt is not None
                    and np.array_equal(self.per_prompt, other.per_prompt, equal_nan=True)
                )
            )
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays inside: not hashable

    def __repr__(self) -> str:
        scored = int((~np.isnan(self.scores)).sum())
        return (
            f"HeadScores(metric={self.metric!r}, model={self.model!r}, "
            f"shape={self.n_layers}x{self.n_heads}, scored={scored})"
        )

    # ---- saving and loading -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "metric": self.metric,
            "model": self.model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "scores": _nan_to_none(self.scores),
            "config": _thaw(self.config),
            "provenance": _thaw(self.provenance),
        }
        if self.per_prompt is not None:
            data["per_prompt"] = _nan_to_none(self.per_prompt)
        if self.extras:
            data["extras"] = _thaw(self.extras)
        return data

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON atomically (temp file + rename), so a crash never leaves a half-written file."""
        path = Path(path)
        if path.suffix.lower() != ".json":
            raise ResultsFileError(f"Cannot save to {path}: results are saved as JSON, use a .json path.")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        return atomic_write(path, lambda fh: fh.write(text), text=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = "data") -> HeadScores:
        if not isinstance(data, dict):
            raise ResultsFileError(f"{source}: expected a JSON object at the top level.")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ResultsFileError(
                f"{source} is not a HeadScores file: missing key(s) {', '.join(missing)} "
                f"(required: {', '.join(REQUIRED_KEYS)})."
            )
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ResultsFileError(f"{source}: format_version {version} is not supported (expected {FORMAT_VERSION}).")
        n_layers, n_heads = data["n_layers"], data["n_heads"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (n_layers, n_heads)):
            raise ResultsFileError(
                f"{source}: n_layers and n_heads must be positive integers, got {n_layers!r} and {n_heads!r}."
            )
        scores = _parse_grid(data["scores"], (n_layers, n_heads), f"{source}: scores")
        per_prompt = None
        if data.get("per_prompt") is not None:
            pp = data["per_prompt"]
            if not isinstance(pp, list):
                raise ResultsFileError(f"{source}: per_prompt must be a list of [n_layers][n_heads] grids.")
            per_prompt = (
                np.stack([_parse_grid(g, (n_layers, n_heads), f"{source}: per_prompt[{i}]") for i, g in enumerate(pp)])
                if pp
                else np.zeros((0, n_layers, n_heads))
            )
        for key in ("config", "provenance"):
            if not isinstance(data[key], dict):
                raise ResultsFileError(f"{source}: {key} must be a JSON object.")
        extras = data.get("extras") or {}
        if not isinstance(extras, dict):
            raise ResultsFileError(f"{source}: extras must be a JSON object.")
        if not isinstance(data["metric"], str) or not isinstance(data["model"], str):
            raise ResultsFileError(f"{source}: metric and model must be strings.")
        try:
            return cls(
                scores=scores,
                metric=data["metric"],
                model=data["model"],
                config=data["config"],
                provenance=data["provenance"],
                per_prompt=per_prompt,
                extras=extras,
            )
        except (ResultsError, TypeError) as exc:
            raise ResultsFileError(f"{source}: {exc}") from None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        metric: str | None = None,
        model: str | None = None,
    ) -> HeadScores:
        """Read a JSON results file; `metric`/`model` (optional) must match what the file says."""
        path = validate.regular_file(path, "Results file", ResultsFileError, max_bytes=None)
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            raise ResultsFileError(f"Results file {path} is not UTF-8 text: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ResultsFileError(
                f"Results file {path} is corrupt: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})."
            ) from exc
        except ValueError as exc:  # NaN / Infinity literals (Python's json would accept them)
            raise ResultsFileError(f"Results file {path} is corrupt: {exc}.") from exc
        except RecursionError:
            raise ResultsFileError(f"Results file {path} is corrupt: JSON nested too deeply.") from None
        except OSError as exc:
            raise ResultsFileError(f"Results file {path} cannot be read: {exc.strerror}.") from exc
        result = cls.from_dict(data, source=f"Results file {path}")
        if metric is not None and result.metric != metric:
            raise ResultsFileError(f"Results file {path} holds metric {result.metric!r}, not {metric!r}.")
        if model is not None and result.model != model:
            raise ResultsFileError(f"Results file {path} was made with model {result.model!r}, not {model!r}.")
        return result


def _parse_grid(value: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    """A [n_layers][n_heads] list of numbers or nulls, checked cell by cell."""
    n_layers, n_heads = shape
    if not isinstance(value, list) or len(value) != n_layers:
        raise ResultsFileError(f"{what} must be a list of {n_layers} rows (one per layer).")
    out = np.full(shape, np.nan)
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != n_heads:
            raise ResultsFileError(f"{what}: row {i} must hold {n_heads} values (one per head).")
        for j, x in enumerate(row):
            if x is None:
                continue
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise ResultsFileError(f"{what}: L{i}H{j} is {_short(x)}, expected a number or null.")
            try:
                value = float(x)
            except OverflowError:  # an integer beyond float range
                value = math.inf
            if not math.isfinite(value):  # 1e999 parses to inf
                raise ResultsFileError(f"{what}: L{i}H{j} is {_short(x)}, not a finite number (null = not scored).")
            out[i, j] = value
    return out


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."
