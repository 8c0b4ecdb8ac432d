"""The head explorer's sections: Streamlit widgets only; each computation calls interp or interp.app.support."""

from __future__ import annotations

import contextlib
import html
import math
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import interp
from interp.app import support as sup
from interp.core.errors import InterpError
from interp.core.prompts import TEMPLATES, builtin_sets
from interp.core.registry import check_applicable
from interp.engine import compare as effects
from interp.engine.interventions import KINDS

QUICK_LOOK_MAX_PROMPTS = 8
EMPTY = "(no text: the model ended its answer at once)"
KIND_HELP = {
    "zero": "zero — ablate: the head's output is set to 0",
    "mean": "mean — ablate: the head's output is its mean over reference prompts",
    "uniform": "uniform — ablate: undifferentiated (uniform causal) attention",
    "resample": "resample — ablate: the head's output from another prompt",
    "scale": "scale — reinforce (alpha > 1) or dampen (alpha < 1) the head's output",
}


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------
def style() -> None:
    st.markdown(
        "<style>.block-container{padding-top:2.2rem;padding-bottom:2rem}"
        "div[data-testid='stMetricValue']{font-size:1.5rem}</style>",
        unsafe_allow_html=True,
    )


@contextlib.contextmanager
def friendly() -> Iterator[None]:
    """Show bad input as a clear message in the page (never a traceback); unexpected errors get details folded away."""
    try:
        yield
    except InterpError as exc:
        st.error(str(exc), icon=":material/error:")
    except Exception as exc:
        st.error(f"Unexpected error: {type(exc).__name__}: {exc}", icon=":material/bug_report:")
        with st.expander("Details for a bug report"):
            st.code(traceback.format_exc())


@dataclass(frozen=True)
class Prompts:
    prompts: list[str]
    template: str
    cli_arg: str  # what `interp scan --prompts` takes: a built-in set name, or a file the user saves
    cli_limit: int | None
    text: str  # the prompts as a file (one per line), for download


def runs() -> dict[str, sup.Run]:
    return st.session_state.setdefault("runs", {})


def add_run(run: sup.Run, show: bool = True) -> str:
    state = st.session_state
    state.run_count = state.get("run_count", 0) + 1
    label = f"#{state.run_count} {run.origin}: {sup.describe_result(run.result)}"
    if runs():  # Compare starts on the two newest results
        st.session_state.cmp_a, st.session_state.cmp_b = list(runs())[-1], label
    runs()[label] = run
    if show:
        st.session_state.shown = label
    return label


def current_run() -> sup.Run | None:
    label = st.session_state.get("shown")
    return runs().get(label) if label else None


def current_head(model: interp.LoadedModel) -> interp.Head:
    label = st.session_state.get("head")
    try:
        return model.parse_heads(label)[0] if label else interp.Head(0, 0)
    except InterpError:  # a head from another model's result
        return interp.Head(0, 0)


# ---------------------------------------------------------------------------------------------------------
# Sidebar: prompts; header: model facts; the one-pass quick look
# ---------------------------------------------------------------------------------------------------------
def sidebar_prompts() -> Prompts | None:
    side = st.sidebar
    side.header("Prompts")
    source = side.radio("Source", ["Built-in set", "Paste", "Upload"], horizontal=True, key="prompt_source")
    with friendly():
        if source == "Built-in set":
            sets = list(builtin_sets())
            name = side.selectbox("Set (data/prompts/)", sets, index=sets.index("short"), key="prompt_set")
            total = len(interp.load_prompts(name))
            limit = int(side.number_input(f"Use the first N of {total}", 1, total, min(2, total), key="prompt_limit"))
            prompts = interp.load_prompts(name, limit)
            cli_arg, cli_limit = name, (limit if limit < total else None)
        elif source == "Paste":
            default = "\n".join(interp.load_prompts("short", 2))
            text = side.text_area("One prompt per line", default, height=140, key="prompt_text")
            prompts, cli_arg, cli_limit = sup.prompts_from_text(text), "prompts.txt", None
        else:
            upload = side.file_uploader("Prompts file (.txt or .jsonl)", type=["txt", "jsonl"], key="prompt_file")
            if upload is None:
                side.info("Upload a .txt file (one prompt per line) or .jsonl (a prompt field per line).")
                return None
            prompts, cli_arg, cli_limit = sup.prompts_from_upload(upload.getvalue(), upload.name), upload.name, None
        template = side.selectbox(
            "Template", TEMPLATES, key="template", help="auto = the chat template when the tokenizer has one, else raw"
        )
        side.caption(f"{len(prompts)} prompt(s) in use.")
        with side.expander("Show prompts"):
            st.markdown("\n".join(f"{i}. {p}" for i, p in enumerate(prompts)))
        return Prompts(prompts, template, cli_arg, cli_limit, "\n".join(prompts) + "\n")
    return None


