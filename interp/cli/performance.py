"""`interp ray-sweep`: ablation-KL over every head, sharded across Ray workers (local or a cluster).

Attribution and screen-then-verify are options of the metrics themselves:
    interp scan ablation-kl --set method=attribution
    interp scan ablation-kl --set method=screen --set top_k=20
    interp scan ablation-kl --set checkpoint=runs/kl-ckpt        # resumable: run the same command again
"""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from interp.cli import (
    checked,
    device_option,
    dtype_option,
    friendly_errors,
    print_top,
    writable_file,
    writable_folder,
    wrote,
)
from interp.core import validate
from interp.core.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command(name="ray-sweep")(friendly_errors(ray_sweep_cmd))


def ray_sweep_cmd(
    model: str = typer.Option("default", "--model", "-m", help="Model name, path or hub id (every worker loads it)."),
    prompts: str = typer.Option("short", "--prompts", "-p", help="Prompts file or built-in set."),
    limit: int | None = typer.Option(None, help="Use only the first N prompts."),
    kind: str = typer.Option("zero", help="zero | mean | resample | uniform | scale."),
    alpha: float | None = typer.Option(None, help="Factor for --kind scale."),
    template: str = typer.Option("auto", help="auto | chat | raw | query | paper."),
    workers: int = typer.Option(2, help="Ray workers (tasks), one shard each."),
    shard: str = typer.Option("prompts", help="prompts | heads."),
    address: str | None = typer.Option(None, help='Ray address: none = a private local Ray; "auto" = this cluster.'),
    cpus: float = typer.Option(1.0, help="CPUs per worker (torch threads)."),
    gpus: float = typer.Option(0.0, help="GPUs per worker."),
    batch_size: int = typer.Option(32, help="Rows per forward pass."),
    checkpoint: Path | None = checked(
        typer.Option(None, help="Checkpoint directory (one subdirectory per shard)."), writable_folder()
    ),
    out: Path | None = checked(
        typer.Option(None, "--out", "-o", help="Write the HeadScores JSON here."), writable_file(".json")
    ),
    top: int = typer.Option(10, help="How many top heads to print."),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
) -> None:
    """Score every head by ablation-KL with the sweep split across Ray workers; reduce to one HeadScores."""
    from interp.core.prompts import load_prompts
    from interp.core.provenance import make_provenance
    from interp.core.results import HeadScores
    from interp.engine.distributed import ray_sweep
    from interp.engine.interventions import MAX_ALPHA, get_kind
    from interp.engine.sweep import kl_per_prompt
    from interp.model.loading import load_model, resolve_device, resolve_dtype

    # Everything the workers would refuse, refused here first (a worker's error arrives as a remote traceback).
    get_kind(kind)
    if kind == "scale" and alpha is None:
        raise UsageError("--kind scale needs --alpha (0 ablates, 1 leaves the head as is, > 1 reinforces).")
    if alpha is not None:
        validate.number("--alpha", alpha, minimum=-MAX_ALPHA, maximum=MAX_ALPHA)
    if shard not in ("prompts", "heads"):
        raise UsageError(f"--shard {shard!r} is not allowed; choose one of: prompts, heads.")
    if template not in ("auto", "chat", "raw", "query"):
        raise UsageError(f"--template {template!r} is not allowed; choose one of: auto, chat, raw, query.")
    validate.number("--cpus", cpus, minimum=0, min_open=True)
    validate.number("--gpus", gpus, minimum=0)
    prompt_list = load_prompts(prompts, limit)
    resolve_device(device), resolve_dtype(dtype)  # a bad --device / --dtype fails here, not in every worker
    result = ray_sweep(
        functools.partial(load_model, model, device, dtype),  # what each worker runs to load the model
        prompt_list,
        kl_per_prompt,
        shard=shard,  # type: ignore[arg-type]
        n_workers=workers,
        address=address,
        num_cpus=cpus,
        num_gpus=gpus,
        kind=kind,
        alpha=alpha,
        template=template,
        batch_size=batch_size,
        checkpoint=checkpoint,
    )
    # Every head was swept, so the shape follows from the groups (the driver never loads the model).
    n_layers = 1 + max(g[0].layer for g in result.groups)
    n_heads = 1 + max(g[0].head for g in result.groups)
    scores = HeadScores(
        scores=result.grid(n_layers, n_heads),
        metric="ablation-kl",
        model=model,
        config={"kind": kind, "alpha": alpha, "template": template, "workers": workers, "shard": shard},
        provenance=make_provenance(prompt_list, seed=0, engine="ray"),
        per_prompt=result.per_prompt_grid(n_layers, n_heads),
    )
    if out is not None:  # saved before anything is printed
        scores.save(out)
    print_top(scores, top)
    if out is not None:
        wrote(out)
