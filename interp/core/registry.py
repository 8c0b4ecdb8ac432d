"""Registries of the toolkit: per-head metrics, registered by name so the CLI and the app find them.

Each research line's `metrics.py` (interp/lines/<line>/metrics.py) defines a Config dataclass and a function
`analyze(model, prompts, config, progress) -> HeadScores`, and registers it with `@register_metric`.
`run_metric(name, model, prompts, **options)` (`interp.scan`) is the one entry point the CLI, the app and
notebooks use; importing `interp` (or `interp.lines`) registers every line's metrics.

A duplicate name is refused: a second metric under one name would silently replace the first.
Each metric says which end of its scale marks the important heads (`direction`): "high" (largest first, e.g.
KL when the head is knocked out) or "low" (most negative first, e.g. the signed change of log p(top-1) when
the head is knocked out). `HeadScores.top()`, the CLI and the app rank by it.

Bring your own model: `run_metric` and every registered analyzer accept whatever `as_loaded_model` accepts (a
LoadedModel, a TransformerLens TransformerBridge, or an HF model with its tokenizer). That function lives in
the model layer, above this one, so interp.model installs it here on import (`set_model_adapter`); until then
models pass through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from interp.core.config import Config
from interp.core.errors import InterpError, MetricNotApplicableError, UsageError, unknown_name
from interp.core.progress import Progress
from interp.core.prompts import check_prompts

# (model: LoadedModel, prompts, config, progress) -> HeadScores; typed loosely here because core sits below
# the model layer (interp.model) and the results module imports this one.
Analyzer = Callable[[Any, Sequence[str], Any, Progress], Any]
Direction = Literal["high", "low"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    config_cls: type[Config]
    fn: Analyzer
    description: str
    modality: Literal["text", "vision"] = "text"
    direction: Direction = "high"
    """Which end marks the important heads: "high" (largest first) or "low" (most negative first)."""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "high"

    def make_config(self, options: Mapping[str, Any] | None = None) -> Config:
        """A validated config from typed options or CLI strings (strings are parsed per field type)."""
        options = dict(options or {})
        strings = {k: v for k, v in options.items() if isinstance(v, str)}
        typed = {k: v for k, v in options.items() if not isinstance(v, str)}
        unknown = [k for k in typed if k not in self.config_cls.field_names()]
        if unknown:
            raise unknown_name(f"option for {self.name}", unknown[0], self.config_cls.field_names())
        return self.config_cls.from_strings(strings, **typed)


_METRICS: dict[str, MetricInfo] = {}

ModelAdapter = Callable[[Any, Any], Any]
"""(model object, tokenizer or None) -> LoadedModel: interp.model.adopt.as_loaded_model."""
_ADAPTER: list[ModelAdapter] = []


def set_model_adapter(adapter: ModelAdapter) -> None:
    """Install the model layer's `as_loaded_model` (called once, by interp.model on import)."""
    _ADAPTER[:] = [adapter]


def adapt_model(model: Any, tokenizer: Any = None) -> Any:
    """The LoadedModel for any model object the caller has (see the module doc)."""
    return _ADAPTER[0](model, tokenizer) if _ADAPTER else model


def register_metric(
    name: str,
    config_cls: type[Config],
    description: str,
    modality: Literal["text", "vision"] = "text",
    direction: Direction = "high",
) -> Callable[[Analyzer], Analyzer]:
    if direction not in ("high", "low"):
        raise InterpError(f'direction must be "high" or "low", got {direction!r}.')

    def decorator(fn: Analyzer) -> Analyzer:
        if name in _METRICS:
            raise InterpError(f"A metric named {name!r} is already registered ({_METRICS[name].fn.__module__}).")

        # The analyzer as registered and as its module exports it: any model object is adapted first.
        @functools.wraps(fn)
        def analyzer(model: Any, *args: Any, **kwargs: Any) -> Any:
            return fn(adapt_model(model), *args, **kwargs)

        _METRICS[name] = MetricInfo(name, config_cls, analyzer, description, modality, direction)
        return analyzer

    return decorator


def get_metric(name: str) -> MetricInfo:
    if name not in _METRICS:
        raise unknown_name("metric", name, _METRICS)
    return _METRICS[name]


def list_metrics() -> list[MetricInfo]:
    return list(_METRICS.values())


def metric_direction(name: str) -> Direction:
    """The important end of a metric's scale; "high" for names no registered metric carries."""
    info = _METRICS.get(name)
    return info.direction if info is not None else "high"


def check_applicable(info: MetricInfo, model: Any) -> None:
    if info.modality == "vision" and not model.is_multimodal:
        raise MetricNotApplicableError(
            f'Metric "{info.name}" needs a vision-language model; {model.name} is text-only. '
            "Load a LLaVA-style model (see `interp models`)."
        )


def run_metric(
    name: str,
    model: Any,
    prompts: Sequence[str],
    config: Config | None = None,
    progress: Progress = True,
    *,
    tokenizer: Any = None,
    **options: Any,
) -> Any:
    """Run a registered analyzer (`interp.scan`); `options` are its config fields (ignored when `config` is
    given). Returns its HeadScores.

    model: a LoadedModel, a TransformerBridge, an HF model with `tokenizer=`, or (hf_model, tokenizer)."""
    info = get_metric(name)
    model = adapt_model(model, tokenizer)
    check_applicable(info, model)
    cfg = config if config is not None else info.make_config(options)
    if not isinstance(cfg, info.config_cls):
        raise UsageError(f"config must be a {info.config_cls.__name__} for {name!r}, got {type(cfg).__name__}.")
    # A list, however given: analyzers index and measure it (a generator would fail deep inside).
    return info.fn(model, check_prompts(prompts), cfg, progress)
