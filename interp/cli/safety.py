"""Safety-heads commands: `interp safety sahara` (greedy group search), `interp safety asr` (attack success
rate) and `interp safety run` (the recorded full run). `interp sahara` / `interp asr` remain as aliases.

interp scan ships --model testbed --prompts advbench --limit 8 --set ablation=query --out ships.json
interp scan ships-dataset --model testbed --prompts advbench --limit 8 --set rank=1
interp safety sahara --model testbed --prompts advbench --limit 8 --steps 3 --out sahara.json
interp safety asr --model testbed --heads L3H4,L5H1 --prompts advbench --offset 8 --limit 100 --random-control
"""

from __future__ import annotations

from pathlib import Path

import typer

from interp.cli import (
    MODEL_HELP,
    checked,
    console,
    device_option,
    dtype_option,
    friendly_errors,
    print_table,
    print_top,
    writable_file,
    writable_folder,
    wrote,
)
from interp.core.errors import InterpError, UsageError

safety_app = typer.Typer(help="Safety heads: Sahara group search, attack success rate, the recorded testbed run.")


def register(app: typer.Typer) -> None:
    for fn in (sahara, asr):
        safety_app.command()(friendly_errors(fn))
        app.command(hidden=True)(friendly_errors(fn))  # the older top-level spellings
    safety_app.command(name="run")(friendly_errors(run))
    app.add_typer(safety_app, name="safety")


