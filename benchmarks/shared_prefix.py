"""Shared-prefix reuse (issue 18), every method in one process on the same prompts.

Part "compare": the naive loop (one full forward per head) vs today's fast exact sweep (shared_prefix=False)
vs fast exact + shared prefix (shared_prefix=None = auto, sweep's default), per-query Ships (KL under
uniform-attention ablation), with the chat template and with the raw template.

Part "cases": sweep's default (shared_prefix=None, auto) against the old path (False) on the calls a notebook
makes on the default model (all heads, few prompts, every readout and several kinds): auto must never be the
slower one, which is why it is the default.

Part "ships": on a larger model (testbed-small), the all-head Ships sweep without and with the shared prefix,
then a full 3-step Sahara (every head at every step; the group so far is cached, so each candidate's pass
starts at its own layer). Sahara's step 1 is the all-head dataset-Ships sweep itself: the shared-prefix
sweep just timed is passed in as step 1 (as the full safety run does) and its time counted in Sahara's.

    nice -n 10 python benchmarks/shared_prefix.py --part compare --threads 1 \\
        --json docs/performance/shared_prefix_default_cpu.json
    python benchmarks/shared_prefix.py --part cases --threads 1 --json docs/performance/shared_prefix_cases_cpu.json
    nice -n 10 python benchmarks/shared_prefix.py --part ships --model testbed-small --heads all --threads 1 \\
        --json docs/performance/shared_prefix_ships_testbed_small_cpu.json

Times are wall clock and process CPU time. With one torch thread the CPU time is the work done, which on a
shared machine is far steadier than the wall clock (other processes take turns on the cores); ratios are
given for both. The JSON is rewritten after every stage, so a stopped run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

import interp
from interp.core.heads import Head
from interp.core.provenance import package_versions
from interp.engine.prefix import shared_prefix_length
from interp.engine.sweep import kl_per_prompt, sweep
from interp.lines.safety.metrics import SaharaConfig, safety_sweep, sahara, ships_dataset_from_sweep
from interp.testing.reference import naive_sweep


def _heads(model: interp.LoadedModel, which: str) -> list[Head]:
    if which == "all":
        return list(model.heads())
    if which == "one-per-layer":  # the layer mix of a full sweep (layer-prefix reuse depends on the layer)
        return [Head(layer, layer % model.n_heads) for layer in range(model.n_layers)]
    return list(model.parse_heads(which))


class Record:
    def __init__(self, path: str | None, **facts: Any) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "machine": {
                "nproc": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "load_average_at_start": os.getloadavg(),
            },
            "versions": package_versions(),
            **facts,
        }

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        if self.path:
            with open(self.path, "w") as fh:
                json.dump(self.data, fh, indent=1, default=float)


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """fn's result and {"wall": s, "cpu": s (this process), "load": load average after}."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "load": os.getloadavg()}