def model_facts(model: interp.LoadedModel) -> None:
    info = model.info()
    cols = st.columns(6)
    cols[0].metric("Layers", info["n_layers"])
    cols[1].metric("Heads / layer", info["n_heads"], help=f"{info['n_kv_heads']} key/value heads")
    cols[2].metric("Parameters", f"{info['n_params'] / 1e6:.1f}M")
    cols[3].metric("d_model", info["d_model"])
    cols[4].metric("Context", info["n_ctx"])
    cols[5].metric("Chat template", "yes" if info["chat_template"] else "no")
    st.caption(f"**{info['name']}** · {info['architecture']} · source: {info['source']}")


@st.cache_resource(
    show_spinner="Quick look: attention entropy of every head (one forward pass per prompt)…", max_entries=16
)
def _quick_look(_model: interp.LoadedModel, spec: str, prompts: tuple[str, ...], template: str) -> interp.HeadScores:
    return sup.attention_entropy(_model, prompts, template)


def quick_look(model: interp.LoadedModel, spec: str, prompts: list[str], template: str) -> interp.HeadScores | None:
    """The one-pass overview shown before any scan; also the source of each head's entropy class."""
    used = tuple(prompts[:QUICK_LOOK_MAX_PROMPTS])
    with friendly():
        result = _quick_look(model, spec, used, template)
        seen = st.session_state.setdefault("quick_seen", set())
        if (spec, used, template) not in seen:
            seen.add((spec, used, template))
            shown = current_run()
            # Show it unless the user is looking at a scan of this same model; it replaces the quick look of
            # this model on other prompts.
            show = shown is None or shown.result.model != model.name or shown.origin == "quick look"
            for label, old in list(runs().items()):
                if old.origin == "quick look" and old.result.model == result.model:
                    del runs()[label]
            add_run(sup.Run(result, used, None, "quick look"), show=show)
        return result
    return None


# ---------------------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------------------
def field_widget(spec: sup.FieldSpec, key: str, default: Any) -> Any:
    label, help_text = spec.name, spec.help or None
    if spec.kind == "choice":
        return st.selectbox(label, spec.choices, index=spec.choices.index(default), key=key, help=help_text)
    if spec.kind == "bool":
        return st.checkbox(label, value=bool(default), key=key, help=help_text)
    if spec.kind == "int":
        return int(st.number_input(label, value=int(default), step=1, key=key, help=help_text))
    if spec.kind == "float":
        step = 10 ** math.floor(math.log10(abs(default))) / 10 if default else 0.1
        return float(st.number_input(label, value=float(default), step=step, format="%g", key=key, help=help_text))
    hint = " (empty = none)" if spec.optional else ""
    return st.text_input(label + hint, value=spec.text_default, key=key, help=help_text)


def image_dir(uploads: list[Any]) -> str:
    """Save uploaded images into this session's folder; vision analyzers get its path (see docs/app.md)."""
    folder = Path(st.session_state.setdefault("image_dir", tempfile.mkdtemp(prefix="interp-images-")))
    for old in folder.iterdir():
        old.unlink()
    for upload in uploads:
        (folder / Path(upload.name).name).write_bytes(upload.getvalue())
    return str(folder)


