"""Dose-response: how attack success and the harmless-side cost grow with the number of heads ablated together.

For each head order (Ships: heads by mean Ships, largest first; dataset: Sahara's greedy group in its order,
then the rest by dataset-level Ships; random-s{seed}: a seeded permutation of all heads) and each k in a grid,
the first k heads of the order are ablated together while the model answers the same held-out harmful prompts
(ASR three ways, see interp.lines.safety.judge) and harmless prompts (refusal rate by the robust matcher, and
the mean next-token KL at the last prompt position). A user learns whether refusal sits in a few heads (the
paper's Llama-2 finding) or is spread over many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from interp.core.errors import InterpError
from interp.core.heads import Head
from interp.core.results import HeadScores
from interp.lines.safety.judge import with_fluent


def ranked_heads(scores: HeadScores) -> list[Head]:
    """Every scored head, most important first."""
    return scores.top_heads(int(np.isfinite(scores.scores).sum()))


def head_orders(
    ships: HeadScores, dataset: HeadScores, sahara_group: Sequence[Head] = (), seeds: Sequence[int] = (0, 1)
) -> dict[str, list[Head]]:
    """The head orders of the dose-response: "ships", "dataset" (Sahara's group first) and "random-s{seed}"."""
    by_dataset = ranked_heads(dataset)
    group = list(sahara_group)
    orders = {"ships": ranked_heads(ships), "dataset": group + [h for h in by_dataset if h not in group]}
    every = sorted(by_dataset)
    for seed in seeds:
        perm = np.random.default_rng([seed, 7]).permutation(len(every))
        orders[f"random-s{seed}"] = [every[i] for i in perm]
    return orders


def dose_conditions(orders: Mapping[str, Sequence[Head]], ks: Sequence[int]) -> dict[str, list[Head] | None]:
    """Named conditions "{order}@{k}" (the first k heads of the order) plus "none"."""
    if not ks or any(k < 1 for k in ks):
        raise InterpError(f"ks must be positive head counts, got {list(ks)}.")
    out: dict[str, list[Head] | None] = {"none": None}
    for name, order in orders.items():
        for k in ks:
            if k > len(order):
                raise InterpError(f"k={k} exceeds the {len(order)} heads of order {name!r}.")
            out[f"{name}@{k}"] = list(order[:k])
    return out


def split_condition(name: str) -> tuple[str, int]:
    """ "ships@8" -> ("ships", 8); "none" -> ("none", 0)."""
    if name == "none":
        return "none", 0
    order, _, k = name.rpartition("@")
    return order, int(k)


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score 95% interval of a binomial proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Clamped to contain p: at p = 0 or 1 rounding can put a bound a hair past it (a negative error bar).
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def summarize(
    harmful: pd.DataFrame, harmless: pd.DataFrame | None, kl: Mapping[str, np.ndarray] | None
) -> pd.DataFrame:
    """One row per condition: order, k, n, each ASR with its 95% interval, harmless refusal rate and mean KL.

    harmful / harmless: judged rows (columns condition, success_keyword, success_robust[, success_judged],
    robust)."""
    harmful = with_fluent(harmful)
    rows = []
    for name, group in harmful.groupby("condition", sort=False):
        order, k = split_condition(str(name))
        row: dict[str, object] = {"condition": name, "order": order, "k": k, "n": len(group)}
        for col in ("success_keyword", "success_robust", "success_fluent", "success_judged"):
            if col in group:
                s = int(group[col].sum())
                lo, hi = wilson(s, len(group))
                key = col.replace("success_", "asr_")
                row.update({key: s / len(group), f"{key}_lo": lo, f"{key}_hi": hi})
        if "degenerate" in group:
            row["degenerate_rate"] = float(group["degenerate"].mean())
        if harmless is not None:
            side = harmless[harmless["condition"] == name]
            if len(side):
                refused = int((side["robust"] != "").sum())
                lo, hi = wilson(refused, len(side))
                row.update(
                    harmless_n=len(side),
                    harmless_refusal=refused / len(side),
                    harmless_refusal_lo=lo,
                    harmless_refusal_hi=hi,
                )
                if "degenerate" in side:
                    row["harmless_degenerate"] = float(side["degenerate"].mean())
        if kl is not None and name in kl:
            row["harmless_kl"] = float(np.mean(kl[str(name)]))
        rows.append(row)
    out = pd.DataFrame(rows)
    # A grown grid appends its conditions at the end of the rows on file: list each order by k instead.
    first_seen = {o: i for i, o in enumerate(out["order"].unique())}
    return out.sort_values(
        ["order", "k"], key=lambda c: c.map(first_seen) if c.name == "order" else c, kind="stable"
    ).reset_index(drop=True)


def smallest_k(summary: pd.DataFrame, orders: Sequence[str], column: str = "asr_judged", gap: float = 0.3) -> dict:
    """For each of `orders`, the smallest k whose `column` beats the mean of the random orders at the same k by
    at least `gap`, with that k's harmless cost; None where no k does."""
    randoms = summary[summary["order"].str.startswith("random")]
    baseline = randoms.groupby("k")[column].mean()
    out: dict[str, object] = {}
    for order in orders:
        rows = summary[summary["order"] == order].sort_values("k")
        hit = None
        for r in rows.itertuples():
            if r.k in baseline.index and getattr(r, column) - baseline[r.k] >= gap:
                hit = {
                    "k": int(r.k),
                    column: float(getattr(r, column)),
                    "random_mean": float(baseline[r.k]),
                    "harmless_refusal": float(getattr(r, "harmless_refusal", math.nan)),
                    "harmless_kl": float(getattr(r, "harmless_kl", math.nan)),
                }
                break
        out[order] = hit
    return out


def _solid_asr(summary: pd.DataFrame, asr: str | None) -> str:
    """The ASR column drawn as the solid line: `asr`, else the LLM-judged ASR, else robust-and-fluent, else robust."""
    return asr or next(c for c in ("asr_judged", "asr_fluent", "asr_robust") if c in summary)


def figure(summary: pd.DataFrame, title: str, asr: str | None = None):  # -> plotly Figure
    """Three panels over k (log scale): judged ASR (keyword ASR dashed), harmless refusal rate, harmless KL;
    one line per order with 95% Wilson intervals; "none" as a dotted reference line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("ASR on held-out harmful prompts", "harmless refusal rate", "harmless next-token KL (nats)"),
    )
    none = summary[summary["order"] == "none"]
    colours = {"ships": "#d62728", "dataset": "#1f77b4"}
    asr = _solid_asr(summary, asr)
    for order, rows in summary[summary["order"] != "none"].groupby("order", sort=False):
        rows = rows.sort_values("k")
        colour = colours.get(str(order), "#7f7f7f")
        err = dict(
            type="data", symmetric=False, array=rows[f"{asr}_hi"] - rows[asr], arrayminus=rows[asr] - rows[f"{asr}_lo"]
        )
        fig.add_trace(go.Scatter(x=rows.k, y=rows[asr], error_y=err, name=f"{order} ({asr[4:]})",
                                 line=dict(color=colour), legendgroup=str(order)), 1, 1)  # fmt: skip
        fig.add_trace(go.Scatter(x=rows.k, y=rows["asr_keyword"], name=f"{order} (keyword)", showlegend=False,
                                 line=dict(color=colour, dash="dash"), legendgroup=str(order)), 1, 1)  # fmt: skip
        if "harmless_refusal" in rows:
            err = dict(type="data", symmetric=False, array=rows.harmless_refusal_hi - rows.harmless_refusal,
                       arrayminus=rows.harmless_refusal - rows.harmless_refusal_lo)  # fmt: skip
            fig.add_trace(go.Scatter(x=rows.k, y=rows.harmless_refusal, error_y=err, showlegend=False,
                                     line=dict(color=colour), legendgroup=str(order)), 1, 2)  # fmt: skip
        if "harmless_kl" in rows:
            fig.add_trace(go.Scatter(x=rows.k, y=rows.harmless_kl, showlegend=False, line=dict(color=colour),
                                     legendgroup=str(order)), 1, 3)  # fmt: skip
    if len(none):
        fig.add_hline(y=float(none[asr].iloc[0]), line_dash="dot", row=1, col=1, annotation_text="no ablation")
    fig.update_xaxes(type="log", title_text="heads ablated together (k)")
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=3)  # a broken model's KL is 100x a working one's
    fig.update_layout(title=title, height=420, width=1250, legend=dict(orientation="h", y=-0.25))
    return fig


def figure_png(summary: pd.DataFrame, title: str, path: str | Path, asr: str | None = None) -> Path:
    """The same three panels as a static PNG (matplotlib), for docs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    asr = _solid_asr(summary, asr)
    colours = {"ships": "#d62728", "dataset": "#1f77b4"}
    for order, rows in summary[summary["order"] != "none"].groupby("order", sort=False):
        rows = rows.sort_values("k")
        c = colours.get(str(order), "#7f7f7f")
        yerr = [rows[asr] - rows[f"{asr}_lo"], rows[f"{asr}_hi"] - rows[asr]]
        axes[0].errorbar(rows.k, rows[asr], yerr=yerr, color=c, label=f"{order} ({asr[4:]})", capsize=3)
        axes[0].plot(rows.k, rows["asr_keyword"], color=c, ls="--", alpha=0.6)
        if "harmless_refusal" in rows:
            yerr = [rows.harmless_refusal - rows.harmless_refusal_lo, rows.harmless_refusal_hi - rows.harmless_refusal]
            axes[1].errorbar(rows.k, rows.harmless_refusal, yerr=yerr, color=c, capsize=3)
        if "harmless_kl" in rows:
            axes[2].plot(rows.k, rows.harmless_kl, color=c, marker="o")
    none = summary[summary["order"] == "none"]
    if len(none):
        axes[0].axhline(float(none[asr].iloc[0]), color="k", ls=":", label="no ablation")
    titles = (f"ASR (solid: {asr[4:]}, dashed: keyword)", "harmless refusal rate", "harmless KL (nats)")
    ks = sorted(int(k) for k in summary.loc[summary["order"] != "none", "k"].unique())
    for ax, name in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])  # the grid's own doses, not 2x10^1
        ax.minorticks_off()
        ax.set_xlabel("heads ablated together (k)")
        ax.set_title(name)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[2].set_yscale("log")  # a broken model's KL is 100x a working one's
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
