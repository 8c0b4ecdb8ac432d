"""Head labels: `L{layer}H{head}` strings, parsed and range-checked against a model's shape."""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from interp.core.errors import HeadLabelError

_LABEL = re.compile(r"^\s*L(\d+)\s*H(\d+)\s*$", re.IGNORECASE)


class Head(NamedTuple):
    """One attention head: a layer index and a (query) head index, both 0-based."""

    layer: int
    head: int

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"

    def __str__(self) -> str:
        return self.label


HeadLike = Head | str | tuple[int, int]


def check_head(head: Head, n_layers: int, n_heads: int) -> Head:
    """Raise a HeadLabelError naming the model's shape when `head` is out of range."""
    if not 0 <= head.layer < n_layers:
        raise HeadLabelError(
            f'Head "{head.label}" is out of range: the model has {n_layers} layers (L0 … L{n_layers - 1}).'
        )
    if not 0 <= head.head < n_heads:
        raise HeadLabelError(
            f'Head "{head.label}" is out of range: each layer has {n_heads} heads (H0 … H{n_heads - 1}).'
        )
    return head


def _index(v: Any) -> bool:
    """A layer or head index: an integer (numpy integers too) but not a bool (True would read as 1)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def parse_head(value: HeadLike, n_layers: int | None = None, n_heads: int | None = None) -> Head:
    """Parse "L3H1", (3, 1) or Head(3, 1); range-check when the model's shape is given."""
    if isinstance(value, str):
        m = _LABEL.match(value)
        if m is None:
            raise HeadLabelError(f"Cannot parse head label {value!r}: expected the form L<layer>H<head>, e.g. 'L3H1'.")
        head = Head(int(m.group(1)), int(m.group(2)))
    elif isinstance(value, tuple | list) and len(value) == 2 and all(_index(v) for v in value):
        head = Head(int(value[0]), int(value[1]))
        if head.layer < 0 or head.head < 0:
            raise HeadLabelError(f"Head {tuple(value)!r} has a negative index; layers and heads count from 0.")
    else:
        raise HeadLabelError(
            f"Cannot interpret {value!r} as a head: use 'L3H1', (3, 1) or Head(3, 1) (integers, not booleans)."
        )
    if n_layers is not None and n_heads is not None:
        check_head(head, n_layers, n_heads)
    return head


def parse_heads(
    values: str | Iterable[HeadLike], n_layers: int | None = None, n_heads: int | None = None
) -> tuple[Head, ...]:
    """Parse a comma-separated string or an iterable of head-likes; duplicates are an error."""
    if isinstance(values, Head):
        values = [values]  # one Head is one head, not the two integers inside the tuple
    if isinstance(values, str):
        items: Sequence[HeadLike] = [v for v in values.split(",") if v.strip()]
    elif isinstance(values, Iterable):
        items = list(values)
    else:
        raise HeadLabelError(
            f"Cannot interpret {values!r} as heads: give labels such as 'L3H1,L5H0', or a list of labels, "
            "(layer, head) tuples or Heads."
        )
    heads = tuple(parse_head(v, n_layers, n_heads) for v in items)
    if not heads:
        raise HeadLabelError("No heads given: pass at least one label such as 'L3H1'.")
    seen: set[Head] = set()
    for h in heads:
        if h in seen:
            raise HeadLabelError(f'Head "{h.label}" is listed twice.')
        seen.add(h)
    return heads


def all_heads(n_layers: int, n_heads: int) -> tuple[Head, ...]:
    """Every head of a model, layer-major."""
    return tuple(Head(layer, head) for layer in range(n_layers) for head in range(n_heads))


def labels(heads: Iterable[Head]) -> list[str]:
    return [h.label for h in heads]
