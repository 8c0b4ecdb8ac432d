"""Scale-out on existing engines: Ray workers for sweeps, accelerate device maps for big models.

Ray (optional extra: `pip install "interp[ray]"`). `ray_sweep` splits a sweep across Ray workers and
reduces the parts to one SweepResult, so the same code runs on a laptop (a local Ray started on demand)
and on a cluster (`address="auto"` inside a cluster job, or "ray://head:10001"):

    shard="prompts": each worker sweeps every head on a slice of the prompts. Per-prompt scores of one head
        do not depend on the other prompts, and a head's score is the mean over prompts, so concatenating
        the per-prompt columns gives exactly the single-process result (up to float rounding).
        Not for dataset-level score functions (not a sum over prompts) or "resample" (prompts take head
        outputs from other prompts); for "mean" the mean is taken over ALL prompts, as in one process.
    shard="heads": each worker sweeps a slice of the heads (or groups) on every prompt; works for all.

Workers load the model themselves (by registered name or local path, with the same device and dtype), so
no weights travel through Ray; a model that exists only in memory is shipped once through the object
store. Each worker gets `num_cpus` CPUs (torch uses that many threads) and `num_gpus` GPUs.

Multi-GPU models: load the HF model with a device map and wrap it, see `load_model(..., device_map=...)`.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from interp.core.errors import InterpError, UsageError
from interp.core.heads import parse_head
from interp.engine.interventions import get_kind
from interp.engine.sweep import ScoreFn, SweepResult, sweep
from interp.model.loaded import LoadedModel
from interp.model.loading import load_model, wrap_model
from interp.model.registry import get_entry

Shard = Literal["prompts", "heads"]
ModelSpec = str | LoadedModel | Callable[[], LoadedModel]


def _require_ray() -> Any:
    if importlib.util.find_spec("ray") is None:
        raise InterpError('Ray is not installed. Install the extra:\n    pip install "interp[ray]"')
    import ray

    return ray


def _loadable(name: str) -> bool:
    try:
        get_entry(name)
        return True
    except InterpError:
        return Path(name).expanduser().exists()


def model_factory(model: ModelSpec) -> Callable[[], LoadedModel]:
    """A picklable zero-argument function that builds the model on a worker."""
    if callable(model) and not isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return lambda: load_model(model)
    device, dtype = str(model.device), model.dtype
    if _loadable(model.name):
        name = model.name
        return lambda: load_model(name, device=device if torch.cuda.is_available() else "cpu", dtype=dtype)
    hf_model, tokenizer, name = model.hf_model, model.tokenizer, model.name
    return lambda: wrap_model(hf_model, tokenizer, name)  # shipped (pickled) with the function


def split(n: int, parts: int) -> list[list[int]]:
    """0..n-1 in `parts` contiguous, near-equal slices (empty slices dropped)."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds) if b > a]


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connection to a Ray address ("host:port" or "ray://host:port") succeeds, or a clear error."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f'Ray address {address!r} is not "host:port", "ray://host:port" or "auto".')
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InterpError(
            f"Cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check --address, or leave it "
            "out to start a private local Ray."
        ) from None


