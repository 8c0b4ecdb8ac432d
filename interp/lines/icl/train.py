"""Seeded Adam training of `ICLAttention` on fresh in-context regression prompts, with checkpoints.

Every step draws a new batch of prompts (online training, as in the paper). One torch.Generator seeded with
`seed` drives the initialization and then every batch, so a run is a pure function of its config (on a fixed
number of CPU threads). A checkpoint is two files side by side:

    NAME.pt    torch.save({"model": state_dict, "optimizer": ..., "rng": generator state, "step": int})
               (plain tensors and numbers only: it loads with torch.load(weights_only=True))
    NAME.json  metadata: format, architecture, train config, step, training curve, timing, provenance

`train(..., resume=True)` continues an interrupted run from NAME.pt bit-for-bit (same thread count).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from interp.core.config import Config, positive
from interp.core.errors import InterpError, ResultsFileError
from interp.core.files import atomic_write
from interp.core.progress import Progress
from interp.core.provenance import make_provenance
from interp.lines.icl.data import CovarianceKind, DataConfig, Prompts, sample_prompts
from interp.lines.icl.model import AttentionKind, ICLAttention

CHECKPOINT_FORMAT = "interp-icl-checkpoint"
CHECKPOINT_VERSION = 1
EVAL_SEED_OFFSET = 1_000_003  # the fixed evaluation prompts use seed + this, never the training stream


@dataclass(frozen=True)
class TrainConfig(Config):
    """Model, data and optimizer settings of one training run (defaults: the paper's d=5, L=40, noise 0.1)."""

    n_heads: int = 4
    attention: AttentionKind = "softmax"
    d: int = 5
    L: int = 40
    noise_var: float = 0.1
    covariance: CovarianceKind = "identity"
    rho: float = 0.5
    steps: int = 60_000
    batch_size: int = 256
    # Adam with cosine decay from lr to lr_min. Chosen on a small sweep (docs/icl_regression.md): lr 1e-2 or
    # 3e-3 pairs the heads fastest but leaves per-head off-diagonal KQ noise in directions the loss barely
    # constrains (KQ diagonal share ~0.95); lr 1e-3 is cleaner but slower and can leave a dummy head.
    lr: float = 2e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_min: float = 1e-5
    # Small init: the off-diagonal KQ entries of heads of the same sign are nearly unconstrained by the loss
    # (only sum_h mu_h KQ_h matters to first order), so whatever they start with largely stays.
    init_std: float = 0.01
    seed: int = 0
    eval_every: int = 1000
    eval_size: int = 4096
    checkpoint_every: int = 10_000

    def check(self) -> None:
        for name in ("n_heads", "d", "L", "steps", "batch_size", "lr", "eval_every", "eval_size", "checkpoint_every"):
            positive(name, getattr(self, name))
        if not 0 <= self.lr_min <= self.lr:
            raise InterpError(f"Option lr_min must lie in [0, lr={self.lr}], got {self.lr_min}.")
        if self.init_std < 0:
            raise InterpError(f"Option init_std must be >= 0, got {self.init_std}.")
        self.data_config()  # validates d, L, noise_var, rho

    def data_config(self) -> DataConfig:
        return DataConfig(d=self.d, L=self.L, noise_var=self.noise_var, covariance=self.covariance, rho=self.rho)

    def lr_at(self, step: int) -> float:
        if self.lr_schedule == "constant":
            return self.lr
        progress = min(step / max(1, self.steps - 1), 1.0)
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    model: ICLAttention
    config: TrainConfig
    curve: list[dict[str, float]]  # one row per evaluation: step, lr, train_loss (window mean), eval_mse
    seconds: float  # wall time of this call (not counting earlier resumed segments)
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def build_model(config: TrainConfig, generator: torch.Generator) -> ICLAttention:
    return ICLAttention(config.d, config.n_heads, config.attention, config.init_std, generator=generator)


@torch.no_grad()
def evaluate_mse(model: ICLAttention, prompts: Prompts, chunk: int = 8192) -> float:
    """Mean squared error of y_hat against the (noisy) query labels."""
    total = 0.0
    for start in range(0, prompts.n, chunk):
        z, zq, yq = (t[start : start + chunk] for t in (prompts.z, prompts.zq, prompts.yq))
        total += float(((model(z.to(model.kq.dtype), zq.to(model.kq.dtype)) - yq) ** 2).sum())
    return total / prompts.n


def train(
    config: TrainConfig,
    out: str | os.PathLike[str] | None = None,
    progress: Progress = True,
    resume: bool = False,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train from scratch (or resume from `out` when resume=True); write checkpoints to `out` (a .pt path)."""
    path = _checkpoint_path(out) if out is not None else None
    generator = torch.Generator().manual_seed(config.seed)
    model = build_model(config, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    curve: list[dict[str, float]] = []
    start, previous_seconds = 0, 0.0
    if resume:
        if path is None or not path.is_file():
            raise InterpError(f"Cannot resume: no checkpoint at {path}.")
        ckpt = load_checkpoint(path)
        if ckpt.config != config:
            raise InterpError(f"Cannot resume {path}: it was trained with a different config ({ckpt.config}).")
        model.load_state_dict(ckpt.model.state_dict())
        optimizer.load_state_dict(ckpt.optimizer_state)
        generator.set_state(ckpt.rng_state)
        start, curve = ckpt.step, list(ckpt.meta["curve"])
        previous_seconds = float(ckpt.meta.get("train_seconds", 0.0))
    data = config.data_config()
    eval_prompts = sample_prompts(data, config.eval_size, seed=config.seed + EVAL_SEED_OFFSET)
    t0, window = time.perf_counter(), []

    def log(step: int) -> None:
        row = {
            "step": step,
            "lr": config.lr_at(max(step - 1, 0)),
            "train_loss": float(sum(window) / len(window)) if window else math.nan,
            "eval_mse": evaluate_mse(model, eval_prompts),
        }
        curve.append(row)
        window.clear()
        if on_eval is not None:
            on_eval(row)

    if start == 0:
        log(0)
    bar = _bar(range(start, config.steps), progress, total=config.steps, initial=start)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        batch = sample_prompts(data, config.batch_size, generator=generator)
        loss = ((model(batch.z, batch.zq) - batch.yq) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(float(loss.detach()))
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            log(done)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(eval_mse=f"{curve[-1]['eval_mse']:.4f}")
        if path is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            seconds = previous_seconds + time.perf_counter() - t0
            save_checkpoint(path, model, config, curve, done, seconds, optimizer, generator)
    seconds = time.perf_counter() - t0
    meta = _metadata(model, config, curve, config.steps, previous_seconds + seconds)
    return TrainResult(model=model, config=config, curve=curve, seconds=seconds, path=path, meta=meta)


def _bar(items: range, progress: Progress, total: int, initial: int) -> Any:
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(items, total=total, initial=initial, desc="train icl", leave=False, mininterval=1.0)
    if callable(progress):

        def gen() -> Any:
            for item in items:
                yield item
                progress(item + 1, total)

        return gen()
    return items


# ---- checkpoints ------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    model: ICLAttention
    config: TrainConfig
    meta: dict[str, Any]
    step: int
    optimizer_state: dict[str, Any] | None
    rng_state: torch.Tensor | None
    path: Path

    @property
    def name(self) -> str:
        """The model name results are filed under: the checkpoint's file stem."""
        return self.path.stem


def _checkpoint_path(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.suffix != ".pt":
        raise InterpError(f"Checkpoint path must end in .pt (metadata goes next to it as .json), got {path}.")
    return path


def _metadata(model: ICLAttention, config: TrainConfig, curve: list, step: int, seconds: float) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": model.arch(),
        "train_config": config.to_dict(),
        "step": step,
        "train_seconds": round(seconds, 3),
        "curve": curve,
        "final_eval_mse": curve[-1]["eval_mse"] if curve else None,
        "provenance": make_provenance(
            seed=config.seed, torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count()
        ),
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    model: ICLAttention,
    config: TrainConfig,
    curve: list[dict[str, float]],
    step: int,
    seconds: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> Path:
    """Write NAME.pt and NAME.json atomically (the .json last, so its presence marks a complete checkpoint)."""
    path = _checkpoint_path(path)
    state: dict[str, Any] = {"model": model.state_dict(), "step": step}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if generator is not None:
        state["rng"] = generator.get_state()
    # shareable: checkpoints are meant to be handed around (mkstemp files are private)
    atomic_write(path, lambda fh: torch.save(state, fh), shareable=True)
    meta = _metadata(model, config, curve, step, seconds)
    atomic_write(path.with_suffix(".json"), lambda fh: fh.write(json.dumps(meta, indent=1)), text=True, shareable=True)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load NAME.pt (weights_only=True) with its NAME.json; clear errors for missing or foreign files."""
    path = _checkpoint_path(path)
    meta_path = path.with_suffix(".json")
    for p in (path, meta_path):
        if not p.is_file():
            raise ResultsFileError(f"Checkpoint file {p} does not exist (a checkpoint is NAME.pt plus NAME.json).")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsFileError(f"Checkpoint metadata {meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ResultsFileError(f"{meta_path} is not an interp ICL checkpoint (format must be {CHECKPOINT_FORMAT!r}).")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ResultsFileError(f"{meta_path}: checkpoint version {meta.get('version')} is not supported.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / non-weights files
        raise ResultsFileError(f"Cannot read checkpoint {path}: {exc}") from exc
    try:
        config = TrainConfig(**meta["train_config"])
        model = ICLAttention(**meta["arch"])
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, InterpError) as exc:
        raise ResultsFileError(f"Checkpoint {path} does not match its metadata {meta_path}: {exc}") from exc
    return Checkpoint(
        model=model.eval(),
        config=config,
        meta=meta,
        step=int(state.get("step", meta.get("step", 0))),
        optimizer_state=state.get("optimizer"),
        rng_state=state.get("rng"),
        path=path,
    )
