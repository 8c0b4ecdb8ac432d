"""`interp entropy …`: the collapse/overload report over a saved `entropy` result, and the LayerNorm-free experiment.

interp scan entropy --model default --prompts reference --out entropy.json     (the analyzer, via the registry)
interp entropy report entropy.json --overload 0.75 --collapse 0.1 --html report.html --csv layers.csv
interp entropy experiment --out docs/entropy                                    (~30 min on 2 cores)
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from interp.cli import checked, console, friendly_errors, parse_options, writable_file, writable_folder, wrote
from interp.core.errors import UsageError

entropy_app = typer.Typer(help="Attention entropy: collapse/overload report and the LayerNorm-free experiment.")


def register(app: typer.Typer) -> None:
    entropy_app.command(name="report")(friendly_errors(report))
    entropy_app.command(name="experiment")(friendly_errors(experiment))
    app.add_typer(entropy_app, name="entropy")


def report(
    path: Path = typer.Argument(..., help="An `entropy` HeadScores JSON (from `interp scan entropy --out`)."),
    collapse: float = typer.Option(0.1, help="Collapsed: normalized entropy below this fraction of the maximum."),
    overload: float = typer.Option(0.75, help="Overloaded: normalized entropy above this fraction of the maximum."),
    html: Path | None = checked(
        typer.Option(None, help="Write the heatmap, per-layer distribution and class bars (HTML)."), writable_file()
    ),
    csv: Path | None = checked(typer.Option(None, help="Write the per-layer table as CSV."), writable_file()),
    heads_csv: Path | None = checked(
        typer.Option(None, "--heads-csv", help="Write the per-head table (with classes) as CSV."), writable_file()
    ),
) -> None:
    """Class every head collapsed / normal / overloaded and print counts per layer."""
    from interp.core.files import atomic_write
    from interp.core.results import HeadScores
    from interp.lines.entropy.report import EntropyReport

    rep = EntropyReport(HeadScores.load(path), collapse=collapse, overload=overload)
    table = rep.per_layer()
    # Files first (atomically), then the printout: a printing problem never loses them.
    if csv is not None:
        text = table.to_csv(index=False)
        atomic_write(csv, lambda fh: fh.write(text), text=True)
    if heads_csv is not None:
        heads_text = rep.heads().to_csv(index=False)
        atomic_write(heads_csv, lambda fh: fh.write(heads_text), text=True)
    if html is not None:  # self-contained: plotly.js embedded, so the page opens offline
        from interp.core.figures import write_figure_html

        write_figure_html([rep.heatmap(), rep.distribution(), rep.class_bars()], html, title=str(path.name))
    rows = [
        [
            int(r.layer),
            int(r.heads),
            int(r.collapsed),
            int(r.normal),
            int(r.overloaded),
            f"{r.frac_overloaded:.0%}",
            f"{r.mean_normalized:.3f}",
            f"{r.mean_raw:.3f}",
        ]
        for r in table.itertuples()
    ]
    cols = ["layer", "heads", "collapsed", "normal", "overloaded", "% overloaded", "mean H/Hmax", "mean H (nats)"]
    title = f"Entropy classes for {rep.result.model} (collapse < {collapse:g}, overload > {overload:g} of max)"
    console.print(Text(title, style="bold"))
    out = Table()
    for col in cols:
        out.add_column(col)
    for row in rows:
        out.add_row(*map(str, row))
    console.print(out)
    totals = rep.totals()
    console.print(
        f"All {totals['heads']} heads: {totals['collapsed']} collapsed ({totals['frac_collapsed']:.1%}), "
        f"{totals['normal']} normal, {totals['overloaded']} overloaded ({totals['frac_overloaded']:.1%})."
    )
    flagged = rep.flagged()
    for klass in ("collapsed", "overloaded"):  # the per-head classification: which heads, how far
        part = flagged[flagged["class"] == klass]
        heads = ", ".join(f"{r.label} {r.normalized:.3f}" for r in part.itertuples())
        console.print(f"{klass.capitalize()} heads ({len(part)}): {heads or 'none'}", highlight=False)
    for written in (csv, heads_csv, html):
        if written is not None:
            wrote(written)


def experiment(
    out: Path = checked(
        typer.Option(Path("docs/entropy"), help="Folder for results.json, results.md, the PNG, HeadScores."),
        writable_folder(),
    ),
    size: str = typer.Option("default", help="default (the recorded run, ~30 min on 2 cores) or tiny (seconds)."),
    options: list[str] = typer.Option([], "--set", "-s", help="Override an ExperimentConfig field, key=value."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train the four variants (standard, no-LN GELU, no-LN ReLU, no-LN + entropy reg.) and compare entropy."""
    from interp.lines.entropy.experiment import ExperimentConfig, results_markdown, run_experiment

    if size not in ("default", "tiny"):
        raise UsageError(f"--size {size!r} is not allowed; choose one of: default, tiny.")
    base = (ExperimentConfig.tiny() if size == "tiny" else ExperimentConfig()).to_dict()
    overrides = parse_options(options)
    cfg = ExperimentConfig.from_strings(overrides, **{k: v for k, v in base.items() if k not in overrides})
    record = run_experiment(cfg, out, progress=progress)
    console.print(results_markdown(record))
    console.print(f"Total {record['total_seconds']} s. Wrote {out}/results.json, results.md, entropy_experiment.png")