def scan_form(model: interp.LoadedModel, spec: str, prompts: Prompts) -> None:
    metrics = {m.name: m for m in interp.list_metrics()}
    names = list(metrics)
    name = st.selectbox(
        "Analyzer",
        names,
        index=names.index("ablation-kl") if "ablation-kl" in names else 0,
        key="metric",
        format_func=lambda n: f"{n}  ·  {metrics[n].modality}",
    )
    info = metrics[name]
    st.caption(info.description)
    blocked = False
    images: list[Any] = []
    if info.modality == "vision":
        try:
            check_applicable(info, model)
        except InterpError as exc:
            st.error(str(exc), icon=":material/image:")
            blocked = True
        else:
            images = st.file_uploader(
                "Images (one per prompt)", type=["png", "jpg", "jpeg", "bmp", "webp"], accept_multiple_files=True
            )
    fields = sup.config_fields(info.config_cls)
    image_fields = [f.name for f in fields if "image" in f.name] if info.modality == "vision" else []
    with st.form(f"scan-{name}", border=True):
        values = {}
        for field in fields:
            if field.name in image_fields:
                st.caption(f"{field.name}: the uploaded images")
                continue
            key, default = f"opt-{name}-{field.name}", field.default
            if field.name == "template" and field.kind == "choice" and prompts.template in field.choices:
                default = prompts.template
                if st.session_state.get(f"_{key}") != default:  # the sidebar's template changed: follow it
                    st.session_state[f"_{key}"] = st.session_state[key] = default
            values[field.name] = field_widget(field, key, default)
        submitted = st.form_submit_button("▶ Run scan", type="primary", disabled=blocked, width="stretch")
    st.caption(
        f"{len(prompts.prompts)} prompt(s) × {model.n_layers * model.n_heads} heads; "
        "use more prompts (sidebar) for a fuller scan."
    )
    if submitted:
        with friendly():
            if image_fields:
                if not images:
                    raise InterpError(f'"{name}" needs images: upload at least one above.')
                values.update({f: image_dir(images) for f in image_fields})
            config = info.make_config(values)
            bar = st.progress(0.0, text=f"{name}: starting…")

            def progress(done: int, total: int) -> None:
                bar.progress(done / max(total, 1), text=f"{name}: {done}/{total}")

            result = interp.run_metric(name, model, prompts.prompts, config=config, progress=progress)
            bar.empty()
            command = sup.scan_command(name, spec, prompts.cli_arg, sup.changed_options(config), prompts.cli_limit)
            add_run(sup.Run(result, tuple(prompts.prompts), command, "scan"))
            st.success(f"Scanned {model.n_layers * model.n_heads} heads on {len(prompts.prompts)} prompt(s).")


def load_saved() -> None:
    upload = st.file_uploader("Load a saved result (HeadScores JSON)", type=["json"], key="result_file")
    if upload is None:
        return
    seen = st.session_state.setdefault("loaded_files", set())
    ident = (upload.name, upload.size, getattr(upload, "file_id", ""))
    if ident in seen:
        return
    with friendly():
        result = sup.result_from_upload(upload.getvalue(), upload.name)
        seen.add(ident)
        add_run(sup.Run(result, None, None, "file"))


def pick_head_from_chart(event: Any) -> None:
    """A click on a heatmap cell (x = head, y = layer) selects that head, once per new click."""
    points = event.get("selection", {}).get("points", []) if event else []
    if not points:
        return
    label = f"L{int(points[0]['y'])}H{int(points[0]['x'])}"
    if st.session_state.get("_clicked") != label:
        st.session_state._clicked = label
        st.session_state.head = label


