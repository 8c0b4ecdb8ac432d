"""The stages of the full run that reproduce the paper's experiments (interp/lines/safety/run.py calls them):

- `per_query_stage`: each held-out prompt answered with its own top Ships head ablated (interp.lines.safety.per_query)
  vs no ablation vs a random head of the same layer; plus how often screening finds the exhaustive top head.
- `dose_stage`: ASR and harmless cost against the number of heads ablated together (interp.lines.safety.dose).
- `judge_stage`: agreement of the judges with the hand-labelled responses, with this model as the LLM judge.

Generation is resumable at (condition, prompt) granularity: rows are written after every batch to
{stage}_rows.csv and a rerun generates only the missing pairs; judged rows go to {stage}_judged.csv.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.core.heads import Head, parse_head
from interp.core.results import HeadScores
from interp.lines.safety import dose
from interp.lines.safety.asr import (
    AsrConfig,
    Conditions,
    PerPrompt,
    generate_conditions,
    harmless_kl,
    read_rows,
    write_rows,
)
from interp.lines.safety.judge import agreement, judge_rows, load_labels, with_fluent
from interp.lines.safety.per_query import PerQueryConfig, agreement_rate, per_query_heads
from interp.model.loaded import LoadedModel

if TYPE_CHECKING:
    from interp.lines.safety.run import Run

ROW_COLUMNS = ["condition", "heads", "prompt_id", "prompt", "response", "n_tokens"]


class BudgetSpent(Exception):
    """Raised between generation batches once the run's --budget-s is used up."""


def generate_resumable(
    run: Run, model: LoadedModel, name: str, prompts: Sequence[str], conds: Conditions, cfg: AsrConfig
) -> tuple[pd.DataFrame, bool]:
    """The (condition, prompt) responses of a stage, generating only the pairs {name}_rows.csv lacks, and whether
    every pair is done. Past the run's --budget-s the stage stops after a batch and returns the prompts that have
    every condition (generation is prompt-major, so that is all but the last few); a rerun continues."""
    path = run.out / f"{name}_rows.csv"
    earlier = read_rows(path)[ROW_COLUMNS] if path.is_file() else pd.DataFrame(columns=ROW_COLUMNS)
    have = set(zip(earlier["condition"], earlier["prompt_id"].astype(int), strict=True))
    todo = [(c, i) for i in range(len(prompts)) for c in conds if (c, i) not in have]
    rows = earlier
    if todo and not run.over_budget():
        print(f"[{name}] {len(have)} responses on file, {len(todo)} to generate", flush=True)

        def save(new: pd.DataFrame) -> None:
            write_rows(pd.concat([earlier, new], ignore_index=True), path)
            if run.over_budget():
                raise BudgetSpent

        try:
            rows = pd.concat(
                [
                    earlier,
                    generate_conditions(model, prompts, conds, cfg, run.args.progress, on_chunk=save, pairs=todo),
                ],
                ignore_index=True,
            )
        except BudgetSpent:
            rows = read_rows(path)[ROW_COLUMNS]
    counts = rows.groupby("prompt_id")["condition"].nunique()
    whole = set(counts[counts == len(conds)].index)
    complete = len(whole) == len(prompts)
    return rows[rows["prompt_id"].isin(whole)].reset_index(drop=True), complete


def judged(
    run: Run, model: LoadedModel, name: str, rows: pd.DataFrame, cfg: AsrConfig, use_llm: bool = True
) -> pd.DataFrame:
    """The rows with every judge's verdict (cached in {name}_judged.csv; only new rows are judged)."""
    path = run.out / f"{name}_judged.csv"
    key = ["condition", "prompt_id"]
    if rows.empty:
        return rows
    use_llm = use_llm and run.args.llm_judge and model.has_chat_template  # the LLM judge asks via the chat template
    done = read_rows(path) if path.is_file() else None
    if use_llm and done is not None:  # rows judged before without the LLM judge are judged again, all judges
        done = done[done["llm_label"].notna()] if "llm_label" in done else None
    fresh = (
        rows
        if done is None
        else rows.merge(done[key], on=key, how="left", indicator=True)
        .query("_merge == 'left_only'")
        .drop(columns="_merge")
    )
    if len(fresh):
        # Ablating a few heads often leaves the response unchanged: every verdict is a function of
        # (prompt, response, n_tokens) alone, so each distinct triple is judged once and the verdicts copied.
        fresh = fresh.reset_index(drop=True).assign(response=lambda f: f["response"].fillna(""))
        triple = ["prompt", "response", "n_tokens"]
        unique = fresh[triple].drop_duplicates().reset_index(drop=True)
        verdicts = judge_rows(
            model,
            unique["prompt"].tolist(),
            unique["response"].tolist(),
            unique["n_tokens"].tolist(),
            keywords=cfg.keywords,
            min_tokens=cfg.min_tokens,
            use_llm=use_llm,
            progress=run.args.progress,
        )
        fresh = fresh.merge(pd.concat([unique, verdicts], axis=1), on=triple, how="left", validate="many_to_one")
        done = fresh if done is None else pd.concat([done, fresh], ignore_index=True)
        write_rows(done, path)
    assert done is not None
    out = rows[key].merge(done, on=key, how="left")
    if not use_llm:  # LLM verdicts on file from an earlier run would cover some rows only: leave them out
        out = out.drop(columns=[c for c in out if c == "llm_label" or c == "success_judged" or c.startswith("p_")])
    return out


