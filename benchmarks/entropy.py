"""Benchmark: the `entropy` analyzer (batched, patterns reduced inside the hook) vs a naive baseline.

The baseline is what one would write first: one forward pass per prompt and per layer capturing the full
attention pattern, then a loop over heads and query rows. Both run in this process on the same prompts; the
script prints both times, their ratio and the largest difference between the two results.

    python benchmarks/entropy.py --model default --prompts 32
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import interp
from interp.core.prompts import load_prompts
from interp.engine.hookpoints import pattern_name
from interp.engine.run import capture
from interp.lines.entropy.metrics import entropy_grids


def naive_entropy(model: interp.LoadedModel, prompts: list[str]) -> np.ndarray:
    """Normalized entropy [L, H]: per prompt, per layer one pass, per head a loop over rows."""
    per_prompt = np.zeros((len(prompts), model.n_layers, model.n_heads))
    for b, prompt in enumerate(prompts):
        batch = model.tokenize([prompt])
        for layer in range(model.n_layers):
            pattern = capture(model, batch, [pattern_name(layer)])[pattern_name(layer)][0].double()
            for h in range(model.n_heads):
                rows = []
                for i in range(1, pattern.shape[-1]):
                    p = pattern[h, i, : i + 1]
                    rows.append(float(-(p * p.clamp_min(1e-300).log()).sum()) / math.log(i + 1))
                per_prompt[b, layer, h] = np.mean(rows)
    return per_prompt.mean(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=32, help="reference + short + harmless, first N")
    parser.add_argument("--naive-prompts", type=int, default=None, help="run the baseline on fewer (slow)")
    args = parser.parse_args()
    model = interp.load_model(args.model)
    pool = load_prompts("reference") + load_prompts("short") + load_prompts("harmless")
    prompts = pool[: args.prompts]
    print(f"{model!r}\n{len(prompts)} prompts, torch threads={torch.get_num_threads()}")
    t = time.perf_counter()
    result = interp.scan("entropy", model, prompts, batch_size=32, progress=False)
    ours = time.perf_counter() - t
    naive_prompts = prompts[: args.naive_prompts or len(prompts)]
    t = time.perf_counter()
    naive = naive_entropy(model, naive_prompts)
    base = (time.perf_counter() - t) * len(prompts) / len(naive_prompts)  # scaled to the same prompt count
    if len(naive_prompts) == len(prompts):
        diff = float(np.abs(entropy_grids(result)[1] - naive).max())
        print(f"max |ours - naive| = {diff:.2e}")
    print(f"ours {ours:.2f} s, naive {base:.2f} s ({len(naive_prompts)} prompts measured), ratio {base / ours:.1f}x")


if __name__ == "__main__":
    main()