def _run_shard(
    factory: Callable[[], LoadedModel], prompts: list[str], score_fn: ScoreFn, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """One worker's sweep; plain arrays back (no tensors with autograd or device state)."""
    model = factory()
    result = sweep(model, prompts, score_fn, progress=False, **kwargs)
    return {
        "groups": [[h.label for h in g] for g in result.groups],
        "scores": result.scores,
        "per_prompt": result.per_prompt,
        "base": result.base.cpu().numpy(),
        "forward_rows": result.forward_rows,
        "resumed_rows": result.resumed_rows,
    }


def ray_sweep(
    model: ModelSpec,
    prompts: Sequence[str],
    score_fn: ScoreFn,
    *,
    shard: Shard = "prompts",
    n_workers: int = 2,
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    heads: Sequence[Any] | None = None,
    groups: Sequence[Sequence[Any]] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    **sweep_kwargs: Any,
) -> SweepResult:
    """`interp.engine.sweep.sweep` split across Ray workers (see the module doc); returns one SweepResult.

    address: None starts (or joins) a local Ray; "auto" joins the cluster this runs in; "ray://host:port".
    checkpoint: each worker checkpoints to checkpoint/shard-<i> (a shared file system on a cluster).
    Other keyword arguments go to sweep (kind, alpha, eps, reference, template, batch_size, ...).
    """
    # What a worker would refuse is refused here, before Ray starts (a worker's error is a remote traceback).
    kind = sweep_kwargs.get("kind", "zero")
    get_kind(kind)
    if kind == "scale" and sweep_kwargs.get("alpha") is None:
        raise UsageError('"scale" needs alpha (0 ablates, 1 leaves the head as is, > 1 reinforces).')
    ray = _require_ray()
    if shard not in ("prompts", "heads"):
        raise InterpError(f'shard must be "prompts" or "heads", got {shard!r}.')
    if n_workers < 1:
        raise InterpError(f"n_workers must be >= 1, got {n_workers}.")
    prompts = list(prompts)
    kwargs = dict(sweep_kwargs)
    if shard == "prompts":
        if kwargs.get("dataset_level"):
            raise InterpError('A dataset-level score is not a sum over prompts: use shard="heads".')
        if kwargs.get("kind") == "resample":
            raise InterpError('"resample" takes head outputs from other prompts: use shard="heads".')
        if kwargs.get("kind") == "mean" and not kwargs.get("reference"):
            kwargs["reference"] = prompts  # the mean over all prompts, as in a single process
    if not ray.is_initialized():
        if address and address != "auto":
            _check_reachable(address)  # ray.init would retry an unreachable address for minutes
        # address=None starts a private local Ray ("local"), never joining a cluster another user left running.
        local_cpus = None if address else max(1, int(n_workers * num_cpus))
        ray.init(
            address=address or "local",
            num_cpus=local_cpus,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    factory = model_factory(model)
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_run_shard)
    fn_ref, factory_ref = ray.put(score_fn), ray.put(factory)
    jobs = []
    if shard == "prompts":
        slices = split(len(prompts), n_workers)
        for i, idx in enumerate(slices):
            part = {**kwargs, "heads": heads, "groups": groups}
            if checkpoint is not None:
                part["checkpoint"] = str(Path(checkpoint) / f"shard-{i}")
            jobs.append(remote.remote(factory_ref, [prompts[j] for j in idx], fn_ref, part))
    else:
        local = factory()  # resolve the head/group list once, in the driver
        if groups is not None:
            group_list = [list(local.parse_heads(g)) for g in groups]
        else:
            group_list = [[h] for h in (local.parse_heads(heads) if heads is not None else local.heads())]
        del local
        slices = split(len(group_list), n_workers)
        for i, idx in enumerate(slices):
            part = {**kwargs, "groups": [group_list[j] for j in idx]}
            if checkpoint is not None:
                part["checkpoint"] = str(Path(checkpoint) / f"shard-{i}")
            jobs.append(remote.remote(factory_ref, prompts, fn_ref, part))
    parts = ray.get(jobs)
    return _reduce(parts, shard)


def _reduce(parts: list[dict[str, Any]], shard: Shard) -> SweepResult:
    labels = parts[0]["groups"] if shard == "prompts" else [g for p in parts for g in p["groups"]]
    groups = [tuple(parse_head(lbl) for lbl in g) for g in labels]
    forward_rows = sum(p["forward_rows"] for p in parts)
    resumed = sum(p["resumed_rows"] for p in parts)
    if shard == "prompts":
        per_prompt = np.concatenate([p["per_prompt"] for p in parts], axis=1)  # [n_groups, n_prompts]
        base = torch.from_numpy(np.concatenate([p["base"] for p in parts]))
        return SweepResult(groups, per_prompt.mean(1), per_prompt, base, 0.0, forward_rows, None, resumed)
    scores = np.concatenate([p["scores"] for p in parts])
    per = [p["per_prompt"] for p in parts]
    per_prompt = np.concatenate(per) if all(x is not None for x in per) else None
    base = torch.from_numpy(parts[0]["base"])
    return SweepResult(groups, scores, per_prompt, base, 0.0, forward_rows, None, resumed)
