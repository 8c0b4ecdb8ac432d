"""What every result records so it can be reproduced: prompts hash, seed, versions, time."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

_PACKAGES = ("interp", "torch", "transformers", "transformer-lens", "numpy")


def prompts_hash(prompts: Sequence[str]) -> str:
    """sha256 over the prompts as a JSON list, so order and boundaries both count."""
    payload = json.dumps(list(prompts), ensure_ascii=False).encode("utf-8")
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def make_provenance(prompts: Sequence[str] | None = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A provenance record; `extra` adds analyzer-specific facts (template, device, timing, …)."""
    record: dict[str, Any] = {"time": utc_now(), "versions": package_versions(), "seed": seed}
    if prompts is not None:
        record["prompts_hash"] = prompts_hash(prompts)
        record["n_prompts"] = len(prompts)
    record.update(extra)
    return record