def scores_tab(model: interp.LoadedModel, spec: str, prompts: Prompts) -> None:
    left, right = st.columns([1, 2], gap="large")
    with left:
        st.subheader("Run an analyzer")
        scan_form(model, spec, prompts)
        load_saved()
    with right:
        if not runs():
            st.info("No result yet: run an analyzer on the left, or load a saved result.")
            return
        labels = list(runs())
        if st.session_state.get("shown") not in labels:
            st.session_state.shown = labels[-1]
        st.selectbox("Result shown", labels, key="shown")
        run = current_run()
        assert run is not None
        result = run.result
        if run.origin == "quick look":
            st.caption(
                "Quick look (one forward pass per prompt): normalized attention entropy, 0 = each query attends to one "
                "token, 1 = uniform attention. Run an analyzer on the left for intervention-based scores."
            )
        event = st.plotly_chart(
            sup.clickable_heatmap(result), key="heatmap", on_select="rerun", selection_mode="points"
        )
        if result.scores.shape != (model.n_layers, model.n_heads):
            st.warning(f"This result is for {result.model} ({result.n_layers}x{result.n_heads}), not the loaded model.")
            return
        pick_head_from_chart(event)
        labels_all = [h.label for h in model.heads()]
        if st.session_state.get("head") not in labels_all:
            st.session_state.head = next((h.label for h in result.top_heads(1)), labels_all[0])
        st.selectbox(
            "Selected head (or click a cell)", labels_all, key="head", help="Opens in Head detail and Intervene"
        )
        top = result.top(10)
        st.markdown("**Top heads**")
        st.dataframe(
            top, hide_index=True, width="stretch", column_config={"score": st.column_config.NumberColumn(format="%.5g")}
        )
        if result.metric == sup.QUICK_LOOK:  # entropy: which heads are collapsed or overloaded
            line, flagged = sup.entropy_classes(result)
            st.markdown(f"**Entropy classes** · {line}")
            st.dataframe(
                flagged,
                hide_index=True,
                width="stretch",
                key="entropy_classes",
                column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("normalized", "raw")},
            )


# ---------------------------------------------------------------------------------------------------------
# Head detail
# ---------------------------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Attention pattern…", max_entries=64)
def _pattern(_model: interp.LoadedModel, spec: str, prompt: str, label: str, template: str) -> tuple[np.ndarray, list]:
    return sup.attention_pattern(_model, prompt, interp.parse_head(label), template)


def detail_tab(model: interp.LoadedModel, spec: str, prompts: Prompts, quick: interp.HeadScores | None) -> None:
    head = current_head(model)
    st.subheader(f"Head {head.label}")
    index = st.selectbox(
        "Prompt",
        range(len(prompts.prompts)),
        format_func=lambda i: f"{i}. {prompts.prompts[i][:90]}",
        key="detail_prompt",
    )
    left, right = st.columns([3, 2], gap="large")
    pattern, tokens = None, []
    with left, friendly():
        pattern, tokens = _pattern(model, spec, prompts.prompts[index], head.label, prompts.template)
        fig = sup.pattern_figure(pattern, tokens, f"{head.label} attention on prompt {index}")
        st.plotly_chart(fig, key="pattern")
        st.download_button(
            "Download this figure (HTML)",
            lambda: sup.figure_html(fig),
            f"pattern-{head.label}.html",
            "text/html",
            on_click="ignore",
            key="dl_pattern",
        )
    with right:
        if quick is not None:
            value = float(quick.scores[head.layer, head.head])
            raw = float(np.asarray(quick.extras["raw"])[head.layer, head.head])
            klass = sup.entropy_class(value)
            c1, c2 = st.columns(2)
            c1.metric("Entropy class", klass, help=f"collapsed < {sup.COLLAPSE}, overloaded > {sup.OVERLOAD} of max")
            c2.metric(
                "Normalized entropy",
                f"{value:.3f}",
                help=f"raw {raw:.3f} nats; mean over {quick.per_prompt.shape[0]} prompt(s)",
            )
        st.markdown("**Tokens it attends to most**")
    with right, friendly():
        if pattern is not None:
            top = sup.top_attended(pattern, tokens, 8)
            st.dataframe(
                top,
                hide_index=True,
                width="stretch",
                column_config={
                    "from last token": st.column_config.ProgressColumn(format="%.3f", min_value=0.0, max_value=1.0),
                    "mean over queries": st.column_config.NumberColumn(format="%.3f"),
                },
            )
        run = current_run()
        st.markdown(f"**Score across prompts** ({run.result.metric if run else 'no result'})")
        frame = (
            sup.per_prompt_frame(run.result, head, run.prompts)
            if run and run.result.scores.shape == (model.n_layers, model.n_heads)
            else None
        )
        if frame is None:
            st.caption("The result shown keeps no per-prompt scores.")
        else:
            hover = [html.escape(str(p)) for p in frame["prompt"]]
            bar = go.Figure(go.Bar(x=frame["prompt #"], y=frame["score"], hovertext=hover, marker_color="#3b6fb6"))
            bar.update_layout(
                height=240,
                margin={"l": 10, "r": 10, "t": 10, "b": 10},
                xaxis={"title": "prompt #", "type": "category"},
                yaxis_title=run.result.metric,
            )
            st.plotly_chart(bar, key="per_prompt")