def compare(args: argparse.Namespace, model: interp.LoadedModel, prompts: list[str], rec: Record) -> None:
    heads = _heads(model, args.heads)
    rng = np.random.default_rng(0)
    n_naive = min(args.naive_heads, len(heads))
    naive_heads = [heads[i] for i in sorted(rng.choice(len(heads), n_naive, replace=False))]
    index = [heads.index(h) for h in naive_heads]
    for template in args.templates:
        batch = model.tokenize(prompts, template)
        facts = {
            "template": batch.template,
            "lengths": batch.lengths.tolist(),
            "shared_prefix_tokens": shared_prefix_length(batch),
            "n_heads": len(heads),
            "n_naive_heads": n_naive,
        }
        print(f"\n== {facts}", flush=True)
        naive, t_naive = timed(
            naive_sweep, model, prompts, kl_per_prompt, heads=naive_heads, kind=args.kind, template=template
        )
        # One identical full forward per head: the naive loop's time scales linearly with the heads.
        scale = len(heads) / n_naive
        t_naive_all = {"wall": t_naive["wall"] * scale, "cpu": t_naive["cpu"] * scale}
        print(f"naive loop: {t_naive} on {n_naive} heads", flush=True)
        opts = dict(heads=heads, kind=args.kind, batch_size=args.batch_size, template=template, progress=False)
        # Alternated, fastest of args.repeats each: the load of a shared machine drifts during the run.
        runs: dict[str, list[tuple[Any, dict[str, Any]]]] = {"fast_exact": [], "fast_exact_shared_prefix": []}
        for _ in range(args.repeats):
            runs["fast_exact"].append(timed(sweep, model, prompts, kl_per_prompt, shared_prefix=False, **opts))
            print(f"fast exact: {runs['fast_exact'][-1][1]}", flush=True)
            runs["fast_exact_shared_prefix"].append(
                timed(sweep, model, prompts, kl_per_prompt, shared_prefix=None, **opts)  # auto (sweep's default)
            )
            print(f"fast exact + shared prefix: {runs['fast_exact_shared_prefix'][-1][1]}", flush=True)
        best = {name: min(r, key=lambda run: run[1]["cpu"]) for name, r in runs.items()}
        fast, t_fast = best["fast_exact"]
        shared, t_shared = best["fast_exact_shared_prefix"]
        ratios = {
            clock: {
                "fast_exact_vs_naive": t_naive_all[clock] / t_fast[clock],
                "shared_vs_naive": t_naive_all[clock] / t_shared[clock],
                "shared_vs_fast_exact": t_fast[clock] / t_shared[clock],
            }
            for clock in ("cpu", "wall")
        }
        result = {
            **facts,
            "naive_timed": t_naive,
            "naive_scaled_to_all_heads": t_naive_all,
            "fast_exact": t_fast,
            "fast_exact_shared_prefix": t_shared,
            "all_runs": {name: [t for _, t in r] for name, r in runs.items()},
            "shared_prefix_used": shared.shared_prefix,
            "ratios": ratios,
            "max_abs_diff": {
                "fast_vs_naive": float(np.abs(fast.scores[index] - naive.scores).max()),
                "shared_vs_naive": float(np.abs(shared.scores[index] - naive.scores).max()),
                "shared_vs_fast_all_heads": float(np.abs(shared.scores - fast.scores).max()),
                "shared_vs_fast_per_prompt": float(np.abs(shared.per_prompt - fast.per_prompt).max()),
            },
            "max_score": float(fast.scores.max()),
        }
        rec.put(f"compare_{batch.template}", result)
        print(f"{'method':34s} {'cpu s':>8s} {'wall s':>8s} {'x naive (cpu/wall)':>20s} {'x fast (cpu/wall)':>19s}")
        rows = [
            ("naive loop (scaled)", t_naive_all, t_naive_all, t_fast),
            ("fast exact (today)", t_fast, t_naive_all, t_fast),
            ("fast exact + shared prefix", t_shared, t_naive_all, t_fast),
        ]
        for name, t, ref, fst in rows:
            vs_naive = f"{ref['cpu'] / t['cpu']:.2f} / {ref['wall'] / t['wall']:.2f}"
            vs_fast = f"{fst['cpu'] / t['cpu']:.2f} / {fst['wall'] / t['wall']:.2f}"
            print(f"{name:34s} {t['cpu']:8.1f} {t['wall']:8.1f} {vs_naive:>20s} {vs_fast:>19s}")
        print("max |diff|:", {k: f"{v:.2e}" for k, v in result["max_abs_diff"].items()}, flush=True)


def _hidden_distance(base: torch.Tensor, intervened: torch.Tensor) -> torch.Tensor:
    return (base - intervened).norm(dim=-1)  # [rows]


