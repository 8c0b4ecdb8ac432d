"""Seeded random tiny models built in code (tests and examples): tiny-llama and tiny-gpt2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interp.model.registry import ModelEntry, register_model
from interp.model.tiny import build_tiny


def _tiny(arch: str) -> Callable[[], tuple[Any, Any]]:
    return lambda: build_tiny(arch)


register_model(
    ModelEntry(
        name="tiny-llama",
        description="random Llama, 3 layers x 4 heads (2 KV heads), byte tokenizer, seed 0",
        source="built in code",
        size="~0.2M params",
        locate=_tiny("llama"),
    )
)
register_model(
    ModelEntry(
        name="tiny-gpt2",
        description="random GPT-2, 3 layers x 4 heads, byte tokenizer, seed 0",
        source="built in code",
        size="~0.2M params",
        locate=_tiny("gpt2"),
    )
)
