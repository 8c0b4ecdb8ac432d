"""Redraw a recorded dose-response figure (HTML + PNG) from its dose_summary.csv with a chosen ASR column.

Where the LLM judge is uninformative (the 0.5B testbed labels every response a refusal, docs/safety_heads.md),
the robust keyword ASR counted on fluent responses only (asr_fluent) is the line to look at:

    python scripts/safety_dose_figure.py docs/safety_heads/qwen2.5-coder-0.5b-chat --asr asr_fluent
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from interp.lines.safety import dose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--asr", default="asr_fluent", choices=["asr_judged", "asr_fluent", "asr_robust", "asr_keyword"]
    )
    args = parser.parse_args()
    summary = pd.read_csv(args.folder / "dose_summary.csv")
    record = json.loads((args.folder / "run.json").read_text())
    name = record["stages"]["load"]["model"]["name"]
    n = int(summary.loc[summary["condition"] == "none", "n"].iloc[0])
    title = f"{name}: heads ablated together ({record['args']['template']} template, {n} harmful prompts)"
    dose.figure(summary, title, args.asr).write_html(args.folder / "dose_response.html", include_plotlyjs=True)
    dose.figure_png(summary, title, args.folder / "dose_response.png", args.asr)
    print(f"wrote {args.folder}/dose_response.html and .png ({args.asr})")


if __name__ == "__main__":
    main()
