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

from interp import lines as _lines  # noqa: F401  (registers every research line's metrics)
from interp.core.errors import InterpError
from interp.core.heads import Head, parse_head, parse_heads
from interp.core.prompts import load_prompts
from interp.core.registry import get_metric, list_metrics, run_metric
from interp.core.results import HeadScores
from interp.engine.interventions import HeadIntervention, intervene
from interp.engine.run import capture, generate, head_outputs, make_intervention
from interp.engine.sweep import sweep
from interp.model.loaded import LoadedModel
from interp.model.loading import load_model, wrap_model
from interp.model.registry import list_models

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
