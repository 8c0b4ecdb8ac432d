"""Batched sweep vs the naive loop (one forward per head), same model, same prompts, same process.

    python benchmarks/sweep.py                      # default model, 8 short prompts, every head
    python benchmarks/sweep.py --model tiny-llama   # seconds

Prints each method's time, the ratio to the naive loop, and the largest score difference (they must agree).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import interp
from interp.engine.sweep import kl_per_prompt, sweep
from interp.testing.reference import naive_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", default="short")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--kind", default="zero")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=None, help="Only sweep the heads of the first N layers.")
    parser.add_argument("--json", default=None, help="Also write the numbers to this JSON file.")
    args = parser.parse_args()

    model = interp.load_model(args.model)
    prompts = interp.load_prompts(args.prompts, args.limit)
    heads = [h for h in model.heads() if args.layers is None or h.layer < args.layers]
    print(repr(model))
    print(f"{len(prompts)} prompts, {len(heads)} heads, kind={args.kind}, torch threads={torch.get_num_threads()}")

    timings: dict[str, float] = {}
    results = {}
    runs = {
        "naive loop (1 forward per head)": lambda: naive_sweep(
            model, prompts, kl_per_prompt, heads=heads, kind=args.kind
        ),
        "batched, full passes": lambda: sweep(
            model,
            prompts,
            kl_per_prompt,
            heads=heads,
            kind=args.kind,
            batch_size=args.batch_size,
            reuse_prefix=False,
            progress=False,
        ),
        "batched + prefix reuse (default)": lambda: sweep(
            model, prompts, kl_per_prompt, heads=heads, kind=args.kind, batch_size=args.batch_size, progress=False
        ),
    }
    for name, run in runs.items():
        start = time.perf_counter()
        results[name] = run()
        timings[name] = time.perf_counter() - start
    naive_name = next(iter(runs))
    naive = results[naive_name].scores
    print(f"\n{'method':36s} {'seconds':>9s} {'speed-up':>9s} {'max |diff|':>11s}")
    for name, seconds in timings.items():
        diff = float(np.max(np.abs(results[name].scores - naive)))
        print(f"{name:36s} {seconds:9.2f} {timings[naive_name] / seconds:8.2f}x {diff:11.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"model": model.name, "n_prompts": len(prompts), "n_heads": len(heads), "seconds": timings},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
