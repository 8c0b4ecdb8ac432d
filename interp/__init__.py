"""interp: score, inspect and intervene on the attention heads of real models, offline.

import interp
model = interp.load_model("default")             # SmolLM2-135M-Instruct, shipped on PyPI
result = interp.scan("ablation-kl", model, interp.load_prompts("short"))
result.top(5); result.heatmap().show()
with interp.intervene(model, interp.make_intervention(model, "L3H1", "zero")):
    ...
"""

from __future__ import annotations

import os

# Nothing in this toolkit may reach a model hub: make transformers / huggingface_hub fail fast instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from interp.errors import InterpError
from interp.heads import Head, parse_head, parse_heads
from interp.hooks import (
    HeadIntervention,
    capture,
    generate,
    head_outputs,
    intervene,
    make_intervention,
)
from interp.models import LoadedModel, list_models, load_model, wrap_model
from interp.prompts import load_prompts
from interp.results import HeadScores
from interp.scores import get_metric, list_metrics, run_metric
from interp.sweep import sweep

scan = run_metric

__all__ = [
    "Head",
    "HeadIntervention",
    "HeadScores",
    "InterpError",
    "LoadedModel",
    "capture",
    "generate",
    "get_metric",
    "head_outputs",
    "intervene",
    "list_metrics",
    "list_models",
    "load_model",
    "load_prompts",
    "make_intervention",
    "parse_head",
    "parse_heads",
    "run_metric",
    "scan",
    "sweep",
    "wrap_model",
]
