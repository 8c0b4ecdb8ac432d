"""Streamlit head explorer: a thin page over interp's functions.

Run with `interp app` (binds to 127.0.0.1) or `streamlit run apps/head_explorer.py -- --model default`.
"""

from __future__ import annotations

import argparse
import sys

import streamlit as st

import interp
from interp.errors import InterpError


def cli_model() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.model


@st.cache_resource(show_spinner="Loading model…")
def get_model(name: str) -> interp.LoadedModel:
    return interp.load_model(name)


def main() -> None:
    st.set_page_config(page_title="interp head explorer", layout="wide")
    st.title("Head explorer")
    model_name = st.sidebar.text_input("Model (name, directory or .gguf)", value=cli_model())
    try:
        model = get_model(model_name)
    except InterpError as exc:
        st.error(str(exc))
        return
    info = model.info()
    st.sidebar.markdown(
        f"**{info['name']}** — {info['n_layers']} layers x {info['n_heads']} heads "
        f"({info['n_kv_heads']} KV), {info['n_params'] / 1e6:.1f}M params\n\n{info['source']}"
    )
    prompts_text = st.text_area("Prompts (one per line)", value="\n".join(interp.load_prompts("short")), height=180)
    kind = st.selectbox("Ablation", ["zero", "mean", "uniform", "resample"], index=0)
    if st.button("Run ablation scan", type="primary") or "result" not in st.session_state:
        prompts = [p for p in prompts_text.splitlines() if p.strip()]
        bar = st.progress(0.0, text="Scanning heads…")
        try:
            st.session_state["result"] = interp.scan(
                "ablation-kl",
                model,
                prompts,
                kind=kind,
                progress=lambda done, total: bar.progress(done / total, text=f"Scanning heads… {done}/{total}"),
            )
        except InterpError as exc:
            st.error(str(exc))
            return
        finally:
            bar.empty()
    result = st.session_state["result"]
    st.plotly_chart(result.heatmap(), use_container_width=True)
    st.dataframe(result.top(10), hide_index=True)
    st.download_button("Download result (JSON)", data=_json(result), file_name="ablation-kl.json")


def _json(result: interp.HeadScores) -> str:
    import json

    return json.dumps(result.to_dict(), indent=1)


main()
