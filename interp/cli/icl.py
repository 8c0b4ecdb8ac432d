"""`interp icl ...`: train the in-context regression attention model and analyze its heads.

interp icl train --out runs/icl/h4.pt --heads 4 --steps 60000
interp icl analyze runs/icl/h4.pt --compare runs/icl/h1.pt --out runs/icl/h4-analysis
interp icl lengths runs/icl/h4.pt runs/icl/h4-linear.pt --lengths 10,20,40,80,160
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from interp.cli import (
    checked,
    console,
    friendly_errors,
    parse_options,
    print_table,
    writable_file,
    writable_folder,
    wrote,
)
from interp.core import validate
from interp.core.errors import InterpError, UsageError

icl_app = typer.Typer(help="In-context linear regression: train multi-head attention, measure KQ/OV patterns.")


def register(app: typer.Typer) -> None:
    icl_app.command(name="train")(friendly_errors(train))
    icl_app.command(name="analyze")(friendly_errors(analyze))
    icl_app.command(name="lengths")(friendly_errors(lengths))
    app.add_typer(icl_app, name="icl")


def train(
    out: Path = checked(
        typer.Option(..., "--out", "-o", help="Checkpoint path NAME.pt (NAME.json is written next to it)."),
        writable_file(".pt"),
    ),
    heads: int = typer.Option(4, "--heads", help="Number of attention heads H."),
    attention: str = typer.Option("softmax", help="softmax | linear."),
    steps: int = typer.Option(60_000, help="Adam steps (one fresh batch of prompts per step)."),
    seed: int = typer.Option(0, help="Seed of the initialization and of every training batch."),
    options: list[str] = typer.Option([], "--set", "-s", help="Other TrainConfig fields as key=value (repeatable)."),
    threads: int = typer.Option(1, help="torch CPU threads (1 is fastest for this tiny model; bits depend on it)."),
    resume: bool = typer.Option(False, "--resume/--no-resume", help="Continue the run saved at --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train one-layer multi-head attention on fresh in-context regression prompts."""
    import torch

    from interp.lines.icl.train import TrainConfig
    from interp.lines.icl.train import train as run_train

    config = TrainConfig.from_strings(
        parse_options(options), n_heads=heads, attention=attention, steps=steps, seed=seed
    )
    if out.exists() and not resume:
        raise UsageError(f"{out} exists; pass --resume to continue it or choose another --out.")
    validate.output_file(out.with_suffix(".json"), "--out (its .json metadata)")
    torch.set_num_threads(threads)
    result = run_train(config, out=out, progress=progress, resume=resume)
    last = result.curve[-1]
    if not math.isfinite(last["eval_mse"]):
        raise InterpError(
            f"Training diverged: eval MSE is {last['eval_mse']} after {config.steps} steps (lr={config.lr:g}). "
            f"The checkpoint was written to {out}; train again with a smaller --set lr=…"
        )
    console.print(
        f"Trained H={config.n_heads} {config.attention} for {config.steps} steps in {result.seconds:.1f} s "
        f"({threads} thread(s)); eval MSE {last['eval_mse']:.4f}. Wrote {out} and {out.with_suffix('.json')}"
    )


def analyze(
    checkpoint: Path = typer.Argument(..., help="A checkpoint NAME.pt written by `interp icl train`."),
    compare: list[Path] = typer.Option([], "--compare", "-c", help="Other checkpoints to test on the same prompts."),
    n_test: int = typer.Option(20_000, help="Number of test prompts."),
    seed: int = typer.Option(20_250_317, help="Seed of the test prompts."),
    out: Path | None = checked(
        typer.Option(None, "--out", "-o", help="Write tables, HeadScores and heatmaps here (a dir)."),
        writable_folder(),
    ),
    threads: int = typer.Option(1, help="torch CPU threads."),
) -> None:
    """Per-head KQ/OV pattern metrics, the effective GD step c, and test MSE against GD / ridge / OLS."""
    import torch

    from interp.lines.icl.analysis import analyze as run_analyze

    torch.set_num_threads(threads)

    report = run_analyze(checkpoint, compare, n_test=n_test, seed=seed)
    if out is not None:  # saved before anything is printed
        written = report.save(out)
    cols = ["kq_diag_share", "kq_homogeneity", "ov_last_share", "omega", "mu", "step_contribution"]
    rows = [[r.label, *(f"{getattr(r, c):.6g}" for c in cols), r.sign, r.active] for r in report.patterns.itertuples()]
    print_table(f"Head patterns of {report.name}", ["head", *cols, "sign", "active"], rows)
    s = report.summary
    console.print(
        f"c = {s['c']:.4f}   zero-sum residual |sum mu|/sum|mu| = {s['zero_sum_residual']:.4g}   "
        f"sign consistency = {s['sign_consistency']:.4f}   active heads: {s['n_positive']} (+) / {s['n_negative']} (-)"
    )
    rows = [[r.predictor, f"{r.mse:.5f}", f"{r.excess_mse:.5f}", r.param] for r in report.mse.itertuples()]
    print_table(f"Test MSE on {n_test} prompts", ["predictor", "mse", "mse - noise", "parameters"], rows)
    if out is not None:
        wrote(f"{len(written)} files to {out}")


def lengths(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoints trained on the same task (e.g. softmax, linear)."),
    lengths_: str = typer.Option("10,20,40,60,80,120,160", "--lengths", help="Comma-separated prompt lengths."),
    n: int = typer.Option(4096, help="Test prompts per length."),
    seed: int = typer.Option(20_250_317),
    csv: Path | None = checked(typer.Option(None, help="Write the long-form curve as CSV."), writable_file()),
    threads: int = typer.Option(1, help="torch CPU threads."),
) -> None:
    """Test MSE vs prompt length (beyond the training length) for each checkpoint, ridge and best-step GD."""
    import torch

    from interp.lines.icl.analysis import lengths as run_lengths

    torch.set_num_threads(threads)

    try:
        values = [int(v) for v in lengths_.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--lengths must be comma-separated integers, got {lengths_!r}.") from None
    if not values or min(values) < 1:
        raise UsageError(f"--lengths must be integers >= 1, got {lengths_!r}.")
    frame = run_lengths(checkpoints, values, n=n, seed=seed)
    if csv is not None:  # saved before anything is printed
        frame.to_csv(csv, index=False)
    wide = frame.pivot(index="L", columns="predictor", values="mse")
    print_table(
        "Test MSE vs prompt length",
        ["L", *wide.columns],
        [[L, *(f"{v:.4f}" for v in row)] for L, row in zip(wide.index, wide.to_numpy(), strict=True)],
    )
    if csv is not None:
        wrote(csv)
