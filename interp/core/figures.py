"""Saving plotly figures as HTML that opens offline: plotly.js is embedded in the file, never loaded from a CDN.

Every face that saves a figure (`interp show --html`, `interp entropy report --html`, the ICL analysis, the
app's downloads) goes through here, so no saved page depends on the network (tests/test_hub.py checks that
the output has no external <script src=…>).
"""

from __future__ import annotations

import html as html_lib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp.core.files import atomic_write


def figure_html(fig: Any) -> str:
    """One figure as a complete, self-contained HTML page (~4.7 MB: plotly.js inlined)."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


def figures_html(figs: Sequence[Any], title: str = "") -> str:
    """Several figures on one self-contained page; plotly.js is inlined once, before the first figure."""
    parts = [f.to_html(include_plotlyjs=(i == 0), full_html=False) for i, f in enumerate(figs)]
    head = f"<title>{html_lib.escape(title)}</title>" if title else ""
    return f'<html><head><meta charset="utf-8">{head}</head><body>\n' + "\n".join(parts) + "\n</body></html>"


def write_figure_html(figs: Any | Sequence[Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Write one figure or several to a self-contained HTML file (atomically); returns the path."""
    many = isinstance(figs, (list, tuple))
    text = figures_html(figs, title) if many else figure_html(figs)
    # shareable: a report is a file to hand around, readable like any other the user writes
    return atomic_write(Path(path), lambda fh: fh.write(text), text=True, shareable=True)
