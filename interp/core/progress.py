"""Progress reporting shared by the CLI (tqdm bars) and the app (a callback into a Streamlit bar)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

Progress = bool | Callable[[int, int], None]


def progress_iter(items: Iterable[T], progress: Progress, desc: str, total: int | None = None) -> Iterator[T]:
    """Yield items; show a tqdm bar when progress is True, or call progress(done, total) after each item."""
    if progress is True:
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=False)
        return
    if callable(progress):
        n = total if total is not None else len(items)  # type: ignore[arg-type]
        for i, item in enumerate(items):
            yield item
            progress(i + 1, n)
        return
    yield from items
