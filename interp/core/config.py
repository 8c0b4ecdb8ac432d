"""Dataclass configs validated on construction.

Every analyzer's options are a frozen dataclass deriving from `Config`. Construction checks each field
against its annotation (Literal choices, int/float/bool/str, optional) so a bad option fails early with
the allowed values; `from_strings` turns CLI `key=value` pairs into a config using the same annotations.
Floats must be finite (an `alpha=inf` would otherwise fail only when the result is saved, after the whole
computation). Fields declared with `metadata=OUTPUT_DIR` / `OUTPUT_FILE` are output paths, checked for
writability at construction, before any work. Every error is a `UsageError` (the CLI exits with status 2).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from interp.core import validate
from interp.core.errors import InterpError, UsageError, unknown_name

TemplateName = Literal["auto", "chat", "raw", "query", "paper"]

# Field metadata for output paths: `checkpoint: str | None = field(default=None, metadata=OUTPUT_DIR)`.
OUTPUT_DIR: Mapping[str, str] = types.MappingProxyType({"output": "dir"})
OUTPUT_FILE: Mapping[str, str] = types.MappingProxyType({"output": "file"})


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return False, tp


def _check_value(name: str, value: Any, tp: Any) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise UsageError(f"Option {name!r} cannot be None.")
    if get_origin(inner) is Literal:
        allowed = get_args(inner)
        if value not in allowed:
            raise UsageError(f"Option {name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}.")
        return value
    if inner is bool:
        if not isinstance(value, bool):
            raise UsageError(f"Option {name} must be true or false, got {value!r}.")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"Option {name} must be an integer, got {value!r}.")
        return value
    if inner is float:
        return validate.number(f"Option {name}", value)  # finite: inf / nan are refused
    if inner is str:
        if not isinstance(value, str):
            raise UsageError(f"Option {name} must be a string, got {value!r}.")
        return value
    if get_origin(inner) is tuple and isinstance(value, tuple | list):
        element = get_args(inner)[0] if get_args(inner) else Any
        if element is float:
            return tuple(v if isinstance(v, str) else validate.number(f"Option {name}", v) for v in value)
    return value  # other structured fields are checked by the config's own `check`


def _parse_string(name: str, text: str, tp: Any) -> Any:
    """Turn a CLI string into the annotated type (before the normal check)."""
    optional, inner = _is_optional(tp)
    if optional and text.lower() in ("none", "null", ""):
        return None
    if get_origin(inner) is Literal:
        for choice in get_args(inner):
            if str(choice) == text:
                return choice
        return text  # the normal check reports the allowed values
    if inner is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"Option {name} must be true or false, got {text!r}.")
    if inner is int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"Option {name} must be an integer, got {text!r}.") from None
    if inner is float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"Option {name} must be a number, got {text!r}.") from None
    if get_origin(inner) is tuple:
        parts = tuple(part.strip() for part in text.split(",") if part.strip())
        if get_args(inner) and get_args(inner)[0] is float:  # numbers: checked finite on construction
            return tuple(_parse_string(name, part, float) for part in parts)
        return parts
    return text


@dataclasses.dataclass(frozen=True)
class Config:
    """Base for analyzer configs: checks field types on construction, then calls `check()`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _check_value(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        try:
            self.check()
        except InterpError as exc:
            if type(exc) is not InterpError:  # a PromptError, an UnknownNameError, …: already specific
                raise
            raise UsageError(str(exc)) from None  # a plain "option out of range" from check(): a usage error
        for f in dataclasses.fields(self):  # output paths last: only for an otherwise valid config
            kind, value = f.metadata.get("output"), getattr(self, f.name)
            if kind is not None and value not in (None, ""):
                check = validate.output_dir if kind == "dir" else validate.output_file
                check(value, f"Option {f.name}")

    def check(self) -> None:
        """Cross-field checks; subclasses override and raise InterpError."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_strings(cls, values: Mapping[str, str], **typed: Any) -> Config:
        """Build from CLI `key=value` strings (unknown keys name the known ones) plus typed overrides."""
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, text in values.items():
            key = key.replace("-", "_")
            if key not in hints or key not in cls.field_names():
                raise unknown_name(f"option for {cls.__name__}", key, cls.field_names())
            kwargs[key] = _parse_string(key, text, hints[key])
        kwargs.update({k: v for k, v in typed.items() if v is not None})
        return cls(**kwargs)


def positive(name: str, value: float | int) -> None:
    if value <= 0:
        raise UsageError(f"Option {name} must be > 0, got {value}.")