# ---------------------------------------------------------------------------------------------------------
# Intervention playground
# ---------------------------------------------------------------------------------------------------------
def intervene_tab(model: interp.LoadedModel, spec: str, prompts: Prompts) -> None:
    state = st.session_state
    head = current_head(model)
    if state.get("_iv_head") != head.label:  # a newly selected head becomes the playground's target
        state._iv_head = head.label
        state.iv_heads = head.label
    left, right = st.columns([1, 2], gap="large")
    with left:
        st.subheader("Intervene")
        heads = st.text_input("Heads (comma-separated)", key="iv_heads", help="e.g. L3H1,L5H0")
        kind = st.selectbox("Kind", KINDS, key="iv_kind", format_func=KIND_HELP.get)
        alpha = st.number_input("alpha", value=2.0, step=0.5, format="%g", key="iv_alpha") if kind == "scale" else None
        sets = list(builtin_sets())
        reference = (
            st.selectbox("Mean over prompt set", sets, index=sets.index("reference"), key="iv_reference")
            if kind == "mean"
            else "reference"
        )
        source = (
            st.text_input("Source prompt", "Tell me a story about a dragon.", key="iv_source")
            if kind == "resample"
            else None
        )
        prompt = st.text_area("Prompt", prompts.prompts[0], height=80, key="iv_prompt")
        c1, c2 = st.columns(2)
        max_new = int(c1.number_input("New tokens", 1, 512, 24, key="iv_tokens"))
        top_k = int(c2.number_input("Top tokens", 1, 50, 10, key="iv_topk"))
        clicked = st.button("▶ Run intervention", type="primary", key="iv_run", width="stretch")
    with right:
        if clicked:
            with friendly():
                ref = interp.load_prompts(reference) if kind == "mean" else None
                iv = interp.make_intervention(
                    model, heads, kind, alpha=alpha, reference=ref, source=source, template=prompts.template
                )
                with st.spinner(f"Generating with and without {iv.describe()}…"):
                    base, changed = effects.generate_pair(model, prompt, iv, max_new, prompts.template)
                    table, kl = effects.next_token_table(model, prompt, iv, top_k, prompts.template)
                command = sup.ablate_command(
                    spec,
                    iv,
                    prompt,
                    max_new_tokens=max_new,
                    template=prompts.template,
                    top_tokens=top_k,
                    reference=reference,
                    source=source,
                )
                state.iv_out = {
                    "what": iv.describe(),
                    "prompt": prompt,
                    "base": base,
                    "changed": changed,
                    "table": table,
                    "kl": kl,
                    "command": command,
                }
        out = state.get("iv_out")
        if out is None:
            st.info("Choose heads and a kind, then run: base and intervened generations appear side by side.")
            return
        st.markdown(f"**{out['what']}** · prompt: _{out['prompt']}_")
        c1, c2 = st.columns(2)
        c1.markdown("**Base**")
        c1.container(border=True).text(out["base"] or EMPTY)
        c2.markdown("**Intervened**")
        c2.container(border=True).text(out["changed"] or EMPTY)
        if out["base"] == out["changed"]:
            st.caption("The generated text is the same; the next-token distribution below still shows what moved.")
        st.metric("KL(base ‖ intervened), next token", f"{out['kl']:.4g} nats")
        st.dataframe(
            out["table"],
            hide_index=True,
            width="stretch",
            column_config={
                c: st.column_config.NumberColumn(format="%.4f")
                for c in ("p base", "p intervened", "change", "p (intervened top)")
            },
        )


