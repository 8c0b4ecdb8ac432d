"""Collapse / overload report over an `entropy` result.

Each head is classed by its normalized entropy (entropy as a fraction of its maximum):
collapsed (< `collapse`, attention on ~one key), overloaded (> `overload`, attention ~uniform), else normal.
Defaults follow shared/methods/entropy.md: collapse < 0.1, overload > 0.75 (the paper's top quartile bin).

    report = EntropyReport(result)                 # result: HeadScores from interp.scan("entropy", ...)
    report.per_layer()                             # counts and fractions per layer (DataFrame)
    report.heatmap().show(); report.distribution().show()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.core.config import Config
from interp.core.errors import InterpError
from interp.core.results import HeadScores
from interp.lines.entropy.metrics import entropy_grids

if TYPE_CHECKING:
    import plotly.graph_objects as go

CLASSES: tuple[str, ...] = ("collapsed", "normal", "overloaded")
COLORS = {"collapsed": "#3b6fb6", "normal": "#9a9a9a", "overloaded": "#d1495b"}
QUARTILES: tuple[str, ...] = ("[0, 0.25)", "[0.25, 0.5)", "[0.5, 0.75)", "[0.75, 1]")


@dataclass(frozen=True)
class Thresholds(Config):
    collapse: float = 0.1
    """A head whose normalized entropy is below this is collapsed."""
    overload: float = 0.75
    """A head whose normalized entropy is above this is overloaded."""

    def check(self) -> None:
        if not 0 <= self.collapse < self.overload <= 1:
            raise InterpError(
                f"Thresholds must satisfy 0 <= collapse < overload <= 1 (fractions of the maximum entropy), "
                f"got collapse={self.collapse}, overload={self.overload}."
            )


def classify(normalized: np.ndarray, thresholds: Thresholds | None = None) -> np.ndarray:
    """[L, H] normalized entropy -> [L, H] class names ("" where the head was not scored)."""
    t = thresholds or Thresholds()
    out = np.full(normalized.shape, "normal", dtype=object)
    out[normalized < t.collapse] = "collapsed"
    out[normalized > t.overload] = "overloaded"
    out[np.isnan(normalized)] = ""
    return out


class EntropyReport:
    """Classes, per-layer counts and plots for one `entropy` HeadScores."""

    def __init__(self, result: HeadScores, collapse: float = 0.1, overload: float = 0.75) -> None:
        self.result = result
        self.thresholds = Thresholds(collapse=collapse, overload=overload)
        self.raw, self.normalized = entropy_grids(result)  # [L, H] each
        self.classes = classify(self.normalized, self.thresholds)  # [L, H]

    @property
    def n_layers(self) -> int:
        return self.result.n_layers

    def heads(self) -> pd.DataFrame:
        """One row per head: layer, head, label, raw (nats), normalized, class."""
        frame = self.result.to_frame()[["layer", "head", "label"]]
        return frame.assign(raw=self.raw.ravel(), normalized=self.normalized.ravel(), **{"class": self.classes.ravel()})

    def flagged(self) -> pd.DataFrame:
        """The collapsed heads (lowest entropy first), then the overloaded ones (highest first): heads() rows."""
        frame = self.heads()
        frame = frame[frame["class"].isin(["collapsed", "overloaded"])]
        # collapsed: 0..1 ascending; overloaded: 2 - normalized puts the most uniform head first after them.
        order = np.where(frame["class"] == "collapsed", frame["normalized"], 3 - frame["normalized"])
        return frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)

    def per_layer(self) -> pd.DataFrame:
        """Per layer: head counts and fractions of each class, and mean entropy (normalized and raw)."""
        rows = []
        for layer in range(self.n_layers):
            scored = self.classes[layer] != ""
            row: dict[str, Any] = {"layer": layer, "heads": int(scored.sum())}
            for c in CLASSES:
                row[c] = int((self.classes[layer] == c).sum())
            for c in CLASSES:
                row[f"frac_{c}"] = row[c] / max(1, row["heads"])
            row["mean_normalized"] = float(np.nanmean(self.normalized[layer])) if scored.any() else np.nan
            row["mean_raw"] = float(np.nanmean(self.raw[layer])) if scored.any() else np.nan
            rows.append(row)
        return pd.DataFrame(rows)

    def totals(self) -> dict[str, float | int]:
        """Counts and fractions over all heads."""
        scored = int((self.classes != "").sum())
        out: dict[str, float | int] = {"heads": scored}
        for c in CLASSES:
            out[c] = int((self.classes == c).sum())
            out[f"frac_{c}"] = out[c] / max(1, scored)
        return out

    def quartiles(self) -> pd.DataFrame:
        """The paper's bins: per layer, the fraction of heads in each quarter of the maximum entropy."""
        edges = np.array([0.25, 0.5, 0.75])
        rows = []
        for layer in range(self.n_layers):
            values = self.normalized[layer][~np.isnan(self.normalized[layer])]
            bins = np.searchsorted(edges, values, side="right")  # 0..3
            row: dict[str, Any] = {"layer": layer}
            for i, name in enumerate(QUARTILES):
                row[name] = float((bins == i).mean()) if len(values) else np.nan
            rows.append(row)
        return pd.DataFrame(rows)

    # ---- plots ------------------------------------------------------------------------------------------
    def heatmap(self, title: str | None = None) -> go.Figure:
        """Normalized entropy per head (0-1); collapsed heads marked "C", overloaded "O"."""
        marks = np.vectorize({"collapsed": "C", "overloaded": "O"}.get)(self.classes, "")
        fig = self.result.heatmap(title=title or f"Attention entropy (normalized) — {self.result.model}")
        trace = fig.data[0]
        trace.z = np.where(np.isnan(self.normalized), None, self.normalized).tolist()
        trace.zmin, trace.zmax = 0.0, 1.0
        trace.text = marks.tolist()
        trace.texttemplate = "%{text}"
        trace.customdata = np.dstack(
            [
                self.result.to_frame()["label"].to_numpy().reshape(self.classes.shape),
                self.classes,
                np.round(self.raw, 4),
            ]
        ).tolist()
        trace.hovertemplate = (
            "%{customdata[0]}: %{z:.4f} of max, %{customdata[2]} nats (%{customdata[1]})<extra></extra>"
        )
        trace.colorbar = {"title": "H / H_max"}
        return fig

    def distribution(self, title: str | None = None) -> go.Figure:
        """Per layer: every head's normalized entropy (points) with a box, and the two thresholds as lines."""
        import plotly.graph_objects as go

        frame = self.heads().dropna(subset=["normalized"])
        fig = go.Figure()
        for c in CLASSES:
            part = frame[frame["class"] == c]
            fig.add_trace(
                go.Scatter(
                    x=part["layer"],
                    y=part["normalized"],
                    mode="markers",
                    name=c,
                    marker={"color": COLORS[c], "size": 7, "opacity": 0.8},
                    text=part["label"],
                    hovertemplate="%{text}: %{y:.4f}<extra></extra>",
                )
            )
        fig.add_trace(
            go.Box(
                x=frame["layer"],
                y=frame["normalized"],
                name="per layer",
                marker_color="#444",
                opacity=0.35,
                boxpoints=False,
            )
        )
        for value, name in ((self.thresholds.collapse, "collapse"), (self.thresholds.overload, "overload")):
            fig.add_hline(y=value, line_dash="dash", line_color="#555", annotation_text=f"{name} {value:g}")
        fig.update_layout(
            title=title or f"Entropy per layer — {self.result.model}",
            xaxis_title="layer",
            yaxis_title="normalized entropy (fraction of max)",
            yaxis_range=[-0.02, 1.05],
        )
        return fig

    def class_bars(self, title: str | None = None) -> go.Figure:
        """Stacked bars: the fraction of heads per class in each layer."""
        import plotly.graph_objects as go

        table = self.per_layer()
        fig = go.Figure(
            [go.Bar(x=table["layer"], y=table[f"frac_{c}"], name=c, marker_color=COLORS[c]) for c in CLASSES]
        )
        fig.update_layout(
            barmode="stack",
            title=title or f"Head classes per layer — {self.result.model}",
            xaxis_title="layer",
            yaxis_title="fraction of heads",
        )
        return fig
