"""Named models: what each bundled or optional model is, where its files come from, and the cache.

The bundled models in interp/model/zoo/ each call `register_model` on import; `interp.model` imports the zoo,
so the registry is full before anyone looks a name up. A duplicate name is refused (two models under one
name would make `load_model(name)` depend on import order).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.core.errors import InterpError, ModelLoadError, unknown_name

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelEntry:
    """A named model: where its weights come from and how to get them."""

    name: str
    description: str
    source: str
    size: str
    locate: Callable[[], tuple[Any, Any] | Path | None]
    """Returns a local path (GGUF file or HF dir), or (hf_model, tokenizer) for models built in code;
    None when the package that carries the weights is not installed."""
    install_hint: str = ""
    aliases: tuple[str, ...] = ()
    hf_name: str | None = None
    """The official hub name, recorded for TransformerLens (never fetched)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def installed(self) -> bool:
        try:
            return self.locate() is not None
        except ModelLoadError:
            return False


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a named model (used by the zoo and by optional extras such as the safety testbed)."""
    taken = [n for n in (entry.name, *entry.aliases) if n in _REGISTRY or n in _ALIASES]
    if taken:
        raise InterpError(f"A model named {taken[0]!r} is already registered; pick another name.")
    _REGISTRY[entry.name] = entry
    for alias in entry.aliases:
        _ALIASES[alias] = entry.name
    return entry


def get_entry(name: str) -> ModelEntry:
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise unknown_name("model", name, [*_REGISTRY, *_ALIASES])
    return _REGISTRY[key]


def locate(name: str) -> tuple[ModelEntry, Any]:
    """A registered model's entry and what its locate() gives (a path, or (hf_model, tokenizer)); not installed:
    a clear error with the install command."""
    entry = get_entry(name)
    located = entry.locate()
    if located is None:
        raise ModelLoadError(
            f'Model "{entry.name}" is not installed ({entry.source}). Install it with:\n    {entry.install_hint}'
        )
    return entry, located


def list_models() -> list[dict[str, Any]]:
    """One row per registered model: name, aliases, description, size, source, installed, install hint."""
    rows = []
    for entry in _REGISTRY.values():
        installed = entry.installed()
        rows.append(
            {
                "name": entry.name,
                "aliases": ", ".join(entry.aliases),
                "description": entry.description,
                "size": entry.size,
                "source": entry.source,
                "installed": installed,
                "install": "" if installed else entry.install_hint,
            }
        )
    return rows


def package_file(package: str, relative: str) -> Path | None:
    """Locate a data file inside an installed package without importing it (importing may fail)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def cache_dir() -> Path:
    env = os.environ.get("INTERP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interp"


def is_registered(name: str) -> bool:
    return name in _REGISTRY or name in _ALIASES


def registered_names() -> list[str]:
    return [*_REGISTRY, *_ALIASES]