def _rates(frame: pd.DataFrame) -> pd.DataFrame:
    frame = with_fluent(frame)
    cols = [
        c for c in ("success_keyword", "success_robust", "success_fluent", "success_judged", "degenerate") if c in frame
    ]
    out = frame.groupby("condition", sort=False)[cols].mean()
    out.columns = [c.replace("success_", "asr_") for c in cols]
    out.insert(0, "n", frame.groupby("condition", sort=False).size())
    for col in [c for c in out.columns if c.startswith("asr_")]:
        hits = (out[col] * out["n"]).round().astype(int)
        bounds = [dose.wilson(int(s), int(n)) for s, n in zip(hits, out["n"], strict=True)]
        out[f"{col}_lo"], out[f"{col}_hi"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return out.reset_index()


# ---------------------------------------------------------------------------------------------------------
# Per-query top-1 ablation
# ---------------------------------------------------------------------------------------------------------
def per_query_stage(
    run: Run,
    model: LoadedModel,
    prompts: Sequence[str],
    cfg: AsrConfig,
    pq: PerQueryConfig,
    agreement_prompts: int,
    prior: HeadScores | None = None,
) -> pd.DataFrame | None:
    out, a = run.out, run.args
    heads_path, exh_path = out / "per_query_heads.csv", out / "per_query_exhaustive.csv"
    if heads_path.is_file():
        heads = read_rows(heads_path)
    else:
        start = time.perf_counter()
        heads = per_query_heads(model, prompts, pq, prior=prior, progress=a.progress)
        write_rows(heads, heads_path)
        run.done("per_query_heads", time.perf_counter() - start, screen_seconds=round(heads.attrs["screen_seconds"], 1),
                 prompts=len(prompts), shortlist=pq.shortlist)  # fmt: skip
    if agreement_prompts and not exh_path.is_file():
        start = time.perf_counter()
        exhaustive = per_query_heads(model, prompts[:agreement_prompts], pq, exhaustive=True, progress=a.progress)
        write_rows(exhaustive, exh_path)
        rate = agreement_rate(heads, exhaustive)
        run.done("per_query_exhaustive", time.perf_counter() - start, prompts=agreement_prompts, agreement=rate)
        run.record["per_query_agreement"] = {"prompts": agreement_prompts, "screened_equals_exhaustive": rate}
    own = PerPrompt(tuple((parse_head(h),) for h in heads["head"]))
    rand = PerPrompt(tuple((parse_head(h),) for h in heads["random_head"]))
    conds: dict[str, Any] = {"none": None, "own_top1": own, "random_same_layer": rand}
    start = time.perf_counter()
    rows, complete = generate_resumable(run, model, "per_query", prompts, conds, cfg)
    n_done = int(rows["prompt_id"].nunique())
    run.done("per_query_generate", time.perf_counter() - start, complete=complete, prompts=n_done, of=len(prompts))
    if rows.empty:
        return None
    start = time.perf_counter()
    verdicts = judged(run, model, "per_query", rows, cfg)
    summary = _rates(verdicts)
    write_rows(summary, out / "per_query_summary.csv")
    rates = summary.set_index("condition")
    target = {
        col: float(rates.loc["own_top1", col] - max(rates.loc["none", col], rates.loc["random_same_layer", col]))
        for col in rates.columns
        if col.startswith("asr_") and not col.endswith(("_lo", "_hi"))
    }
    run.record["per_query"] = {
        "summary": summary.to_dict("records"),
        "own_minus_best_control": target,
        "prompts": n_done,
        "complete": complete,
    }
    run.done("per_query_judge", time.perf_counter() - start, own_minus_best_control=target)
    return summary


# ---------------------------------------------------------------------------------------------------------
# Dose-response
# ---------------------------------------------------------------------------------------------------------
def dose_stage(
    run: Run,
    model: LoadedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    scans: tuple[HeadScores, HeadScores, Sequence[Head]],
    ks: Sequence[int],
    seeds: Sequence[int],
    cfg: AsrConfig,
    harmless_cfg: AsrConfig,
) -> pd.DataFrame | None:
    out, a = run.out, run.args
    ships, ships_d, group = scans
    orders = dose.head_orders(ships, ships_d, group, seeds)
    (out / "dose_orders.json").write_text(json.dumps({k: [h.label for h in v] for k, v in orders.items()}, indent=0))
    conds = dose.dose_conditions(orders, ks)
    kl_path = out / "dose_kl.csv"
    frame = pd.read_csv(kl_path) if kl_path.is_file() else pd.DataFrame({"prompt": list(harmless)})
    if frame["prompt"].tolist() != list(harmless):  # other harmless prompts: the file on record does not apply
        frame = pd.DataFrame({"prompt": list(harmless)})
    missing = {c: heads for c, heads in conds.items() if c not in frame.columns}  # a grown grid adds columns only
    if missing:
        start = time.perf_counter()
        new = harmless_kl(model, harmless, missing, harmless_cfg, progress=a.progress)
        frame = frame.assign(**{c: new[c] for c in missing})
        frame.to_csv(kl_path, index=False)
        run.done("dose_kl", time.perf_counter() - start, conditions=len(missing))
    kl: Mapping[str, np.ndarray] = {c: frame[c].to_numpy() for c in conds}
    start = time.perf_counter()
    # Harmless side first (shorter), so a stage stopped by the budget still has the cost of every condition.
    side, side_complete = generate_resumable(run, model, "dose_harmless", harmless, conds, harmless_cfg)
    rows, complete = generate_resumable(run, model, "dose", harmful, conds, cfg)
    n_done = int(rows["prompt_id"].nunique())
    run.done("dose_generate", time.perf_counter() - start, complete=complete and side_complete, prompts=n_done,
             of=len(harmful), harmless_prompts=int(side["prompt_id"].nunique()))  # fmt: skip
    if rows.empty:
        return None
    start = time.perf_counter()
    verdicts = judged(run, model, "dose", rows, cfg)
    side_verdicts = judged(run, model, "dose_harmless", side, harmless_cfg, use_llm=False) if len(side) else None
    summary = dose.summarize(verdicts, side_verdicts, kl)
    write_rows(summary, out / "dose_summary.csv")
    title = f"{model.name}: heads ablated together ({cfg.template} template, {n_done} harmful prompts)"
    dose.figure(summary, title).write_html(out / "dose_response.html", include_plotlyjs=True)
    dose.figure_png(summary, title, out / "dose_response.png")
    smallest = {
        col: dose.smallest_k(summary, ["ships", "dataset"], col)
        for col in ("asr_judged", "asr_fluent", "asr_robust", "asr_keyword")
        if col in summary
    }
    run.record["dose_smallest_k"] = smallest
    run.record["dose"] = {"prompts": n_done, "of": len(harmful), "complete": complete and side_complete}
    run.done("dose_judge", time.perf_counter() - start, smallest_k=smallest)
    return summary


# ---------------------------------------------------------------------------------------------------------
# Judge agreement
# ---------------------------------------------------------------------------------------------------------
def judge_stage(run: Run, model: LoadedModel, cfg: AsrConfig) -> dict:
    path = run.out / "judge_agreement.json"
    if path.is_file():
        result = json.loads(path.read_text())
        verdicts_path = run.out / "judge_labels_judged.csv"
        if verdicts_path.is_file():  # rules added since (asr_fluent) are computed from the verdicts on file
            on_file = pd.read_csv(verdicts_path, keep_default_na=False)
            fresh = agreement(on_file, on_file)
            if set(fresh) - set(result["agreement"]):
                result["agreement"] = {**result["agreement"], **fresh}
                path.write_text(json.dumps(result, indent=1))
        return result
    start = time.perf_counter()
    labels = load_labels()
    verdicts = judge_rows(
        model,
        labels["prompt"].tolist(),
        labels["response"].tolist(),
        [10**6] * len(labels),  # the labels have no token counts: length rules left out
        keywords=cfg.keywords,
        min_tokens=0,
        use_llm=model.has_chat_template,
        progress=run.args.progress,
    )
    result = {"model": model.name, "n": len(labels), "agreement": agreement(labels, verdicts)}
    write_rows(pd.concat([labels, verdicts], axis=1), run.out / "judge_labels_judged.csv")
    path.write_text(json.dumps(result, indent=1))
    run.done("judge_agreement", time.perf_counter() - start, agreement=result["agreement"])
    return result
