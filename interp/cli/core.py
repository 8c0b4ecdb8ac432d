"""Core commands: models, metrics, scan, show, ablate, app."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from interp.cli import (
    MODEL_HELP,
    checked,
    console,
    device_option,
    dtype_option,
    friendly_errors,
    parse_options,
    print_table,
    print_top,
    run_child,
    writable_file,
    wrote,
)
from interp.core import validate
from interp.core.errors import InterpError, UsageError

VISION_PROMPTS = ["Describe the image."]


def register(app: typer.Typer) -> None:
    for fn in (models, metrics, scan, show, ablate):
        app.command()(friendly_errors(fn))
    app.command(name="app")(friendly_errors(run_app))


def models() -> None:
    """List the named models: size, source and whether they are installed."""
    from interp.model.registry import list_models

    rows = [
        [
            m["name"],
            m["aliases"],
            m["description"],
            m["size"],
            m["source"],
            "yes" if m["installed"] else f"no: {m['install']}",
        ]
        for m in list_models()
    ]
    print_table(
        "Models (or pass a local model directory, a .gguf file or a hub id org/name)",
        ["name", "aliases", "description", "size", "source", "installed"],
        rows,
    )


def metrics() -> None:
    """List the registered head metrics and their options."""
    from interp.core.registry import list_metrics

    rows = [[m.name, m.modality, m.description, ", ".join(m.config_cls.field_names())] for m in list_metrics()]
    print_table("Metrics (set options with --set key=value)", ["metric", "input", "description", "options"], rows)


def scan(
    metric: str = typer.Argument(..., help="Metric name (see `interp metrics`)."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    prompts: str | None = typer.Option(
        None,
        "--prompts",
        "-p",
        help='Prompts file (.txt, one per line; or .jsonl) or a built-in set (default "short"; vision metrics: '
        '"Describe the image.").',
    ),
    prompt: list[str] = typer.Option([], "--prompt", help="A prompt (repeatable); used instead of --prompts."),
    images: str | None = typer.Option(
        None, "--images", help='Vision metrics: a folder of images, an image file, or "scenes" (generated; default).'
    ),
    out: Path | None = checked(
        typer.Option(None, "--out", "-o", help="Write the HeadScores JSON here."), writable_file(".json")
    ),
    top: int = typer.Option(10, help="How many top heads to print."),
    limit: int | None = typer.Option(None, help="Use only the first N prompts."),
    options: list[str] = typer.Option([], "--set", "-s", help="Metric option key=value (repeatable)."),
    labels: str | None = typer.Option(None, help="Labelled prompts (JSONL) for metrics with a `labels` option."),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score every head of a model with METRIC and print the top heads."""
    from interp.core.prompts import check_prompts, load_prompts
    from interp.core.registry import check_applicable, get_metric
    from interp.model.loading import load_model

    info = get_metric(metric)
    settings = parse_options(options)
    if images is not None:
        if info.modality != "vision":
            raise UsageError(f'--images is for vision metrics; "{metric}" reads text only.')
        settings["images"] = images
    if labels is not None:  # a shortcut for --set labels=FILE, for the metrics that take labelled prompts
        if "labels" not in info.config_cls.field_names():
            raise UsageError(f'Metric "{metric}" takes no --labels; it reads its prompts from --prompts.')
        settings["labels"] = labels
    config = info.make_config(settings)  # bad options fail before the model loads
    if prompt and prompts is not None:
        raise UsageError("Give --prompt (one or more prompts) or --prompts (a file or set), not both.")
    if prompt:
        prompt_list = check_prompts(prompt)[:limit] if limit else check_prompts(prompt)
    elif prompts is None and info.modality == "vision":
        prompt_list = VISION_PROMPTS  # the question asked about each image
    else:
        prompt_list = load_prompts(prompts or "short", limit)
    loaded = load_model(model, device, dtype)
    check_applicable(info, loaded)
    result = info.fn(loaded, prompt_list, config, progress)
    if out is not None:  # saved before anything is printed: a printing problem never loses the result
        result.save(out)
    print_top(result, top)
    if out is not None:
        wrote(out)


def show(
    path: Path = typer.Argument(..., help="A HeadScores JSON file."),
    top: int = typer.Option(10, help="How many top heads to print."),
    html: Path | None = checked(
        typer.Option(None, help="Also write the heatmap as self-contained HTML (opens offline)."), writable_file()
    ),
    csv: Path | None = checked(typer.Option(None, help="Also write the long-form table as CSV."), writable_file()),
) -> None:
    """Print the top heads of a saved result (and export its heatmap / table)."""
    from interp.core.figures import write_figure_html
    from interp.core.files import atomic_write
    from interp.core.results import HeadScores

    result = HeadScores.load(path)
    if html is not None:
        write_figure_html(result.heatmap(), html)
    if csv is not None:
        table = result.to_frame().to_csv(index=False)
        atomic_write(csv, lambda fh: fh.write(table), text=True)
    print_top(result, top)
    for written in (html, csv):
        if written is not None:
            wrote(written)


