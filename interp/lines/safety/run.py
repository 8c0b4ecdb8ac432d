"""The full safety-heads run: Ships + dataset Ships + Sahara on AdvBench prompts, then ASR on held-out AdvBench
prompts and the harmless-side cost, for no ablation / the top-1 Ships head / the Sahara group / random heads
from the same layers.

    interp safety run --model testbed --out docs/safety_heads          # the recorded run
    interp safety run --model tiny-llama --out /tmp/s --scan 4 --eval 4 --harmless 4   # seconds

Stages write their results into --out as they finish (ships.json, ships_dataset.json, sahara.json,
asr_*.csv/json, harmless_*.csv/json, run.json with timings); a rerun with the same arguments skips the
stages whose files exist, so an interrupted run resumes. Prompts: scan = the first --scan AdvBench
prompts, eval = the next --eval (held out, disjoint from the scan set), harmless = the first --harmless
prompts of data/prompts/harmless.txt.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.core.errors import InterpError
from interp.core.heads import Head
from interp.core.prompts import load_prompts
from interp.core.provenance import package_versions, utc_now
from interp.core.results import HeadScores
from interp.lines.safety.asr import (
    AsrConfig,
    AsrResult,
    generate_conditions,
    harmless_kl,
    random_control,
    read_rows,
    summarize_attacks,
    summarize_harmless,
    write_rows,
)
from interp.lines.safety.experiments import dose_stage, judge_stage, per_query_stage
from interp.lines.safety.metrics import (
    RELEASED_EPS,
    SaharaConfig,
    safety_sweep,
    sahara,
    sahara_group,
    ships_dataset_from_sweep,
    ships_from_sweep,
)
from interp.lines.safety.per_query import PerQueryConfig
from interp.model.loaded import LoadedModel
from interp.model.loading import load_model


@dataclass
class RunOptions:
    """The run's options (`interp safety run --help` documents each)."""

    model: str = "testbed"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 (bfloat16 is ~2x faster on CPUs with bf16)
    out: Path = Path("docs/safety_heads")
    scan: int = 8  # AdvBench prompts for Ships / Sahara
    eval: int = 100  # held-out AdvBench prompts for ASR
    harmless: int = 100  # harmless prompts for the harmless-side cost
    template: str = "auto"  # auto (chat template if any) | chat | query | raw
    ablation: str = "query"
    eps: float = RELEASED_EPS
    steps: int = 3
    candidates: int | None = None  # None: every head at every Sahara step
    max_new_tokens: int = 64
    harmless_max_new_tokens: int | None = None  # default: max_new_tokens
    min_tokens: int = 32
    batch_size: int = 32  # rows per sweep pass
    gen_batch_size: int = 32  # rows (conditions x prompts) per generation batch
    seed: int = 0  # seed of the random control heads
    budget_s: float | None = None  # generation stages stop at the next batch past it
    progress: bool = True
    stages: tuple[str, ...] = ("asr", "harmless", "per-query", "dose", "judge")  # the scan always runs
    per_query: int = 100  # held-out prompts of the per-query experiment (the first of the eval set)
    shortlist: int = 8  # heads verified exactly per prompt after screening
    screen: str = "logprob"  # logprob | kl (attribution) | prior (the scan's top mean-Ships heads)
    agreement: int = 10  # prompts on which the screened top head is checked against an exhaustive sweep
    dose_eval: int = 50  # harmful prompts per dose-response point (the first of the eval set)
    dose_harmless: int = 25  # harmless prompts per dose-response point
    dose_ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    dose_seeds: tuple[int, ...] = (0, 1)  # seeds of the random head orders
    llm_judge: bool = True  # per-query / dose: also the LLM judge (slow); False: keyword, robust keyword, fluency


STAGES = ("asr", "harmless", "per-query", "dose", "judge")