def run(
    model: str = typer.Option("testbed", "--model", "-m", help=MODEL_HELP),
    device: str = device_option(),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 (~2x faster on CPUs with bf16) | float16."),
    out: Path = checked(
        typer.Option(Path("docs/safety_heads"), "--out", "-o", help="Folder for every stage's files."),
        writable_folder(),
    ),
    scan: int = typer.Option(8, help="AdvBench prompts for Ships / Sahara."),
    eval_: int = typer.Option(100, "--eval", help="Held-out AdvBench prompts for ASR."),
    harmless: int = typer.Option(100, help="Harmless prompts for the harmless-side cost."),
    template: str = typer.Option("auto", help="auto (chat template if any) | chat | query | paper | raw."),
    ablation: str = typer.Option("query", help="query (queries x eps: uniform attention) | values (output x eps)."),
    eps: float = typer.Option(1e-5, help="Query (or output) factor; 1e-5 as the released code."),
    steps: int = typer.Option(3, help="Sahara steps (heads in the group)."),
    candidates: int | None = typer.Option(
        None, help="Sahara steps after the first try only the top-K heads (default: every head)."
    ),
    max_new_tokens: int = typer.Option(64),
    harmless_max_new_tokens: int | None = typer.Option(None, help="Default: --max-new-tokens."),
    min_tokens: int = typer.Option(32),
    batch_size: int = typer.Option(32, help="Rows per sweep pass."),
    gen_batch_size: int = typer.Option(32, help="Rows (conditions x prompts) per generation batch."),
    seed: int = typer.Option(0, help="Seed of the random control heads."),
    budget_s: float | None = typer.Option(
        None, help="Wall-clock budget: generation stages stop at the next batch past it (rerun to resume)."
    ),
    summary: bool = typer.Option(False, "--summary", help="Only print the markdown summary of --out and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    stages: str = typer.Option(
        "asr,harmless,per-query,dose,judge", help="Stages after the scan (comma-separated; the scan always runs)."
    ),
    per_query: int = typer.Option(100, help="Per-query experiment: held-out prompts (the first of the eval set)."),
    shortlist: int = typer.Option(8, help="Per-query: heads verified exactly per prompt after screening."),
    screen: str = typer.Option("logprob", help="Per-query screening: logprob | kl (attribution) | prior (scan's top)."),
    agreement: int = typer.Option(10, help="Per-query: prompts whose screened top head is checked exhaustively."),
    dose_eval: int = typer.Option(50, help="Dose-response: harmful prompts per point."),
    dose_harmless: int = typer.Option(25, help="Dose-response: harmless prompts per point."),
    dose_ks: str = typer.Option("1,2,4,8,16,32,64", help="Dose-response: numbers of heads ablated together."),
    dose_seeds: str = typer.Option("0,1", help="Dose-response: seeds of the random head orders."),
    llm_judge: bool = typer.Option(
        True,
        "--llm-judge/--no-llm-judge",
        help="Per-query and dose stages: also ask the model itself whether each response complies (the slowest judge: "
        "a forward pass over rubric + prompt + response each); without it: keyword, robust keyword and fluency.",
    ),
) -> None:
    """The full safety-heads run (resumable): Ships + Sahara on AdvBench, ASR on held-out prompts, harmless cost,
    the per-query top-1 experiment, the dose-response curves and the judges' agreement with hand labels."""
    from interp.lines.safety.run import RunOptions, markdown_summary, run_all

    def ints(name: str, text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise InterpError(f"--{name} takes comma-separated integers, got {text!r}.") from None
        if not values:
            raise InterpError(f"--{name} needs at least one value.")
        return values

    if summary:
        console.print(markdown_summary(out))
        return
    run_all(
        RunOptions(
            model=model, device=device, dtype=dtype, out=out, scan=scan, eval=eval_, harmless=harmless,
            template=template, ablation=ablation, eps=eps, steps=steps, candidates=candidates,
            max_new_tokens=max_new_tokens,
            harmless_max_new_tokens=harmless_max_new_tokens, min_tokens=min_tokens, batch_size=batch_size,
            gen_batch_size=gen_batch_size, seed=seed, budget_s=budget_s, progress=progress,
            stages=tuple(v.strip() for v in stages.split(",") if v.strip()), per_query=per_query,
            shortlist=shortlist, screen=screen, agreement=agreement, dose_eval=dose_eval, dose_harmless=dose_harmless,
            dose_ks=ints("dose-ks", dose_ks), dose_seeds=ints("dose-seeds", dose_seeds),
            llm_judge=llm_judge,
        )
    )  # fmt: skip


def sahara(
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    prompts: str = typer.Option("advbench", "--prompts", "-p", help="Harmful prompts (file or built-in set)."),
    limit: int | None = typer.Option(8, help="Use only the first N prompts."),
    steps: int = typer.Option(3, help="Heads in the group (1-5)."),
    candidates: int | None = typer.Option(None, help="Steps after the first try only the top-K heads of step 1."),
    ablation: str = typer.Option("query", help="query (queries x eps: uniform attention) | values (output x eps)."),
    eps: float = typer.Option(1e-5, help="Query (or output) factor; 1e-5 as the released code."),
    rank: int = typer.Option(1, help="Dimension of the singular subspaces compared."),
    template: str = typer.Option("auto", help="auto | chat | query | paper | raw."),
    batch_size: int = typer.Option(32, help="Rows per forward pass."),
    out: Path | None = checked(
        typer.Option(None, "--out", "-o", help="Write the HeadScores JSON here."), writable_file(".json")
    ),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Greedy search for a group of safety heads (Sahara) by dataset-level Ships."""
    from interp.core.prompts import load_prompts
    from interp.lines.safety.metrics import SaharaConfig
    from interp.lines.safety.metrics import sahara as run_sahara
    from interp.model.loading import load_model

    config = SaharaConfig(
        ablation=ablation,  # type: ignore[arg-type]
        eps=eps,
        rank=rank,
        template=template,  # type: ignore[arg-type]
        batch_size=batch_size,
        steps=steps,
        candidates=candidates,
    )
    prompt_list = load_prompts(prompts, limit)
    loaded = load_model(model, device, dtype)
    result = run_sahara(loaded, prompt_list, config, progress)
    if out is not None:  # saved before anything is printed
        result.save(out)
    rows = [[s["step"], s["head"], f"{s['score']:.4g}", s["n_tried"], s["seconds"]] for s in result.extras["steps"]]
    print_table(
        f"Sahara group on {loaded.name}: {', '.join(result.extras['group'])}",
        ["step", "head", "angle (deg)", "heads tried", "seconds"],
        rows,
    )
    print_top(result, 5)
    if out is not None:
        wrote(out)


def asr(
    heads: str = typer.Option(..., "--heads", help="Heads to ablate together, e.g. L3H4,L5H1."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    prompts: str = typer.Option("advbench", "--prompts", "-p", help="Harmful prompts (file or built-in set)."),
    offset: int = typer.Option(0, help="Skip the first N prompts (e.g. those used to find the heads)."),
    limit: int = typer.Option(100, help="Evaluate N prompts."),
    harmless: str | None = typer.Option(
        "harmless", help="Harmless prompts for the harmless-side cost ('none' to skip)."
    ),
    harmless_limit: int = typer.Option(100, help="Use at most N harmless prompts."),
    random_control: bool = typer.Option(
        False, "--random-control/--no-random-control", help="Also ablate as many random heads from the same layers."
    ),
    seed: int = typer.Option(0, help="Seed of the random control."),
    ablation: str = typer.Option("query", help="query | values."),
    eps: float = typer.Option(1e-5, help="Query (or output) factor; 1e-5 as the released code."),
    keywords: str | None = typer.Option(None, help="Comma-separated refusal keywords (default: the paper's list)."),
    min_tokens: int = typer.Option(32, help="Shorter responses never count as successful attacks."),
    max_new_tokens: int = typer.Option(64),
    template: str = typer.Option("auto", help="auto | chat | query | paper | raw."),
    batch_size: int = typer.Option(16, help="Rows per generation batch."),
    out_dir: Path | None = checked(
        typer.Option(None, "--out-dir", help="Write asr_*.csv/json (and harmless_*) here."), writable_folder()
    ),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Attack success rate with and without ablating HEADS (greedy generation), plus the harmless-side cost."""
    from interp.core.prompts import load_prompts
    from interp.lines.safety.asr import AsrConfig, attack_success, harmless_cost
    from interp.lines.safety.asr import random_control as pick_random
    from interp.model.loading import load_model

    extra = {"keywords": tuple(k.strip() for k in keywords.split(",") if k.strip())} if keywords else {}
    config = AsrConfig(
        min_tokens=min_tokens,
        max_new_tokens=max_new_tokens,
        template=template,  # type: ignore[arg-type]
        ablation=ablation,  # type: ignore[arg-type]
        eps=eps,
        batch_size=batch_size,
        **extra,
    )
    if offset < 0 or limit < 1:
        raise UsageError(f"--offset must be >= 0 and --limit >= 1, got {offset} and {limit}.")
    harmful = load_prompts(prompts)[offset : offset + limit]
    if not harmful:
        raise UsageError(f"No prompts left after --offset {offset}.")
    loaded = load_model(model, device, dtype)
    group = list(loaded.parse_heads(heads))
    conditions: dict[str, list | None] = {"none": None, "heads": group}
    if random_control:
        conditions["random_same_layers"] = pick_random(loaded, group, seed)
    harmless_list = load_prompts(harmless, harmless_limit) if harmless and harmless.lower() != "none" else None
    result = attack_success(loaded, harmful, conditions, config, progress)
    if out_dir is not None:  # saved before anything is printed
        result.save(out_dir, "asr")
    _print_summary(f"ASR on {len(harmful)} prompts ({loaded.name})", result.summary)
    if harmless_list is not None:
        cost = harmless_cost(loaded, harmless_list, conditions, config, progress)
        if out_dir is not None:
            cost.save(out_dir, "harmless")
        _print_summary(f"Harmless-side cost ({loaded.name})", cost.summary)
    if out_dir is not None:
        wrote(f"results to {out_dir}")


def _print_summary(title: str, summary: object) -> None:
    import pandas as pd

    assert isinstance(summary, pd.DataFrame)
    fmt = [[f"{v:.3g}" if isinstance(v, float) else v for v in row] for row in summary.itertuples(index=False)]
    print_table(title, list(summary.columns), fmt)