def cases(args: argparse.Namespace, model: interp.LoadedModel, prompts: list[str], rec: Record) -> None:
    """Auto (the default) vs off on notebook-sized calls; each pair runs back to back."""
    every = list(model.heads())
    spread = every[:: max(1, len(every) // 60)][:60]  # 60 heads over all layers
    # (name, prompt set, how many, sweep options); each option set says its own readout and template.
    logits, hidden = dict(readout="logits", template="auto"), dict(readout="hidden", template="auto")
    calls = [
        (
            "short x8, zero, all heads (the quickstart's ablation-kl)",
            "short",
            8,
            dict(logits, kind="zero", heads=every),
        ),
        ("short x2, zero, all heads", "short", 2, dict(logits, kind="zero", heads=every)),
        ("advbench x4, mean, all heads", "advbench", 4, dict(logits, kind="mean", heads=every)),
        ("advbench x16, uniform, 60 heads", "advbench", 16, dict(logits, kind="uniform", heads=spread)),
        (
            "short x8, scale 2, hidden readout, 90 heads",
            "short",
            8,
            dict(hidden, kind="scale", alpha=2.0, heads=every[:90]),
        ),
        (
            "raw advbench x8, zero, all heads (nothing shared)",
            "advbench",
            8,
            dict(logits, template="raw", kind="zero", heads=every),
        ),
    ]
    out = []
    for name, source, limit, kw in calls:
        texts = interp.load_prompts(source, limit)
        opts = dict(batch_size=args.batch_size, progress=False, **kw)
        score = _hidden_distance if kw["readout"] == "hidden" else kl_per_prompt
        off, t_off = timed(sweep, model, texts, score, shared_prefix=False, **opts)
        auto, t_auto = timed(sweep, model, texts, score, **opts)  # the default: auto
        row = {
            "case": name,
            "off": t_off,
            "auto": t_auto,
            "ratio_off_over_auto": {c: t_off[c] / t_auto[c] for c in ("cpu", "wall")},
            "shared_prefix_used": auto.shared_prefix,
            "max_abs_diff": float(np.abs(off.scores - auto.scores).max()),
            "max_score": float(np.abs(off.scores).max()),
        }
        out.append(row)
        rec.put("cases", out)
        print(
            f"{name}: off {t_off['cpu']:.1f} s cpu / {t_off['wall']:.1f} s wall, auto {t_auto['cpu']:.1f} / "
            f"{t_auto['wall']:.1f}; off/auto {row['ratio_off_over_auto']['cpu']:.2f}x cpu; prefix "
            f"{auto.shared_prefix}; max diff {row['max_abs_diff']:.1e} (scores up to {row['max_score']:.3g})",
            flush=True,
        )


def ships(args: argparse.Namespace, model: interp.LoadedModel, prompts: list[str], rec: Record) -> None:
    template = args.templates[0]
    batch = model.tokenize(prompts, template)
    heads = _heads(model, args.heads)
    facts = {
        "template": batch.template,
        "lengths": batch.lengths.tolist(),
        "shared_prefix_tokens": shared_prefix_length(batch),
        "n_heads": len(heads),
    }
    print(f"\n== Ships sweep: {facts}", flush=True)
    opts = dict(ablation="query", batch_size=args.batch_size, progress=args.progress)
    old, t_old = timed(safety_sweep, model, batch, heads=heads, shared_prefix=False, **opts)
    print(f"Ships sweep, fast exact (today): {t_old}", flush=True)
    rec.put("ships", {**facts, "fast_exact": t_old})
    new, t_new = timed(safety_sweep, model, batch, heads=heads, **opts)
    print(f"Ships sweep, fast exact + shared prefix: {t_new}", flush=True)
    kl_old, kl_new = old.kl(model), new.kl(model)
    ang_old, ang_new = old.angles(1)[:, 0], new.angles(1)[:, 0]
    ships_rec = {
        **facts,
        "fast_exact": t_old,
        "fast_exact_shared_prefix": t_new,
        "ratio_shared_vs_fast_exact": {c: t_old[c] / t_new[c] for c in ("cpu", "wall")},
        "max_abs_diff_kl": float(np.abs(kl_old - kl_new).max()),
        "max_kl": float(kl_old.max()),
        "max_abs_diff_angle_deg": float(np.abs(ang_old - ang_new).max()),
        "max_angle_deg": float(ang_old.max()),
        "max_abs_diff_hidden": float((old.hidden - new.hidden).abs().max()),
    }
    rec.put("ships", ships_rec)
    print(ships_rec, flush=True)
    if args.no_sahara or args.heads != "all":
        return
    config = SaharaConfig(steps=3, candidates=None, template=template, batch_size=args.batch_size)
    first = ships_dataset_from_sweep(model, prompts, batch, new, config)
    result, t_rest = timed(sahara, model, prompts, config, progress=args.progress, first_step=first)
    t_sahara = {c: t_new[c] + t_rest[c] for c in ("cpu", "wall")}
    steps = result.extras["steps"]
    sahara_rec = {
        "steps_2_and_3": t_rest,
        "full_3_steps": t_sahara,
        "step_seconds_wall": [t_new["wall"], *result.extras["step_seconds"][1:]],
        "n_tried": [s["n_tried"] for s in steps],
        "group": list(result.extras["group"]),
        "scores_deg": [s["score"] for s in steps],
        "ratio_vs_one_all_head_sweep_today": {c: t_sahara[c] / t_old[c] for c in ("cpu", "wall")},
        "ratio_vs_one_all_head_sweep_shared_prefix": {c: t_sahara[c] / t_new[c] for c in ("cpu", "wall")},
    }
    rec.put("sahara", sahara_rec)
    print(sahara_rec, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["compare", "cases", "ships"], default="compare")
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--prompts", default="advbench")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--templates", default="auto,raw", help="Comma-separated (ships: the first is used).")
    parser.add_argument("--kind", default="uniform")
    parser.add_argument("--heads", default="one-per-layer", help='"all", "one-per-layer" or labels "L0H1,L3H2".')
    parser.add_argument("--naive-heads", type=int, default=30, help="Heads the naive loop is timed on (scaled).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="compare: alternated runs of the two sweeps.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own).")
    parser.add_argument("--no-sahara", action="store_true")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.templates = args.templates.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = interp.load_model(args.model, dtype=args.dtype)
    prompts = interp.load_prompts(args.prompts, args.limit)
    print(repr(model), f"torch threads {torch.get_num_threads()}, load {os.getloadavg()}", flush=True)
    rec = Record(
        args.json,
        command=" ".join(sys.argv),
        model=model.info(),
        prompts=args.prompts,
        n_prompts=len(prompts),
        kind=args.kind,
        batch_size=args.batch_size,
        heads=args.heads,
        part=args.part,
    )
    start = time.perf_counter()
    {"compare": compare, "cases": cases, "ships": ships}[args.part](args, model, prompts, rec)
    rec.put("total_wall_seconds", time.perf_counter() - start)
    rec.put("load_average_at_end", os.getloadavg())


if __name__ == "__main__":
    main()
