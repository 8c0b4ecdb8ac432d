"""How much value-bias folding (HookedTransformer's default) changes ablation-KL scores on a model with value biases.

The same model is loaded twice: raw HF weights (the bridge's default, interp's default) and with
fold_value_biases=True (TransformerLens' weight processing, value biases folded into the output bias). Both
compute the same function (the base next-token distributions are compared); what changes is what hook_z holds,
and so what zero ablation removes. Writes one JSON with every number docs/transformerlens.md quotes.

    nice -n 15 python scripts/value_bias_folding.py --model testbed-small --limit 4 \
        --json docs/transformerlens/value_bias_folding_qwen2.5-coder-0.5b.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import interp
from interp.core.provenance import make_provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="testbed-small")
    parser.add_argument("--prompts", default="short")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--kinds", default="zero,mean")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = interp.load_prompts(args.prompts, args.limit)
    raw = interp.load_model(args.model)
    folded = interp.load_model(args.model, fold_value_biases=True)
    batch = raw.tokenize(prompts)
    with torch.no_grad():
        base_raw = raw.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1].float().log_softmax(-1)
        base_fold = folded.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1].float().log_softmax(-1)
    out: dict = {
        "model": raw.info(),
        "value_bias_layers_raw": raw.value_bias_layers,
        "value_bias_layers_folded": folded.value_bias_layers,
        "n_prompts": len(prompts),
        "base_logprob_max_abs_diff": float((base_raw - base_fold).abs().max()),
        "kinds": {},
    }
    for kind in args.kinds.split(","):
        start = time.perf_counter()
        a = interp.scan("ablation-kl", raw, prompts, kind=kind, progress=False)
        b = interp.scan("ablation-kl", folded, prompts, kind=kind, progress=False)
        diff = np.abs(a.scores - b.scores)
        top_a, top_b = a.top_heads(10), b.top_heads(10)
        out["kinds"][kind] = {
            "max_score_raw": float(np.nanmax(a.scores)),
            "max_score_folded": float(np.nanmax(b.scores)),
            "max_abs_diff": float(np.nanmax(diff)),
            "median_abs_diff": float(np.nanmedian(diff)),
            "spearman": a.rank_agreement(b, 10)["spearman"],
            "top10_overlap": a.rank_agreement(b, 10)["top10_overlap"],
            "top10_raw": [h.label for h in top_a],
            "top10_folded": [h.label for h in top_b],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(kind, out["kinds"][kind], flush=True)
    out["provenance"] = make_provenance(prompts, seed=0)
    out["command"] = (
        f"python scripts/value_bias_folding.py --model {args.model} --prompts {args.prompts} --limit {args.limit} "
        f"--kinds {args.kinds} --json {args.json}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
