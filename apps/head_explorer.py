"""Streamlit head explorer: a thin page over interp's functions (logic lives in interp.app.support).

Run with `make app`, `interp app --model M` (binds to 127.0.0.1), or
`streamlit run apps/head_explorer.py -- --model default`. The start-up model can also come from $INTERP_APP_MODEL.
From Python on a model object (a TransformerBridge, an HF model, a LoadedModel): `interp.app.serve(model)`, which
runs this page in that process; the object is then the first choice in the model picker.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # explorer_tabs sits beside this page

import explorer_tabs as tabs

import interp
from interp.app import support as sup

LOCAL_PATH = "Local path…"


@st.cache_resource(show_spinner="Loading model… (the first load of the default model converts it: ~1 min)")
def get_model(spec: str) -> interp.LoadedModel:
    return interp.load_model(spec, **sup.startup_load_options(sys.argv[1:]))  # --device / --dtype of `interp app`


@st.cache_resource(show_spinner=False)
def model_lock(spec: str) -> threading.RLock:
    """One lock per loaded model: hooks live on the shared model object, so two browser sessions must not run
    forward passes on it at the same time (one session's intervention would leak into the other's scan)."""
    return threading.RLock()


@st.cache_resource(show_spinner=False)
def model_catalogue() -> tuple[list[str], list[dict]]:
    return sup.installed_models()


def sidebar_model() -> tuple[str, interp.LoadedModel | None]:
    """Model picker and facts; returns (the spec the user chose, the loaded model or None after an error)."""
    state = st.session_state
    st.sidebar.header("Model")
    installed, missing = model_catalogue()
    launched = sup.launched_models()  # model objects handed over by interp.app.serve
    if "model_choice" not in state:  # first run: the object from Python, else --model / $INTERP_APP_MODEL
        start = sup.startup_model(sys.argv[1:])
        name = sup.canonical_model_name(start)
        if launched:
            state.model_choice, state.model_path = next(iter(launched)), ""
        else:
            state.model_choice = name if name in installed else LOCAL_PATH
            state.model_path = "" if name in installed else start
    choice = st.sidebar.selectbox("Model", [*launched, *installed, LOCAL_PATH], key="model_choice")
    spec = choice
    if choice == LOCAL_PATH:
        spec = st.sidebar.text_input(
            "Model directory, .gguf file or hub id", key="model_path", placeholder="/path/to/hf-model-dir or org/name"
        ).strip()
    if missing:
        with st.sidebar.expander(f"{len(missing)} optional model(s) not installed"):
            for row in missing:
                st.markdown(f"**{row['name']}** — {row['description']}  \n`{row['install']}`")
    if not spec:
        st.sidebar.info("Enter the path of a Hugging Face model directory or a .gguf file, or a hub id (org/name).")
        return spec, None
    with tabs.friendly():
        model = launched[spec] if spec in launched else get_model(spec)
        info = model.info()
        st.sidebar.caption(
            f"**{info['name']}** · {info['architecture']}  \n{info['n_layers']} layers × {info['n_heads']} heads "
            f"({info['n_kv_heads']} KV) · {info['n_params'] / 1e6:.1f}M params · {info['device']} · {info['dtype']}"
        )
        return spec, model
    return spec, None


def main() -> None:
    st.set_page_config(page_title="interp · head explorer", page_icon=":material/hub:", layout="wide")
    tabs.style()
    st.title("Head explorer")
    spec, model = sidebar_model()
    if model is None:
        st.info("Choose a model in the sidebar: the embedded default, an installed optional model, or a local path.")
        return
    prompts = tabs.sidebar_prompts()
    tabs.model_facts(model)
    if prompts is None:
        return
    with model_lock(spec):
        pages(model, spec, prompts)


def pages(model: interp.LoadedModel, spec: str, prompts: tabs.Prompts) -> None:
    quick = tabs.quick_look(model, spec, prompts.prompts, prompts.template)
    scores, detail, playground, compare, export = st.tabs(
        [
            ":material/grid_on: Scores",
            ":material/visibility: Head detail",
            ":material/tune: Intervene",
            ":material/compare: Compare",
            ":material/download: Export",
        ]
    )
    with scores:
        tabs.scores_tab(model, spec, prompts)
    with detail:
        tabs.detail_tab(model, spec, prompts, quick)
    with playground:
        tabs.intervene_tab(model, spec, prompts)
    with compare:
        tabs.compare_tab()
    with export:
        tabs.export_tab(prompts)


main()
