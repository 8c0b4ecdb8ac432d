"""A short check that the toolkit runs on a CUDA GPU at real scale (no weights needed: random init in code).

    python benchmarks/cuda_check.py                  # needs a GPU; prints a table and writes JSON with --json

What it checks, with a ~1.7B-parameter Llama-shaped model (SmolLM2-1.7B's shape: 24 layers x 32 heads, 32 KV
heads, d_model 2048) built at random on the GPU, and tiny models on both devices:
1. tiny-llama scores agree between CPU and CUDA (ablation-kl, entropy): same code path, different device.
2. On the real-scale model: the batched exact ablation sweep equals the naive per-head loop on the first
   two layers (64 heads), and the ratio of their times; a full 768-head sweep and an entropy scan, timed.
3. Interventions hold for a whole generation on CUDA: alpha=1 scaling is the plain generation, zero-ablating
   every head of the model changes it.
Not a test: the suite runs on CPU; this is a recorded manual check (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

import interp
from interp.core.registry import run_metric
from interp.engine.compare import next_token_table
from interp.engine.interventions import HeadIntervention
from interp.engine.run import generate, generate_batch
from interp.engine.sweep import kl_per_prompt, sweep
from interp.lines.rfa.metrics import collect_head_outputs
from interp.lines.vision.metrics import VHRConfig, resolve_images, vhr_generate
from interp.model.loading import wrap_model
from interp.model.tiny import build_tiny
from interp.testing.reference import naive_sweep

PROMPTS = [
    "The capital of France is",
    "In 1492, Columbus sailed across the",
    "def fibonacci(n):\n    return",
    "Water boils at a temperature of",
    "The quick brown fox jumps over the",
    "To make a cup of tea, first",
    "The mitochondria is the powerhouse of the",
    "She opened the door and saw",
] * 2


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=2048, help="d_model (32 heads of width/32)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only for a dry run with --layers/--width small")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: this check needs a GPU.")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    report: dict = {"device": name, "torch": torch.__version__}
    print(report)

    # 1. tiny model, CPU vs CUDA
    cpu = interp.load_model("tiny-llama", device="cpu")
    gpu = interp.load_model("tiny-llama", device=args.device)
    for metric in ("ablation-kl", "entropy"):
        a = run_metric(metric, cpu, PROMPTS[:8], progress=False).scores
        b = run_metric(metric, gpu, PROMPTS[:8], progress=False).scores
        diff = float(np.nanmax(np.abs(a - b)))
        report[f"tiny_cpu_vs_cuda_{metric}_max_diff"] = diff
        print(f"tiny-llama {metric}: max |CPU - CUDA| = {diff:.2e}")

    # 1b. the other intervention kinds, the effects table and probe features on the GPU (tiny model)
    tiny_heads = list(gpu.heads())
    for kind in ("mean", "resample", "uniform"):
        ref = naive_sweep(gpu, PROMPTS[:6], kl_per_prompt, heads=tiny_heads, kind=kind)
        got = sweep(gpu, PROMPTS[:6], kl_per_prompt, heads=tiny_heads, kind=kind, progress=False)
        diff = float(np.nanmax(np.abs(ref.scores - got.scores)))
        report[f"tiny_cuda_naive_vs_batched_{kind}_max_diff"] = diff
        print(f"tiny-llama on {args.device}, {kind}: max |naive - batched| = {diff:.2e}")
    table, kl = next_token_table(gpu, PROMPTS[0], HeadIntervention(tuple(tiny_heads[:2]), "zero"), k=5)
    report["tiny_next_token_table_kl"] = kl
    feats = collect_head_outputs(gpu, PROMPTS[:6])
    report["tiny_probe_features_shape"] = list(feats.shape)
    print(f"next-token table KL {kl:.3g} ({len(table)} rows); probe features {feats.shape}")

    # 1c. vision: a tiny random LLaVA on both devices (VHD, T-VHD, VHR), VHR generation on the GPU
    lcpu = interp.load_model("tiny-llava", device="cpu")
    lgpu = interp.load_model("tiny-llava", device=args.device)
    question = ["What colour is the circle?"]
    for metric in ("vhd", "t-vhd", "vhr"):
        a = run_metric(metric, lcpu, question, progress=False, n_images=4).scores
        b = run_metric(metric, lgpu, question, progress=False, n_images=4).scores
        diff = float(np.nanmax(np.abs(a - b)))
        report[f"tiny_llava_cpu_vs_cuda_{metric}_max_diff"] = diff
        print(f"tiny-llava {metric}: max |CPU - {args.device}| = {diff:.2e}")
    scenes = resolve_images("scenes", 4, 0)
    plain, _ = vhr_generate(lgpu, scenes, question * 4, VHRConfig(alpha=1.0), max_new_tokens=8)
    base = generate_batch(lgpu, lgpu.tokenize_images(question * 4, scenes), max_new_tokens=8)
    report["tiny_llava_vhr_alpha1_equals_base"] = plain == base
    print(f"tiny-llava VHR alpha=1 equals plain generation on {args.device}: {plain == base}")

    # 2. real-scale random model
    hf, tok = build_tiny(
        "llama",
        seed=0,
        hidden_size=args.width,
        intermediate_size=4 * args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=2048,
    )
    hf = hf.to(args.device)
    model = wrap_model(hf, tok, "random-1.7b-shape")
    n_params = sum(p.numel() for p in hf.parameters())
    report["model"] = {"params": n_params, "layers": model.n_layers, "heads": model.n_heads, "dtype": "float32"}
    print(repr(model), f"{n_params / 1e9:.2f}B params")
    heads = [h for h in model.heads() if h.layer < 2]
    naive, t_naive = timed(lambda: naive_sweep(model, PROMPTS, kl_per_prompt, heads=heads, kind="zero"))
    fast, t_fast = timed(lambda: sweep(model, PROMPTS, kl_per_prompt, heads=heads, kind="zero", progress=False))
    diff = float(np.nanmax(np.abs(naive.scores - fast.scores)))
    scale = float(np.nanmax(np.abs(naive.scores)))
    report["first_2_layers"] = {
        "heads": len(heads),
        "prompts": len(PROMPTS),
        "naive_s": t_naive,
        "batched_s": t_fast,
        "speedup": t_naive / t_fast,
        "max_abs_diff": diff,
        "max_abs_score": scale,
    }
    print(
        f"{len(heads)} heads x {len(PROMPTS)} prompts: naive {t_naive:.2f}s, batched {t_fast:.2f}s "
        f"({t_naive / t_fast:.1f}x), max |diff| {diff:.2e} (scores up to {scale:.2e})"
    )
    full, t_full = timed(lambda: run_metric("ablation-kl", model, PROMPTS, progress=False))
    _, t_ent = timed(lambda: run_metric("entropy", model, PROMPTS, progress=False))
    approx, t_attr = timed(lambda: run_metric("ablation-kl", model, PROMPTS, progress=False, method="attribution"))
    rho = float(spearmanr(full.scores.ravel(), approx.scores.ravel()).statistic)
    report["attribution_s"] = t_attr
    report["attribution_spearman_vs_exact"] = rho
    print(f"attribution: {t_attr:.2f}s, Spearman vs exact {rho:.3f}")
    report["full_sweep_s"] = t_full
    report["entropy_s"] = t_ent
    report["top_ablation_heads"] = [str(h) for h in full.top_heads(5)]
    print(f"ablation-kl, all {model.n_layers * model.n_heads} heads: {t_full:.2f}s; entropy scan: {t_ent:.2f}s")
    if args.device == "cuda":
        report["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30

    # 3. generation with interventions
    base = generate(model, PROMPTS[:4], max_new_tokens=16, template="raw")
    same = generate(
        model, PROMPTS[:4], HeadIntervention(tuple(heads), "scale", alpha=1.0), max_new_tokens=16, template="raw"
    )
    everything = HeadIntervention(tuple(model.heads()), "zero")
    ablated = generate(model, PROMPTS[:4], everything, max_new_tokens=16, template="raw")
    report["generate_alpha1_equals_base"] = same == base
    report["generate_all_heads_zeroed_differs"] = ablated != base
    print(f"generation: alpha=1 equals base: {same == base}; all heads zeroed differs: {ablated != base}")
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
