"""Naive loop vs fast exact sweep vs attribution vs screen-then-verify: one run, same model, same prompts.

    python benchmarks/performance.py                                  # default model, 4 AdvBench prompts
    python benchmarks/performance.py --model tiny-llama --limit 4     # seconds
    python benchmarks/performance.py --naive-heads 0                  # time the naive loop on every head

Two scenarios: ablation-KL (zero ablation) and Ships (per-query KL under uniform-attention ablation,
q scaled by eps=1e-8). For each it prints the time of every method, its speed-up over the naive loop and
over the fast exact sweep, and the rank agreement (Spearman, top-10 overlap) with the exact scores.

The naive loop (interp.testing.reference.naive_sweep: one full forward pass per head over the prompts) costs the
same for every head, so by default it is timed on --naive-heads heads (one per layer, spread over head
indices) and its time for all heads is that per-head time x the number of heads; the table says so.
Its scores on those heads are compared with the fast sweep's (they must agree to ~1e-6).

Timings are wall-clock seconds; on a shared machine the load can change between methods, so the JSON also
records the load average at the start and end of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

import interp
from interp.core.heads import Head
from interp.core.results import HeadScores
from interp.engine.attribution import EXACT_SCORES, attribute, screen_then_verify
from interp.engine.sweep import sweep
from interp.testing.reference import naive_sweep

SCENARIOS = {"ablation-kl": "zero", "ships": "uniform"}


def sample_heads(model: interp.LoadedModel, n: int) -> list[Head]:
    """n heads drawn at random (seed 0) from all heads (all heads when n is 0 or >= the total)."""
    every = list(model.heads())
    if n <= 0 or n >= len(every):
        return every
    pick = np.sort(np.random.default_rng(0).choice(len(every), size=n, replace=False))
    return [every[i] for i in pick]


def grid_scores(model: interp.LoadedModel, grid: np.ndarray, name: str) -> HeadScores:
    return HeadScores(grid, name, model.name)


def agreement(model: interp.LoadedModel, approx: np.ndarray, exact: np.ndarray, k: int = 10) -> dict[str, float]:
    return grid_scores(model, approx, "approx").rank_agreement(grid_scores(model, exact, "exact"), k)


def run_scenario(model: interp.LoadedModel, prompts: list[str], kind: str, args: argparse.Namespace) -> dict[str, Any]:
    batch = model.tokenize(prompts, args.template)
    n_heads_total = model.n_layers * model.n_heads
    rows: dict[str, dict[str, Any]] = {}

    heads = sample_heads(model, args.naive_heads)
    t = time.perf_counter()
    naive = naive_sweep(model, prompts, EXACT_SCORES["kl"], heads=heads, kind=kind, template=args.template)
    naive_s = (time.perf_counter() - t) * n_heads_total / len(heads)
    label = "naive loop" if len(heads) == n_heads_total else f"naive loop (timed on {len(heads)} heads, scaled)"
    rows[label] = {"seconds": naive_s}

    t = time.perf_counter()
    exact = sweep(model, batch, EXACT_SCORES["kl"], kind=kind, batch_size=args.batch_size, progress=False)
    rows["fast exact sweep"] = {"seconds": time.perf_counter() - t}
    exact_grid = exact.grid(model.n_layers, model.n_heads)
    naive_grid = np.full_like(exact_grid, np.nan)
    for (h,), s in zip(naive.groups, naive.scores, strict=True):
        naive_grid[h.layer, h.head] = s
    diff = float(np.nanmax(np.abs(naive_grid - exact_grid)))

    attributions = {}
    for rank in [args.fisher_rank, *args.extra_ranks]:
        t = time.perf_counter()
        est = attribute(model, batch, metric="kl", kind=kind, fisher_rank=rank, batch_size=args.attribution_batch)
        name = f"attribution (Fisher rank {rank})"
        rows[name] = {"seconds": time.perf_counter() - t, **agreement(model, est.scores, exact_grid)}
        rows[name].update(est.diagnostics)
        attributions[rank] = est.scores

    t = time.perf_counter()
    screened = screen_then_verify(
        model,
        batch,
        metric="kl",
        kind=kind,
        top_k=args.top_k,
        batch_size=args.batch_size,
        attribution_batch_size=args.attribution_batch,
        fisher_rank=args.fisher_rank,
    )
    verified = {h.label for h in screened.exact.groups for h in [h[0]]}
    exact_top = {h.label for h in grid_scores(model, exact_grid, "exact").top_heads(10)}
    screen_top = {
        h.label for h in grid_scores(model, screened.exact.grid(model.n_layers, model.n_heads), "s").top_heads(10)
    }
    rows[f"screen (top {args.top_k}) then verify"] = {
        "seconds": time.perf_counter() - t,
        "top10_overlap": len(screen_top & exact_top) / 10,
        "exact_top10_verified": len(verified & exact_top) / 10,
    }
    for row in rows.values():
        row["speedup_vs_naive"] = naive_s / row["seconds"]
        row["speedup_vs_exact"] = rows["fast exact sweep"]["seconds"] / row["seconds"]
    return {
        "kind": kind,
        "naive_heads_timed": len(heads),
        "max_abs_diff_naive_vs_fast": diff,
        "methods": rows,
        "exact_top10": sorted(exact_top),
        "exact_scores": exact_grid.tolist(),
        "attribution_scores": {str(r): g.tolist() for r, g in attributions.items()},
    }


def print_table(name: str, result: dict[str, Any]) -> None:
    print(
        f"\n== {name} (kind={result['kind']}); naive vs fast exact max |diff| = "
        f"{result['max_abs_diff_naive_vs_fast']:.2e} on {result['naive_heads_timed']} heads"
    )
    print(f"{'method':46s} {'seconds':>9s} {'x naive':>8s} {'x exact':>8s} {'spearman':>9s} {'top10':>6s}")
    for method, row in result["methods"].items():
        rho = row.get("spearman", float("nan"))
        top = row.get("top10_overlap", float("nan"))
        print(
            f"{method:46s} {row['seconds']:9.1f} {row['speedup_vs_naive']:7.2f}x {row['speedup_vs_exact']:7.2f}x"
            f" {rho:9.3f} {top:6.2f}"
        )
        extra = {k: v for k, v in row.items() if k.startswith(("fisher", "exact_top10"))}
        if extra:
            print(" " * 8 + ", ".join(f"{k}={v:.3f}" for k, v in extra.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", default="advbench")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--template", default="auto")
    parser.add_argument("--scenarios", default="ablation-kl,ships")
    parser.add_argument("--naive-heads", type=int, default=30, help="Heads the naive loop is timed on (0: all).")
    parser.add_argument("--batch-size", type=int, default=32, help="Rows per pass of the fast exact sweep.")
    parser.add_argument("--attribution-batch", type=int, default=8, help="Prompts per attribution pass.")
    parser.add_argument("--fisher-rank", type=int, default=8)
    parser.add_argument("--extra-ranks", type=int, nargs="*", default=[], help="Also time these Fisher ranks.")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--json", default=None, help="Also write every number (and the score grids) here.")
    args = parser.parse_args()

    model = interp.load_model(args.model)
    prompts = interp.load_prompts(args.prompts, args.limit)
    load = os.getloadavg()
    print(
        f"{model!r}\n{len(prompts)} prompts ({args.prompts}, template {args.template}), "
        f"{model.n_layers * model.n_heads} heads, torch threads={torch.get_num_threads()}, "
        f"nproc={os.cpu_count()}, load average at start={load[0]:.1f}"
    )
    out: dict[str, Any] = {
        "model": model.name,
        "prompts": args.prompts,
        "n_prompts": len(prompts),
        "template": args.template,
        "torch_threads": torch.get_num_threads(),
        "nproc": os.cpu_count(),
        "load_average_start": load,
        "platform": platform.platform(),
        "args": vars(args),
        "scenarios": {},
    }
    start = time.perf_counter()
    for name in args.scenarios.split(","):
        result = run_scenario(model, prompts, SCENARIOS[name], args)
        out["scenarios"][name] = result
        print_table(name, result)
        if args.json:  # after every scenario, so a long run leaves its numbers behind
            out["load_average_end"] = os.getloadavg()
            out["total_seconds"] = time.perf_counter() - start
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=1)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average at end={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