# ---------------------------------------------------------------------------------------------------------
# Compare and export
# ---------------------------------------------------------------------------------------------------------
def compare_tab() -> None:
    labels = list(runs())
    st.subheader("Compare two results")
    if len(labels) < 2:
        st.info("Run or load at least two results (the quick look counts) to compare them.")
        return
    c1, c2, c3 = st.columns([2, 2, 1])
    a_label = c1.selectbox("A", labels, index=len(labels) - 2, key="cmp_a")
    b_label = c2.selectbox("B", labels, index=len(labels) - 1, key="cmp_b")
    k = int(c3.number_input("top-k", 1, 100, 10, key="cmp_k"))
    a, b = runs()[a_label].result, runs()[b_label].result
    with friendly():
        agree = sup.agreement(a, b, k)
        m1, m2 = st.columns(2)
        m1.metric("Spearman rank correlation", f"{agree['spearman']:.3f}")
        m2.metric(f"Top-{k} overlap", f"{agree[f'top{k}_overlap']:.0%}")
        h1, h2 = st.columns(2)
        h1.plotly_chart(a.heatmap(title=f"A: {a.metric}"), key="cmp_heat_a")
        h2.plotly_chart(b.heatmap(title=f"B: {b.metric}"), key="cmp_heat_b")
        if a.metric != b.metric:
            st.caption(
                "A and B are different metrics: their difference mixes units; rank agreement is the fairer view."
            )
        st.plotly_chart(sup.difference_figure(a, b, f"B − A ({b.metric} − {a.metric})"), key="cmp_diff")


def export_tab(prompts: Prompts) -> None:
    run = current_run()
    st.subheader("Export")
    if run is None:
        st.info("Nothing to export yet.")
        return
    result = run.result
    stem = result.metric
    st.markdown(f"Result shown: **{sup.describe_result(result)}**")
    cols = st.columns(3)
    cols[0].download_button(
        "Results (JSON)",
        lambda: sup.result_json(result),
        f"{stem}.json",
        "application/json",
        on_click="ignore",
        key="dl_json",
    )
    cols[1].download_button(
        "Results (CSV)", lambda: sup.result_csv(result), f"{stem}.csv", "text/csv", on_click="ignore", key="dl_csv"
    )
    cols[2].download_button(
        "Heatmap (HTML)",
        lambda: sup.figure_html(result.heatmap()),
        f"{stem}-heatmap.html",
        "text/html",
        on_click="ignore",
        key="dl_html",
    )
    st.caption("PNG: use the camera icon in any chart's toolbar (rendered in your browser, works offline).")
    st.markdown("**Reproduce on the command line**")
    if run.command:
        st.code(run.command, language="bash", wrap_lines=True)
        if prompts.cli_arg not in builtin_sets():
            st.download_button(
                "The prompts file for this command",
                prompts.text,
                prompts.cli_arg,
                "text/plain",
                on_click="ignore",
                key="dl_prompts",
            )
    elif run.origin == "quick look":
        n = len(run.prompts or ())
        st.code(
            "import interp\n\n"
            f"model = interp.load_model({result.model!r})\n"
            f"prompts = interp.load_prompts({prompts.cli_arg!r}, {n})\n"
            f'result = interp.scan("entropy", model, prompts, template={prompts.template!r})\n'
            "print(result.top(10))",
            language="python",
        )
    else:
        st.caption("Loaded from a file: its config and provenance are inside the JSON.")
    out = st.session_state.get("iv_out")
    if out is not None:
        st.markdown("**Last intervention**")
        st.code(out["command"], language="bash", wrap_lines=True)
        st.download_button(
            "Next-token table (CSV)",
            out["table"].to_csv(index=False),
            "next-token.csv",
            "text/csv",
            on_click="ignore",
            key="dl_iv",
        )
