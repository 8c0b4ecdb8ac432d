"""interp: score, inspect and intervene on the attention heads of real models.

import interp
model = interp.load_model("default")             # SmolLM2-135M-Instruct, shipped on PyPI (or "org/name", a path)
result = interp.scan("ablation-kl", model, interp.load_prompts("short"))
result.top(5); result.heatmap().show()
with interp.intervene(model, interp.make_intervention(model, "L3H1", "zero")):
    ...
interp.scan("ablation-kl", bridge, prompts)      # a TransformerBridge you booted, or (hf_model, tokenizer)

Importing interp changes nothing in the process: no environment variables, no torch settings. Whether a hub
id may be downloaded is the user's environment's call (HF_HUB_OFFLINE); the tests and CI set it themselves.
"""

from __future__ import annotations

from interp import lines as _lines  # noqa: F401  (registers every research line's metrics)
from interp.core.errors import InterpError
from interp.core.heads import Head, parse_head, parse_heads
from interp.core.prompts import load_prompts
from interp.core.registry import get_metric, list_metrics, run_metric
from interp.core.results import HeadScores
from interp.engine.interventions import HeadIntervention, intervene
from interp.engine.run import capture, generate, head_outputs, make_intervention
from interp.engine.sweep import sweep
from interp.model.adopt import as_loaded_model
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
    "as_loaded_model",
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
