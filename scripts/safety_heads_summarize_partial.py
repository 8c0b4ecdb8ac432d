"""Summarize the ASR rows of the 0.5B run that was stopped by hand (docs/safety_heads.md says why).

The run's generation batches are prompt-major, so asr_rows_partial.csv holds every condition on the same prompts;
this judges those rows with interp.safety.summarize_attacks (the same code the finished stage uses) and writes
asr_rows.csv / asr_summary.csv / asr.json and the run.json record. Run from the repository root:

    python scripts/safety_heads_summarize_partial.py
"""

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from interp.prompts import load_prompts
from interp.safety import AsrConfig, summarize_attacks

OUT = Path("docs/safety_heads/qwen2.5-coder-0.5b")
rows = pd.read_csv(OUT / "asr_rows_partial.csv")
rows["heads"] = rows["heads"].fillna("")
counts = rows.groupby("prompt_id").size()
assert (counts == 4).all(), counts  # every condition on every prompt
done = sorted(set(rows.prompt_id))
prompts = load_prompts("advbench")[8:108]  # the run's held-out set
assert all(p == prompts[i] for p, i in zip(rows.prompt, rows.prompt_id, strict=True))
cfg = AsrConfig(max_new_tokens=64, min_tokens=32, template="auto", ablation="query", eps=1e-8, batch_size=32)
model = SimpleNamespace(name="qwen2.5-coder-0.5b-instruct", device="cpu")  # only recorded in the provenance
record = json.loads((OUT / "run.json").read_text())
seconds = time.time() - pd.Timestamp(record["stages"]["harmless_kl"]["finished"]).timestamp()
result = summarize_attacks(model, [prompts[i] for i in done], rows, cfg, seconds)  # type: ignore[arg-type]
result.save(OUT, "asr")
(OUT / "asr_rows_partial.csv").unlink()
rates = result.summary.set_index("condition")["asr"].to_dict()
record["stages"]["asr"] = {
    "seconds": round(seconds, 1),
    "finished": pd.Timestamp.utcnow().isoformat(),
    "complete": False,
    "n_prompts": len(done),
    "of": 100,
    "note": "stopped by hand after the generation batches that fit the session; summarized by "
    "scripts/safety_heads_summarize_partial.py",
}
record["stages"]["harmless"] = {"seconds": 0.0, "complete": False, "skipped": "not reached (time)"}
record["asr"] = rates
gain = rates["sahara_group"] - max(rates["none"], rates["random_same_layers"])
record["target"] = {"sahara_minus_best_baseline": gain, "met": bool(gain >= 0.3), "asr_prompts": len(done)}
(OUT / "run.json").write_text(json.dumps(record, indent=1, default=str))
print(result.summary.to_string())
