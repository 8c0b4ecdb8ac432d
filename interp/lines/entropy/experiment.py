"""The LayerNorm-free experiment: do attention heads overload when the nonlinearities go?

Four small character-level GPTs are trained on CPU on a bundled public-domain text (nine Shakespeare plays,
data/entropy/shakespeare.txt) with identical data order, initialization and hyper-parameters:

    standard            pre-LayerNorm blocks + final LayerNorm, GELU FFN
    noln-gelu           no LayerNorm anywhere, GELU FFN
    noln-relu           no LayerNorm anywhere, ReLU FFN
    noln-gelu-entreg    no LayerNorm, GELU FFN, + the entropy regularizer (interp.lines.entropy.regularizer)

Each is scored for validation loss and for its per-head attention entropy on held-out windows, through the
same `row_entropy` the `entropy` analyzer uses, so the results are `entropy` HeadScores that EntropyReport
reads. The paper's claims to check (arXiv 2501.03489): without LayerNorm, more early-layer heads are
overloaded; fewer with ReLU than GELU; fewer with the regularizer.

    interp entropy experiment --out docs/entropy          (or: make entropy-experiment)
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.core.config import Config, positive
from interp.core.errors import InterpError
from interp.core.progress import Progress, progress_iter
from interp.core.prompts import data_dir
from interp.core.provenance import make_provenance
from interp.core.results import HeadScores
from interp.lines.entropy.metrics import prompt_means
from interp.lines.entropy.model import GPT, GPTConfig
from interp.lines.entropy.regularizer import EntropyRegularizer, Margin, ThresholdForm, check_choice
from interp.lines.entropy.report import EntropyReport

VARIANTS: dict[str, dict[str, Any]] = {
    "standard": {"layernorm": True, "activation": "gelu", "regularize": False},
    "noln-gelu": {"layernorm": False, "activation": "gelu", "regularize": False},
    "noln-relu": {"layernorm": False, "activation": "relu", "regularize": False},
    "noln-gelu-entreg": {"layernorm": False, "activation": "gelu", "regularize": True},
}


@dataclass(frozen=True)
class ExperimentConfig(Config):
    """Defaults are the recorded run (docs/entropy.md); `tiny()` is the test size."""

    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    n_ctx: int = 64
    batch_size: int = 32
    steps: int = 2000
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_windows: int = 64
    """Held-out windows of n_ctx characters for the validation loss and the entropy profile."""
    val_fraction: float = 0.1
    lam: float = 1e-5
    gamma: float = 0.2
    margin: str = "hard"
    """The regularizer's margin: "hard" (the paper and its released code) or "hinge" (ours; the run before
    issue 17, kept in docs/entropy/hinge/)."""
    thresholds: str = "raw"
    """The regularizer's thresholds: "raw" (released: theta is the learnable weight) or "sigmoid" (ours)."""
    seed: int = 0
    variants: tuple[str, ...] = tuple(VARIANTS)
    collapse: float = 0.1
    overload: float = 0.75
    corpus: str | None = None
    """A text file to train on; None = the bundled data/entropy/shakespeare.txt."""
    threads: int = 1
    """torch CPU threads. 1 by default: on a shared 2-core machine, 2 threads ran ~4x slower per step than 1
    (oversubscription); a fixed count also keeps float reductions, hence results, reproducible."""
    workers: int = 2
    """Variants trained at the same time, one process each (`threads` torch threads per process). Results do
    not depend on it (each variant is seeded on its own; tested); 2 = the recorded machine's core count."""

    def check(self) -> None:
        for name in (
            "n_layer",
            "n_head",
            "d_model",
            "n_ctx",
            "batch_size",
            "steps",
            "eval_every",
            "eval_windows",
            "threads",
            "workers",
        ):
            positive(name, getattr(self, name))
        if not 0 < self.val_fraction < 0.5:
            raise InterpError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}.")
        check_choice("margin", self.margin, Margin)
        check_choice("thresholds", self.thresholds, ThresholdForm)
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise InterpError(f"Unknown variant(s) {unknown or '(none given)'}; choose from: {', '.join(VARIANTS)}.")

    @classmethod
    def tiny(cls, **overrides: Any) -> ExperimentConfig:
        """Seconds on a laptop: for tests and the notebook's small mode."""
        small = dict(
            n_layer=2,
            n_head=2,
            d_model=32,
            n_ctx=32,
            batch_size=8,
            steps=12,
            warmup=2,
            eval_every=6,
            eval_windows=8,
            workers=1,  # starting processes costs more than 12 tiny steps
        )
        return cls(**{**small, **overrides})


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------
@dataclass
class CharData:
    """Character-level encoding of a text: train/val id tensors and the vocabulary."""

    vocab: list[str]
    train: torch.Tensor  # [n_train] int64
    val: torch.Tensor  # [n_val] int64

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, val_fraction: float = 0.1) -> CharData:
        path = Path(path) if path is not None else data_dir() / "entropy" / "shakespeare.txt"
        if not path.is_file():
            raise InterpError(f"Corpus {path} does not exist (the bundled one is data/entropy/shakespeare.txt).")
        text = path.read_text(encoding="utf-8")
        vocab = sorted(set(text))
        index = {ch: i for i, ch in enumerate(vocab)}
        ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
        split = int(len(ids) * (1 - val_fraction))  # the last part is held out: unseen scenes, not shuffled lines
        return cls(vocab, ids[:split], ids[split:])

    def batch(self, n: int, n_ctx: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random training windows: inputs and next-character targets, each [n, n_ctx]."""
        starts = torch.randint(0, len(self.train) - n_ctx - 1, (n,), generator=gen)
        x = torch.stack([self.train[s : s + n_ctx] for s in starts.tolist()])
        y = torch.stack([self.train[s + 1 : s + n_ctx + 1] for s in starts.tolist()])
        return x, y

    def val_windows(self, n: int, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n evenly spaced validation windows (deterministic), [n, n_ctx] each."""
        if len(self.val) < n_ctx + 2:
            raise InterpError(f"The validation split ({len(self.val)} chars) is shorter than n_ctx={n_ctx}.")
        starts = np.linspace(0, len(self.val) - n_ctx - 1, n).astype(int)
        x = torch.stack([self.val[s : s + n_ctx] for s in starts])
        y = torch.stack([self.val[s + 1 : s + n_ctx + 1] for s in starts])
        return x, y


# ---------------------------------------------------------------------------------------------------------
# Training one variant
# ---------------------------------------------------------------------------------------------------------
@dataclass
class VariantResult:
    name: str
    val_loss: float
    train_loss: float
    seconds: float
    cpu_seconds: float
    steps_done: int
    diverged: bool
    history: list[dict[str, float]] = field(default_factory=list)
    entropy: HeadScores | None = None
    theta: list[list[float]] | None = None

    def summary(self, cfg: ExperimentConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variant": self.name,
            **VARIANTS[self.name],
            "val_loss": self.val_loss,
            "val_bpc": self.val_loss / math.log(2),
            "train_loss": self.train_loss,
            "seconds": round(self.seconds, 1),
            "cpu_seconds": round(self.cpu_seconds, 3),  # ms: a tiny run can take < 0.05 s
            "steps": self.steps_done,
            "diverged": self.diverged,
        }
        if self.entropy is not None:
            report = EntropyReport(self.entropy, cfg.collapse, cfg.overload)
            layers = report.per_layer()
            out.update({k: v for k, v in report.totals().items() if k.startswith("frac_")})
            out["per_layer"] = layers.to_dict(orient="list")
        return out


def regularizer(cfg: ExperimentConfig) -> EntropyRegularizer:
    """The regularizer of the -entreg variant: the released code's defaults unless the config overrides them."""
    return EntropyRegularizer(
        cfg.n_layer,
        cfg.n_head,
        gamma=cfg.gamma,
        lam=cfg.lam,
        margin=cfg.margin,  # type: ignore[arg-type]  # checked in ExperimentConfig.check
        thresholds=cfg.thresholds,  # type: ignore[arg-type]
    )


def _lr(step: int, cfg: ExperimentConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr (as in nanoGPT)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: GPT, x: torch.Tensor, y: torch.Tensor, chunk: int = 16) -> tuple[float, np.ndarray]:
    """Validation loss and per-window entropy [2 (raw, normalized), n_windows, n_layer, n_head]."""
    model.eval()
    losses, ent = [], []
    for i in range(0, len(x), chunk):
        loss, patterns = model.loss(x[i : i + chunk], y[i : i + chunk])
        losses.append(float(loss) * len(x[i : i + chunk]))
        ent.append(torch.stack([prompt_means(p) for p in patterns], dim=2).numpy())  # [2, chunk, L, H]
    model.train()
    return sum(losses) / len(x), np.concatenate(ent, axis=1)


def train_variant(
    name: str, cfg: ExperimentConfig, data: CharData, progress: Progress = True
) -> tuple[VariantResult, GPT]:
    spec = VARIANTS[name]
    gcfg = GPTConfig(
        vocab_size=len(data.vocab),
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        d_model=cfg.d_model,
        n_ctx=cfg.n_ctx,
        layernorm=spec["layernorm"],
        activation=spec["activation"],
    )
    torch.manual_seed(cfg.seed)  # same initial weights for every variant (LayerNorm draws no random numbers)
    model = GPT(gcfg)
    reg = regularizer(cfg) if spec["regularize"] else None
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2] + (list(reg.parameters()) if reg else [])
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    gen = torch.Generator().manual_seed(cfg.seed)  # same batches for every variant
    vx, vy = data.val_windows(cfg.eval_windows, cfg.n_ctx)
    history: list[dict[str, float]] = []
    # Wall time on a shared machine depends on the load; process CPU time says what the work itself costs.
    t0, cpu0, train_loss, diverged, step = time.perf_counter(), time.process_time(), math.nan, False, 0
    for step in progress_iter(range(cfg.steps), progress, desc=name, total=cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        x, y = data.batch(cfg.batch_size, cfg.n_ctx, gen)
        ce, patterns = model.loss(x, y)
        loss = ce + reg(patterns) if reg is not None else ce
        if not torch.isfinite(loss):
            diverged = True  # LayerNorm-free training can blow up: record it instead of failing the run
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if not torch.isfinite(grad_norm) or (reg is not None and not torch.isfinite(reg.weight.grad).all()):
            diverged = True
            break
        opt.step()
        train_loss = float(ce.detach())
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val_loss, _ = evaluate(model, vx, vy)
            history.append(
                {
                    "step": step + 1,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    val_loss, ent = evaluate(model, vx, vy)
    scores = None if diverged else _entropy_scores(name, cfg, ent)
    theta = reg.theta.detach().tolist() if reg is not None else None
    steps_done = step if diverged else cfg.steps
    result = VariantResult(
        name, val_loss, train_loss, seconds, cpu_seconds, steps_done, diverged, history, scores, theta
    )
    return result, model


def _entropy_scores(name: str, cfg: ExperimentConfig, ent: np.ndarray) -> HeadScores:
    """An `entropy` HeadScores from per-window entropies [2, n_windows, L, H] (windows play the prompts)."""
    raw, norm = np.nanmean(ent[0], 0), np.nanmean(ent[1], 0)
    return HeadScores(
        scores=norm,
        metric="entropy",
        model=f"shakespeare-char-{name}",
        config={"value": "normalized", "experiment": cfg.to_dict()},
        provenance=make_provenance(None, seed=cfg.seed, windows=cfg.eval_windows, n_ctx=cfg.n_ctx),
        per_prompt=ent[1],
        extras={
            "value": "normalized",
            "raw": raw.tolist(),
            "normalized": norm.tolist(),
            "rows": cfg.eval_windows * (cfg.n_ctx - 1),
        },
    )


# ---------------------------------------------------------------------------------------------------------
# The whole experiment
# ---------------------------------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": list(load),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def _train_in_worker(name: str, cfg: ExperimentConfig, data: CharData) -> tuple[VariantResult, dict | None]:
    """One variant in its own process (spawned: a fresh interpreter, so the thread count is set here).

    HeadScores do not pickle (their config is a read-only mapping), so the entropy travels back as a dict."""
    torch.set_num_threads(cfg.threads)
    result = train_variant(name, cfg, data, progress=False)[0]
    entropy, result.entropy = result.entropy, None
    return result, (entropy.to_dict() if entropy is not None else None)


def _workers(cfg: ExperimentConfig) -> int:
    return min(cfg.workers, len(cfg.variants))


def _train_all(cfg: ExperimentConfig, data: CharData, progress: Progress) -> list[VariantResult]:
    workers = _workers(cfg)
    if workers == 1:
        return [train_variant(name, cfg, data, progress)[0] for name in cfg.variants]
    # Spawn, not fork: forking a process that has started torch's thread pools can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_train_in_worker, name, cfg, data) for name in cfg.variants]
        desc = f"{len(futures)} variants, {workers} processes"
        for _ in progress_iter(as_completed(futures), progress, desc=desc, total=len(futures)):
            pass
        results = []
        for future in futures:  # in cfg.variants order
            result, entropy = future.result()
            result.entropy = HeadScores.from_dict(entropy) if entropy is not None else None
            results.append(result)
        return results


def run_experiment(
    cfg: ExperimentConfig, out: str | os.PathLike[str] | None = None, progress: Progress = True
) -> dict[str, Any]:
    """Train every variant, save results (JSON, per-variant HeadScores, figure) under `out` when given."""
    data = CharData.load(cfg.corpus, cfg.val_fraction)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        env_start = environment()
        results = _train_all(cfg, data, progress)
        env_end = environment()
        # This process's CPU time plus the worker processes' (each variant measures its own).
        cpu_total = time.process_time() - cpu0 + (sum(r.cpu_seconds for r in results) if _workers(cfg) > 1 else 0.0)
    finally:
        torch.set_num_threads(threads)
    record = {
        "config": cfg.to_dict(),
        "corpus": {
            "path": cfg.corpus or "data/entropy/shakespeare.txt",
            "chars": len(data.train) + len(data.val),
            "vocab": len(data.vocab),
            "train_chars": len(data.train),
            "val_chars": len(data.val),
        },
        "environment": {"start": env_start, "end": env_end},
        "provenance": make_provenance(None, seed=cfg.seed),
        "regularizer": regularizer(cfg).settings(),  # every option of the -entreg variant's regularizer
        "total_seconds": round(time.perf_counter() - t0, 1),
        "total_cpu_seconds": round(cpu_total, 3),
        "variants": [r.summary(cfg) for r in results],
        "history": {r.name: r.history for r in results},
        "theta": {r.name: r.theta for r in results if r.theta is not None},
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            if r.entropy is not None:
                r.entropy.save(out / f"{r.name}.entropy.json")
        (out / "results.json").write_text(json.dumps(record, indent=1, allow_nan=True))
        (out / "results.md").write_text(results_markdown(record))
        plot_results(record, out / "entropy_experiment.png")
    return record


def results_markdown(record: dict[str, Any]) -> str:
    """The results table (one row per variant) and the per-layer overload fractions, as Markdown."""
    lines = [
        "| variant | LayerNorm | FFN | entropy reg. | val loss (nats/char) | val bpc | overloaded | collapsed | "
        "mean H/Hmax | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in record["variants"]:
        mean_norm = np.mean(v["per_layer"]["mean_normalized"]) if "per_layer" in v else math.nan
        lines.append(
            f"| {v['variant']}{' (diverged)' if v['diverged'] else ''} | {'yes' if v['layernorm'] else 'no'} | "
            f"{v['activation'].upper()} | {'yes' if v['regularize'] else 'no'} | {v['val_loss']:.4f} | "
            f"{v['val_bpc']:.3f} | {v.get('frac_overloaded', math.nan):.0%} | "
            f"{v.get('frac_collapsed', math.nan):.0%} | "
            f"{mean_norm:.3f} | {v['seconds']:.0f} |"
        )
    n_layer = record["config"]["n_layer"]
    lines += [
        "",
        "Per-layer fraction of overloaded heads / mean normalized entropy:",
        "",
        "| variant | " + " | ".join(f"L{i}" for i in range(n_layer)) + " |",
        "|---|" + "---|" * n_layer,
    ]
    for v in record["variants"]:
        layers = v.get("per_layer", {})
        cells = [
            f"{o:.0%} / {m:.2f}"
            for o, m in zip(layers.get("frac_overloaded", []), layers.get("mean_normalized", []), strict=True)
        ]
        lines.append(f"| {v['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_results(record: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """A 2x2 PNG: validation loss curves, per-layer mean normalized entropy, overloaded and collapsed fractions."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InterpError('The experiment figure needs matplotlib: pip install "interp[dev]"') from exc
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    variants = record["variants"]
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        hist = record["history"][v["variant"]]
        axes[0, 0].plot([h["step"] for h in hist], [h["val_loss"] for h in hist], marker="o", label=v["variant"])
        layers = v.get("per_layer")
        if not layers:
            continue
        x = np.array(layers["layer"])
        axes[0, 1].plot(x, layers["mean_normalized"], marker="o", label=v["variant"])
        axes[1, 0].bar(x + (i - (len(variants) - 1) / 2) * width, layers["frac_overloaded"], width, label=v["variant"])
        axes[1, 1].bar(x + (i - (len(variants) - 1) / 2) * width, layers["frac_collapsed"], width, label=v["variant"])
    cfg = record["config"]
    titles = (
        "validation loss (nats/char)",
        "mean normalized entropy per layer",
        f"overloaded heads (H/Hmax > {cfg['overload']:g})",
        f"collapsed heads (H/Hmax < {cfg['collapse']:g})",
    )
    for ax, title in zip(axes.ravel(), titles, strict=True):
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_xlabel("step")
    for ax in axes.ravel()[1:]:
        ax.set_xlabel("layer")
        ax.set_xticks(range(cfg["n_layer"]))
    fig.suptitle(
        f"{cfg['n_layer']}-layer x {cfg['n_head']}-head char GPTs, d={cfg['d_model']}, T={cfg['n_ctx']}, "
        f"{cfg['steps']} steps, seed {cfg['seed']}"
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