class Run:
    """Stage bookkeeping: timings and facts go to run.json after every stage."""

    def __init__(self, args: RunOptions) -> None:
        self.args, self.out = args, args.out
        self.started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "run.json"
        self.record: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"stages": {}}
        self.record["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()}
        self.record["machine"] = {
            "nproc": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        }
        self.record["versions"] = package_versions()

    def over_budget(self) -> bool:
        return self.args.budget_s is not None and time.monotonic() - self.started > self.args.budget_s

    def done(self, stage: str, seconds: float, **facts: Any) -> None:
        entry: dict[str, Any] = {
            "seconds": round(seconds, 1),
            "finished": utc_now(),
            "load_average": os.getloadavg(),
            **facts,
        }
        # A resumed run records a stage again (often in seconds: its work was on file); the earlier invocations'
        # times are measurements too, so they are kept, oldest first, rather than overwritten.
        previous = self.record["stages"].get(stage)
        if previous:
            entry["earlier"] = [*previous.pop("earlier", []), previous]
        self.record["stages"][stage] = entry
        (self.out / "run.json").write_text(json.dumps(self.record, indent=1, default=str))
        print(f"[{stage}] {seconds:.1f} s {facts}", flush=True)


def scan_stage(run: Run, model: LoadedModel, prompts: list[str]) -> tuple[HeadScores, HeadScores, HeadScores]:
    a = run.args
    cfg = SaharaConfig(
        ablation=a.ablation,
        eps=a.eps,
        template=a.template,
        batch_size=a.batch_size,
        steps=a.steps,
        candidates=a.candidates,
    )
    files = [run.out / f for f in ("ships.json", "ships_dataset.json", "sahara.json")]
    if files[0].is_file() and files[1].is_file():
        ships, ships_d = HeadScores.load(files[0]), HeadScores.load(files[1])
    else:
        batch = model.tokenize(prompts, a.template)
        start = time.perf_counter()
        swept = safety_sweep(model, batch, ablation=a.ablation, eps=a.eps, batch_size=a.batch_size, progress=a.progress)
        ships = ships_from_sweep(model, prompts, batch, swept, cfg)
        ships_d = ships_dataset_from_sweep(model, prompts, batch, swept, cfg)
        ships.save(files[0])
        ships_d.save(files[1])
        run.done(
            "ships_sweep",
            time.perf_counter() - start,
            heads=len(swept.groups),
            prompts=len(prompts),
            tokens=list(batch.input_ids.shape),
            top_ships=ships.top_heads(1)[0].label,
            top_ships_dataset=ships_d.top_heads(1)[0].label,
        )
    if files[2].is_file():
        return ships, ships_d, HeadScores.load(files[2])
    start = time.perf_counter()
    found = sahara(model, prompts, cfg, progress=a.progress, first_step=ships_d)
    found.save(files[2])
    run.done(
        "sahara",
        time.perf_counter() - start,
        group=list(found.extras["group"]),
        step_scores=[s["score"] for s in found.extras["steps"]],
    )
    return ships, ships_d, found


def conditions(model: LoadedModel, ships: HeadScores, found: HeadScores, seed: int) -> dict[str, list[Head] | None]:
    group = sahara_group(found)
    return {
        "none": None,
        "top1_ships": ships.top_heads(1),
        "sahara_group": group,
        "random_same_layers": random_control(model, group, seed),
    }


def kl_stage(run: Run, model: LoadedModel, prompts: list[str], conds: dict, cfg: AsrConfig) -> dict[str, np.ndarray]:
    """Harmless-side next-token KL of each condition (cheap; run before the generations)."""
    path = run.out / "harmless_kl.csv"
    if path.is_file():
        frame = pd.read_csv(path)
        return {c: frame[c].to_numpy() for c in conds}
    start = time.perf_counter()
    kl = harmless_kl(model, prompts, conds, cfg, progress=run.args.progress)
    pd.DataFrame({"prompt": prompts, **kl}).to_csv(path, index=False)
    run.done("harmless_kl", time.perf_counter() - start, mean_kl={c: float(v.mean()) for c, v in kl.items()})
    return kl


class BudgetSpent(Exception):
    """Raised between generation batches once --budget-s is used up."""

    def __init__(self, rows: pd.DataFrame) -> None:
        super().__init__("time budget spent")
        self.rows = rows


def eval_stage(
    run: Run, model: LoadedModel, name: str, prompts: list[str], conds: dict, cfg: AsrConfig, **kwargs: Any
) -> AsrResult | None:
    """ASR ("asr") or harmless cost ("harmless"), prompt-major. Rows so far go to {name}_rows_partial.csv after
    every batch; past --budget-s the stage stops there and the rates cover the prompts finished (recorded)."""
    summary = run.out / f"{name}_summary.csv"
    earlier = None
    if summary.is_file():
        rows = read_rows(run.out / f"{name}_rows.csv")
        if rows["prompt_id"].nunique() >= len(prompts):
            print(f"[{name}] already done: {summary}")
            return AsrResult(rows, read_rows(summary), cfg.to_dict())
        # an earlier run stopped at its --budget-s: generate only the prompts it did not reach
        earlier = rows[["condition", "heads", "prompt_id", "prompt", "response", "n_tokens"]]
        print(f"[{name}] resuming: {rows['prompt_id'].nunique()} of {len(prompts)} prompts already done")
    if run.over_budget():
        run.done(name, 0.0, complete=False, skipped="time budget spent before the stage started")
        return None
    partial = run.out / f"{name}_rows_partial.csv"
    done = set() if earlier is None else set(earlier["prompt_id"])
    todo = [i for i in range(len(prompts)) if i not in done]
    start = time.perf_counter()

    def with_earlier(rows: pd.DataFrame) -> pd.DataFrame:
        return rows if earlier is None else pd.concat([earlier, rows], ignore_index=True)

    def checkpoint(rows: pd.DataFrame) -> None:
        rows = with_earlier(rows)
        write_rows(rows, partial)
        if run.over_budget():
            raise BudgetSpent(rows)

    try:
        rows = with_earlier(
            generate_conditions(model, prompts, conds, cfg, run.args.progress, on_chunk=checkpoint, prompt_ids=todo)
        )
        complete = True
    except BudgetSpent as stop:
        rows, complete = stop.rows, False
    seconds = time.perf_counter() - start
    done_prompts = [prompts[i] for i in sorted(set(rows["prompt_id"]))]
    if name == "asr":
        result = summarize_attacks(model, done_prompts, rows, cfg, seconds)
    else:
        result = summarize_harmless(model, done_prompts, rows, kwargs["kl"], cfg, seconds)
    result.save(run.out, name)
    partial.unlink(missing_ok=True)
    facts = {"complete": complete, "n_prompts": int(result.summary["n"].iloc[0]), "of": len(prompts)}
    run.done(
        name, time.perf_counter() - start, **facts, summary=result.summary.drop(columns=["heads"]).to_dict("records")
    )
    return result


def markdown_summary(folder: Path) -> str:
    """The numbers of a (possibly partial) run folder as markdown: stages and times, heads, ASR, harmless cost."""
    record = json.loads((folder / "run.json").read_text())
    lines = ["| stage | seconds | finished (UTC) | load average (1, 5, 15 min) |", "|---|---|---|---|"]
    for name, stage in record["stages"].items():
        load = ", ".join(f"{x:.1f}" for x in stage.get("load_average", []))
        lines.append(f"| {name} | {stage['seconds']} | {stage.get('finished', '')} | {load} |")
    lines.append("")
    if (folder / "sahara.json").is_file():
        found = HeadScores.load(folder / "sahara.json")
        ships, ships_d = HeadScores.load(folder / "ships.json"), HeadScores.load(folder / "ships_dataset.json")
        top = lambda r: ", ".join(f"{x.label} ({x.score:.4g})" for x in r.top(5).itertuples())  # noqa: E731
        lines += [f"- Ships top 5 (mean KL, nats): {top(ships)}", f"- dataset Ships top 5 (degrees): {top(ships_d)}"]
        steps = "; ".join(f"step {s['step']}: {s['head']} ({s['score']:.4g} deg, {s['n_tried']} tried)"
                          for s in found.extras["steps"])  # fmt: skip
        lines += [f"- Sahara: {steps}", ""]
    lines.append(f"Conditions: {record.get('conditions')}")
    lines.append("")
    for name in ("asr", "harmless"):
        path = folder / f"{name}_summary.csv"
        if path.is_file():
            frame = pd.read_csv(path).fillna("")
            lines += [f"{name}:", "", "| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
            lines += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |"
                      for row in frame.itertuples(index=False)]  # fmt: skip
            lines.append("")
    if "target" in record:
        lines.append(f"Target: {record['target']}")
    for name, title in (("per_query_summary", "Per-query top-1 ablation"), ("dose_summary", "Dose-response")):
        path = folder / f"{name}.csv"
        if path.is_file():
            frame = pd.read_csv(path).fillna("")
            keep = [c for c in frame.columns if not c.endswith(("_lo", "_hi"))]
            lines += [f"{title}:", "", "| " + " | ".join(keep) + " |", "|" + "---|" * len(keep)]
            lines += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |"
                      for row in frame[keep].itertuples(index=False)]  # fmt: skip
            lines.append("")
    for key in ("per_query_agreement", "dose_smallest_k"):
        if key in record:
            lines.append(f"{key}: {record[key]}")
    if (folder / "judge_agreement.json").is_file():
        agreement = json.loads((folder / "judge_agreement.json").read_text())["agreement"]
        lines += [
            "",
            "Judge agreement with the hand labels:",
            "",
            "| judge | accuracy | kappa | n |",
            "|---|---|---|---|",
        ]
        lines += [f"| {k} | {v['accuracy']:.3f} | {v['kappa']:.3f} | {v['n']} |" for k, v in agreement.items()]
    return "\n".join(lines)


