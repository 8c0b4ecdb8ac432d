"""Figures and tables for docs/icl_regression.md from the checkpoints of scripts/icl_experiment.sh.

usage: python scripts/icl_report.py RUN_DIR FIG_DIR
Reads RUN_DIR/{h4,h1,h4-linear}.pt, writes PNGs to FIG_DIR and RUN_DIR/report.json + RUN_DIR/report.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

from interp.lines.icl import analyze, lengths, load_checkpoint
from interp.lines.icl.figures import plot_length_curve, plot_matrices, plot_training_curves

LENGTHS = [10, 20, 40, 60, 80, 120, 160, 240, 320]


def _md(frame: pd.DataFrame, digits: int = 5) -> str:
    """A GitHub markdown table (no tabulate dependency)."""

    def cell(v: object) -> str:
        return f"{v:.{digits}g}" if isinstance(v, float) else str(v)

    rows = [list(frame.columns), ["---"] * frame.shape[1], *[[cell(v) for v in r] for r in frame.to_numpy()]]
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)


def _short(ckpt: object) -> dict:
    meta = ckpt.meta  # type: ignore[attr-defined]
    return {"step": meta["step"], "train_seconds": meta["train_seconds"], "final_eval_mse": meta["final_eval_mse"]}


def main(run_dir: Path, fig_dir: Path) -> None:
    torch.set_num_threads(1)
    h4, h1, lin = (load_checkpoint(run_dir / f"{n}.pt") for n in ("h4", "h1", "h4-linear"))
    report4 = analyze(h4, [h1, lin])
    report1 = analyze(h1)
    mse = report4.mse.set_index("predictor")["mse"]
    plot_matrices(report4.kq, report4.ov, f"H=4 softmax, step {h4.step}", fig_dir / "matrices_h4.png")
    plot_matrices(report1.kq, report1.ov, f"H=1 softmax, step {h1.step}", fig_dir / "matrices_h1.png")
    plot_training_curves(
        {f"{c.name} ({c.config.n_heads} head, {c.config.attention})": c.meta["curve"] for c in (h4, h1, lin)},
        {"ridge = Bayes": mse["ridge = Bayes-optimal"], "one-step GD, best step": mse["one-step GD, best step"]},
        fig_dir / "training_curves.png",
    )
    curve = lengths([h4, h1, lin], LENGTHS)
    plot_length_curve(curve, h4.config.L, fig_dir / "length_generalization.png")
    curve.to_csv(run_dir / "lengths.csv", index=False)
    out = {
        "h4": {"patterns": report4.patterns.to_dict("records"), "summary": report4.summary, "meta": _short(h4)},
        "h1": {"patterns": report1.patterns.to_dict("records"), "summary": report1.summary, "meta": _short(h1)},
        "linear": {"meta": _short(lin)},
        "mse": report4.mse.to_dict("records"),
        "lengths": curve.pivot(index="L", columns="predictor", values="mse").reset_index().to_dict("records"),
    }
    (run_dir / "report.json").write_text(json.dumps(out, indent=1, default=str))
    cols = ["label", "kq_diag_share", "kq_homogeneity", "ov_last_share", "omega", "mu", "step_contribution", "sign"]
    md = [
        "## H=4 heads",
        _md(report4.patterns[cols]),
        "",
        "summary: " + json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in report4.summary.items()}),
        "",
        "## H=1",
        _md(report1.patterns[cols]),
        "",
        "summary: " + json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in report1.summary.items()}),
        "",
        "## Test MSE",
        _md(report4.mse[["predictor", "mse", "excess_mse", "param"]], 4),
        "",
        "## Lengths",
        _md(curve.pivot(index="L", columns="predictor", values="mse").reset_index(), 4),
    ]
    (run_dir / "report.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pd.set_option("display.width", 200)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
