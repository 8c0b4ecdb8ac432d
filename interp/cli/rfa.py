"""`interp rfa ...`: random-feature attention experiments.

interp rfa experiment --out docs/random_features/d4 --set repeats=3
interp rfa experiment --set dim=8 --set n_keys=8 --set n_heads=128
interp rfa targets
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from interp.cli import checked, console, friendly_errors, parse_options, print_table, writable_folder

rfa_app = typer.Typer(
    name="rfa", help="Random-feature attention: sample-complexity experiment, target functions.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    rfa_app.command(name="experiment")(friendly_errors(experiment))
    rfa_app.command(name="targets")(friendly_errors(targets))
    app.add_typer(rfa_app, name="rfa")


def experiment(
    out: Path = checked(
        typer.Option(Path("rfa-experiment"), "--out", "-o", help="Folder for results.json, CSV and PNG."),
        writable_folder(),
    ),
    options: list[str] = typer.Option(
        [], "--set", "-s", help="Config key=value, e.g. dim=8, sample_sizes=64,256,1024, targets=inner-p1,inner-p2."
    ),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Draw sample_complexity.png (matplotlib)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Test error vs number of samples for RFA (zero / non-zero mean) and the RF-MLP at equal feature counts."""
    from interp.lines.rfa.experiment import RFAExperimentConfig, require_matplotlib, run_experiment

    config = cast(RFAExperimentConfig, RFAExperimentConfig.from_strings(parse_options(options)))
    if figure:
        require_matplotlib()  # fail before the run, not after it
    result = run_experiment(config, progress)
    result.save(out, figure=figure)
    n_max = max(config.sample_sizes)
    rows = []
    for target in config.targets:
        errors = result.table(target).loc[n_max]
        rows.append([target, *(f"{errors[m]:.4f}" for m in config.methods)])
    title = f"Relative test MSE at n={n_max}, mean of {config.repeats} seeds"
    print_table(title, ["target", *config.methods], rows)
    console.print(f"{config.n_features} trained weights per model; every n in {out}/summary.csv")
    for claim, per_target in result.claims().items():
        text = ", ".join(
            f"{t} {v['wins']}/{v['cells']} (ratio at n={n_max}: {v['error_ratio_at_largest_n']:.3g})"
            for t, v in per_target.items()
        )
        console.print(f"{claim}: {text}")
    console.print(f"Wrote {out}/results.json, {out}/summary.csv" + (f", {out}/sample_complexity.png" if figure else ""))


def targets() -> None:
    """List the target functions of the experiment."""
    from interp.lines.rfa.targets import list_targets

    rows = [[t.name, t.description, t.permutation_invariant, t.inner_product] for t in list_targets()]
    print_table(
        "Targets (inner-pP works for any degree P >= 1)", ["name", "f*", "perm.-invariant", "<x0,xi> only"], rows
    )
