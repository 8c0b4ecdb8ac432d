"""How often does attribution screening + exact verification find a prompt's exhaustive top Ships head?

Uses a recorded full run's ships.json (an exact sweep of every head on the scan prompts, per-prompt KLs kept) as
the exhaustive answer, reruns the screened search of interp.lines.safety.per_query on the same prompts with the
same eps and template, and writes per_query_agreement.json next to it.

    python scripts/safety_agreement.py docs/safety_heads/qwen2.5-coder-1.5b --model testbed --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import interp
from interp.lines.safety.per_query import PerQueryConfig, agreement_with_recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="A recorded run folder with ships.json and run.json.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--shortlist", type=int, default=8)
    args = parser.parse_args()
    ships = interp.HeadScores.load(args.folder / "ships.json")
    n_scan = int(json.loads((args.folder / "run.json").read_text())["args"]["scan"])
    prompts = interp.load_prompts("advbench")[:n_scan]
    config = PerQueryConfig(
        shortlist=args.shortlist, eps=float(ships.config["eps"]), template=str(ships.provenance["template"])
    )
    model = interp.load_model(args.model, dtype=args.dtype)
    result = agreement_with_recorded(model, ships, prompts, config)
    (args.folder / "per_query_agreement.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
