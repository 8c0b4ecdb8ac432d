"""Analyzers that score every head, registered by name so the CLI and the app find them.

Each analyzer module defines a Config dataclass and a function
`analyze(model, prompts, config, progress) -> HeadScores`, and registers it with `@register_metric`.
`run_metric(name, model, prompts, **options)` is the one entry point the CLI, the app and notebooks use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from interp.config import Config
from interp.errors import MetricNotApplicableError, unknown_name
from interp.models import LoadedModel
from interp.progress import Progress
from interp.results import HeadScores

Analyzer = Callable[[LoadedModel, Sequence[str], Any, Progress], HeadScores]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    config_cls: type[Config]
    fn: Analyzer
    description: str
    modality: Literal["text", "vision"] = "text"

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


def register_metric(
    name: str, config_cls: type[Config], description: str, modality: Literal["text", "vision"] = "text"
) -> Callable[[Analyzer], Analyzer]:
    def decorator(fn: Analyzer) -> Analyzer:
        _METRICS[name] = MetricInfo(name, config_cls, fn, description, modality)
        return fn

    return decorator


def get_metric(name: str) -> MetricInfo:
    if name not in _METRICS:
        raise unknown_name("metric", name, _METRICS)
    return _METRICS[name]


def list_metrics() -> list[MetricInfo]:
    return list(_METRICS.values())


def check_applicable(info: MetricInfo, model: LoadedModel) -> None:
    if info.modality == "vision" and not model.is_multimodal:
        raise MetricNotApplicableError(
            f'Metric "{info.name}" needs a vision-language model; {model.name} is text-only. '
            "Load a LLaVA-style model (see `interp models`)."
        )


def run_metric(
    name: str,
    model: LoadedModel,
    prompts: Sequence[str],
    config: Config | None = None,
    progress: Progress = True,
    **options: Any,
) -> HeadScores:
    """Run a registered analyzer; `options` are its config fields (ignored when `config` is given)."""
    info = get_metric(name)
    check_applicable(info, model)
    cfg = config if config is not None else info.make_config(options)
    return info.fn(model, prompts, cfg, progress)


def _import_analyzers() -> None:
    """Analyzer modules register themselves on import; every module in this package is one."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_analyzers()
