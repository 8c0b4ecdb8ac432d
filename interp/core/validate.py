"""Checks every entry point runs before the work starts: numbers, counts, input files and output paths.

The CLI (interp/cli/__init__.py), the configs (interp/core/config.py) and the library's entry points all use
these, so a bad value fails in milliseconds with one message naming the problem and the allowed values,
instead of after a long run (a finished scan lost to `--top 0`, `--out` onto a folder, `alpha=inf`).

Output paths are checked without side effects: nothing is created; the nearest existing folder on the way
must be a folder we may write to. Note that root may write into a folder whose mode says read-only, so for
root such a folder passes (the write would succeed too).
"""

from __future__ import annotations

import math
import numbers
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from interp.core.errors import InterpError, OutputPathError, UsageError

# Prompt and label files are read whole; a file larger than this is almost surely not a prompts file
# (`--prompts /dev/zero`, a model file given by mistake) and would exhaust memory before failing.
MAX_TEXT_FILE_BYTES = 256 * 1024**2


def number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
) -> float:
    """A finite real number (not a bool, not a string) within [minimum, maximum]; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {value!r}.")
    v = float(value)
    if not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number, got {value}.")
    _in_range(name, v, minimum, maximum, min_open, max_open)
    return v


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (numpy integers too; not a bool, not a float) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an integer, got {value!r}.")
    v = int(value)
    _in_range(name, v, minimum, maximum, False, False)
    return v


def count(name: str, value: Any) -> int:
    """A positive integer (how many of something)."""
    return integer(name, value, minimum=1)


def limit(value: Any, name: str = "limit") -> int | None:
    """None (no limit) or a positive integer: 0 and negative limits are refused, never silently ignored."""
    return None if value is None else count(name, value)


def _in_range(name: str, v: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> None:
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if not (below or above):
        return
    if lo is not None and hi is not None:
        allowed = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        allowed = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        allowed = f"{'<' if hi_open else '<='} {hi:g}"
    raise UsageError(f"{name} must be {allowed}, got {v:g}.")


# ---- files --------------------------------------------------------------------------------------------------
def regular_file(
    path: str | os.PathLike[str],
    what: str,
    error: type[InterpError] = InterpError,
    max_bytes: int | None = MAX_TEXT_FILE_BYTES,
) -> Path:
    """An existing regular file of at most max_bytes. Pipes, devices and sockets are refused without being
    opened (reading /dev/zero would exhaust memory; opening a FIFO would wait for a writer forever)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist.") from None
    except OSError as exc:
        raise error(f"{what} {p} cannot be read: {exc.strerror}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {p} is a folder; give a file.")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {p} is not a regular file (a pipe, device or socket); give a file.")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {p} is {st.st_size / 1024**2:.0f} MiB; at most {max_bytes // 1024**2} MiB are read.")
    return p


def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_folder_on_the_way(target: Path, what: str) -> None:
    """The nearest existing ancestor of target must be a folder we may write into (it will be created below)."""
    parent = target.parent
    anchor = _nearest_existing(parent if str(parent) else Path("."))
    if not anchor.is_dir():
        raise OutputPathError(f"Cannot write {what} {target}: {anchor} is a file, not a folder.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputPathError(f"Cannot write {what} {target}: the folder {anchor} is not writable (permission denied).")


def output_file(path: str | os.PathLike[str], what: str = "--out", suffixes: tuple[str, ...] | None = None) -> Path:
    """A path a file can be written to: not a folder, a writable folder on the way, the right suffix."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputPathError(
            f"{what} {p} is a folder; give a file path (e.g. {p / ('result' + (suffixes or ('',))[0])})."
        )
    if p.exists() and not p.is_file():
        raise OutputPathError(f"{what} {p} is not a regular file (a pipe, device or socket); give a file path.")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{what} must be a {' or '.join(suffixes)} path, got {p}.")
    _check_folder_on_the_way(p, what)
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"Cannot write {what} {p}: the file is not writable (permission denied).")
    return p


def output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """A folder results can be written into: an existing writable folder, or one that can be created."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise OutputPathError(f"{what} {p} is a file; give a folder.")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"Cannot write into {what} {p}: the folder is not writable (permission denied).")
        return p
    _check_folder_on_the_way(p, what)
    return p


def writable_dir(path: str | os.PathLike[str], what: str, hint: str = "") -> Path:
    """Create `path` if needed and write a probe file in it: the real test, for folders about to receive a
    long computation's output (it also catches read-only mounts and full disks that os.access cannot see)."""
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputPathError(f"{what} {p} is not writable ({reason}).{' ' + hint if hint else ''}") from None
    return p
