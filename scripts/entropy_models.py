"""Collapse / overload classification of every head on the models users load (docs/entropy.md, "On the models").

For each model: the `entropy` metric over the same 32 prompts as the default-model section of docs/entropy.md
(data/prompts/reference.txt 16 + short.txt 8 + the first 8 of harmless.txt), chat template, one call; the
HeadScores JSON and the per-head classes (CSV) go to OUT/{model}.json and OUT/{model}.heads.csv, and one summary
table with every model to OUT/summary.md (the numbers in the docs are copied from it).

    python scripts/entropy_models.py --models default,testbed-small,testbed --out docs/entropy/models --dtype float32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import interp
from interp.lines.entropy.report import EntropyReport


def prompts() -> list[str]:
    return interp.load_prompts("reference") + interp.load_prompts("short") + interp.load_prompts("harmless", 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="default,testbed-small,testbed")
    parser.add_argument("--out", type=Path, default=Path("docs/entropy/models"))
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    texts = prompts()
    rows = [
        "| model | layers x heads | collapsed (< 0.1) | overloaded (> 0.75) | where the overloaded heads are | "
        "where the collapsed heads are | mean H/Hmax, first layer -> last | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = interp.load_model(name, dtype=args.dtype)
        start = time.perf_counter()
        result = interp.run_metric("entropy", model, texts, progress=False, batch_size=8)
        seconds = time.perf_counter() - start
        stem = name.replace("/", "_")
        result.save(args.out / f"{stem}.json")
        report = EntropyReport(result)
        report.heads().to_csv(args.out / f"{stem}.heads.csv", index=False)
        totals = report.totals()
        layer_table = report.per_layer()

        def where(cls: str, table=layer_table) -> str:
            counts = table.set_index("layer")[cls]
            return ", ".join(f"L{layer}: {int(n)}" for layer, n in counts.items() if n) or "none"

        mean = np.nanmean(report.normalized, axis=1)
        rows.append(
            f"| {model.name} | {model.n_layers} x {model.n_heads} | {totals['collapsed']} "
            f"({totals['frac_collapsed']:.1%}) | {totals['overloaded']} ({totals['frac_overloaded']:.1%}) | "
            f"{where('overloaded')} | {where('collapsed')} | {mean[0]:.2f} -> {mean[-1]:.2f} | {seconds:.1f} |"
        )
        print(rows[-1], flush=True)
        del model
    (args.out / "summary.md").write_text(
        f"{len(texts)} prompts, chat template, dtype {args.dtype}; thresholds: collapsed < 0.1, overloaded > 0.75 "
        "of the maximum entropy.\n\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
