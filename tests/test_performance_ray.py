"""Ray sharding == single process (one test: starting a local Ray with 2 CPU workers is the slow part)."""

from __future__ import annotations

import numpy as np

import interp
from interp.engine.distributed import ray_sweep
from interp.engine.sweep import kl_per_prompt, sweep

PROMPTS = ["hello world", "the cat sat on the mat", "abc", "what is this thing?", "one more prompt"]


def test_ray_shards_equal_single_process(tiny_llama: interp.LoadedModel, tmp_path) -> None:
    import ray

    single = sweep(tiny_llama, PROMPTS, kl_per_prompt, kind="mean", progress=False)
    try:
        # Workers load "tiny-llama" by name (as cluster workers would); "mean" averages over ALL prompts.
        by_prompts = ray_sweep("tiny-llama", PROMPTS, kl_per_prompt, kind="mean", n_workers=2)
        # Sharding heads, from a LoadedModel, with per-worker checkpoints.
        by_heads = ray_sweep(
            tiny_llama, PROMPTS, kl_per_prompt, kind="mean", shard="heads", n_workers=2, checkpoint=tmp_path
        )
    finally:
        ray.shutdown()
    for result in (by_prompts, by_heads):
        assert [g[0].label for g in result.groups] == [g[0].label for g in single.groups]
        assert np.abs(result.per_prompt - single.per_prompt).max() <= 1e-5
        assert np.abs(result.scores - single.scores).max() <= 1e-5
        assert result.forward_rows == single.forward_rows  # every row ran exactly once, somewhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0", "shard-1"]
    hs = interp.HeadScores(by_prompts.grid(3, 4), "ablation-kl", tiny_llama.name)
    assert hs.top_heads(1) == interp.HeadScores(single.grid(3, 4), "ablation-kl", tiny_llama.name).top_heads(1)