def run_all(a: RunOptions) -> None:
    """Every stage in order; stages whose files exist in a.out are skipped (resume)."""
    unknown = sorted(set(a.stages) - set(STAGES))
    if unknown:
        raise InterpError(f"Unknown stage(s) {unknown}; choose from: {', '.join(STAGES)}.")
    run = Run(a)
    start = time.perf_counter()
    model = load_model(a.model, device=a.device, dtype=a.dtype)
    run.done("load", time.perf_counter() - start, model=model.info())
    n_heads = model.n_layers * model.n_heads
    dose_ks = tuple(k for k in a.dose_ks if k <= n_heads)
    if "dose" in a.stages and dose_ks != tuple(a.dose_ks):
        # The default doses reach 64 heads; a smaller model keeps the doses it has (checked before any long work).
        if not dose_ks:
            raise InterpError(f"--dose-ks {list(a.dose_ks)}: every dose exceeds the model's {n_heads} heads.")
        print(f"[dose] doses above the model's {n_heads} heads dropped: now {list(dose_ks)}")
    advbench = load_prompts("advbench")
    scan_prompts, eval_prompts = advbench[: a.scan], advbench[a.scan : a.scan + a.eval]
    harmless = load_prompts("harmless", a.harmless)
    ships, ships_d, found = scan_stage(run, model, scan_prompts)
    conds = conditions(model, ships, found, a.seed)
    run.record["conditions"] = {k: [h.label for h in v] if v else [] for k, v in conds.items()}
    base = dict(
        template=a.template, ablation=a.ablation, eps=a.eps, min_tokens=a.min_tokens, batch_size=a.gen_batch_size
    )
    harmless_tokens = a.harmless_max_new_tokens or a.max_new_tokens
    harmless_cfg = AsrConfig(
        max_new_tokens=harmless_tokens, **{**base, "min_tokens": min(a.min_tokens, harmless_tokens)}
    )
    cfg = AsrConfig(max_new_tokens=a.max_new_tokens, **base)
    asr = cost = None
    for stage in a.stages:  # in the order given
        if stage == "asr":
            asr = eval_stage(run, model, "asr", eval_prompts, conds, cfg)
        elif stage == "harmless":
            kl = kl_stage(run, model, harmless, conds, harmless_cfg)
            cost = eval_stage(run, model, "harmless", harmless, conds, harmless_cfg, kl=kl)
        elif stage == "judge":
            judge_stage(run, model, cfg)
        elif stage == "per-query":
            pq = PerQueryConfig(
                shortlist=a.shortlist, ablation=a.ablation, eps=a.eps, template=a.template, batch_size=a.batch_size,
                seed=a.seed, screen=a.screen,  # type: ignore[arg-type]
            )  # fmt: skip
            per_query_stage(run, model, eval_prompts[: a.per_query], cfg, pq, a.agreement, prior=ships)
        elif stage == "dose":
            scans = (ships, ships_d, sahara_group(found))
            dose_stage(run, model, eval_prompts[: a.dose_eval], harmless[: a.dose_harmless], scans, dose_ks,
                       a.dose_seeds, cfg, harmless_cfg)  # fmt: skip
    if asr is not None:
        rates = {c: float(asr.summary.set_index("condition").loc[c, "asr"]) for c in conds}
        target = rates["sahara_group"] - max(rates["none"], rates["random_same_layers"])
        run.record["asr"] = rates
        run.record["target"] = {
            "sahara_minus_best_baseline": target,
            "met": bool(target >= 0.3),
            "asr_prompts": int(asr.summary["n"].iloc[0]),
        }
    if cost is not None:
        run.record["harmless"] = cost.summary.drop(columns=["heads"]).to_dict("records")
    run.done("total", time.perf_counter() - start)