def ablate(
    heads: str = typer.Option(..., "--heads", help="Comma-separated head labels, e.g. L3H1,L5H0."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt to generate from."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    kind: str = typer.Option("zero", help="zero | mean | resample | uniform | scale."),
    alpha: float | None = typer.Option(None, help="Factor for --kind scale (0 ablates, > 1 reinforces)."),
    eps: float = typer.Option(1e-8, help="Query factor for --kind uniform."),
    reference: str = typer.Option("reference", help="Prompts (file or set) that --kind mean averages over."),
    source: str | None = typer.Option(None, help="Source prompt for --kind resample."),
    max_new_tokens: int = typer.Option(48, help="Tokens to generate."),
    template: str = typer.Option("auto", help="auto | chat | raw | query | paper."),
    top_tokens: int = typer.Option(5, help="Show this many most likely next tokens, before and after."),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
) -> None:
    """Generate with and without an intervention on HEADS and print both side by side."""
    from interp.core.prompts import check_prompts, load_prompts
    from interp.engine.compare import generate_pair, next_token_table
    from interp.engine.interventions import MAX_ALPHA, get_kind
    from interp.engine.run import make_intervention
    from interp.model.loading import load_model

    check_prompts([prompt])
    spec = get_kind(kind)  # an unknown kind, a missing --alpha / --source: before the model loads
    if kind == "scale" and alpha is None:
        raise UsageError("--kind scale needs --alpha (0 ablates, 1 leaves the head as is, > 1 reinforces).")
    validate.number("--eps", eps, minimum=0, maximum=1, min_open=True, max_open=True)
    if alpha is not None:
        validate.number("--alpha", alpha, minimum=-MAX_ALPHA, maximum=MAX_ALPHA)
    if spec.needs == "source" and not source:
        raise UsageError(f"--kind {kind} needs --source (the prompt whose head outputs are patched in).")
    ref = load_prompts(reference) if spec.needs == "reference" else None
    loaded = load_model(model, device, dtype)
    validate.integer("--top-tokens", top_tokens, minimum=1, maximum=loaded.d_vocab)
    iv = make_intervention(loaded, heads, kind, alpha=alpha, eps=eps, reference=ref, source=source, template=template)
    base, changed = generate_pair(loaded, prompt, iv, max_new_tokens, template)
    print_table(f"{loaded.name}: {iv.describe()}", ["base", "intervened"], [[base, changed]], show_lines=True)
    frame, kl = next_token_table(loaded, prompt, iv, top_tokens, template)
    rows = [
        [
            r["rank"],
            f"{r['base token']} {r['p base']:.3f} -> {r['p intervened']:.3f}",
            f"{r['intervened token']} {r['p (intervened top)']:.3f}",
        ]
        for r in frame.to_dict("records")
    ]
    print_table(
        f"Next-token distribution (KL base||intervened = {kl:.4g} nats)",
        ["rank", "base token: p base -> p intervened", "intervened top token: p"],
        rows,
    )


def app_script() -> Path:
    """The Streamlit page: apps/ in a source checkout, or the copy packaged inside the wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "apps" / "head_explorer.py", package / "_apps" / "head_explorer.py"):
        if candidate.is_file():
            return candidate
    raise InterpError("Cannot find apps/head_explorer.py next to the package.")


def run_app(
    model: str = typer.Option("default", "--model", "-m", help="Model to load on start (see scan --help)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (localhost by default; 0.0.0.0 exposes it)."),
    port: int = typer.Option(8501, help="Port."),
    headless: bool = typer.Option(True, "--headless/--browser", help="Do not try to open a browser."),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
) -> None:
    """Start the Streamlit head explorer (from Python on a model object: interp.app.serve(model))."""
    import importlib.util

    from interp.model.loading import resolve_device, resolve_dtype

    if importlib.util.find_spec("streamlit") is None:
        raise InterpError('The app needs streamlit. Install it with:\n    pip install "interp[app]"')
    resolve_device(device), resolve_dtype(dtype)  # a bad value fails here, not in the page
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_script()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        str(headless).lower(),
        "--browser.gatherUsageStats",
        "false",
        "--",
        "--model",
        model,
        "--device",
        device,
        *(["--dtype", dtype] if dtype else []),
    ]
    console.print(f"Head explorer on http://{host}:{port} (model: {model}); Ctrl+C stops it.")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    raise typer.Exit(run_child(cmd, env=env))  # Ctrl+C / SIGTERM stop the Streamlit server too
