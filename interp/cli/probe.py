"""`interp probe`: random-feature probes of every head for labelled prompts, with a control.

interp probe --labels harmful-harmless --model default --out probe.json
interp probe --labels my_labels.jsonl --set control=shuffled --set position=mean

The same analysis runs through the generic scanner as `interp scan probe --set labels=FILE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from interp.cli import (
    MODEL_HELP,
    checked,
    device_option,
    dtype_option,
    friendly_errors,
    parse_options,
    print_table,
    writable_file,
    wrote,
)


def register(app: typer.Typer) -> None:
    app.command(name="probe")(friendly_errors(probe))


def probe(
    labels: str = typer.Option(
        "harmful-harmless",
        "--labels",
        "-l",
        help='JSONL file, one {"prompt": ..., "label": ...} per line, or a built-in pair (harmful-harmless).',
    ),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    out: Path | None = checked(
        typer.Option(None, "--out", "-o", help="Write the HeadScores JSON (selectivity) here."), writable_file(".json")
    ),
    top: int = typer.Option(10, help="How many heads to print (highest selectivity first)."),
    limit: int | None = typer.Option(None, help="At most N prompts per class."),
    options: list[str] = typer.Option(
        [], "--set", "-s", help="Probe option key=value (control, position, n_components, folds, seed, C, ...)."
    ),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Probe every head's output for LABELS; print accuracy, control and selectivity per head."""
    from interp.lines.rfa.metrics import ProbeConfig, check_labels, load_labelled, probe_heads
    from interp.model.loading import load_model

    config = cast(ProbeConfig, ProbeConfig.from_strings(parse_options(options), labels=labels, limit=limit))
    prompts, label_list = load_labelled(config.labels, config.limit)  # bad labels fail before the model loads
    check_labels(prompts, label_list, config.folds)
    loaded = load_model(model, device, dtype)
    result = probe_heads(loaded, prompts, label_list, config, progress)
    if out is not None:  # saved before anything is printed
        result.selectivity.save(out)
    extras = result.selectivity.extras
    counts = ", ".join(f"{k}: {v}" for k, v in extras["class_counts"].items())
    rows = [
        [r.label, f"{r.accuracy:.3f}", f"{r.control:.3f}", f"{r.selectivity:+.3f}"]
        for r in result.table(top).itertuples()
    ]
    print_table(
        f"Probe ({counts}; {config.folds}-fold held-out accuracy; control: {extras['control_model']}) on {loaded.name}",
        ["head", "accuracy", "control", "selectivity"],
        rows,
    )
    if out is not None:
        wrote(out)
