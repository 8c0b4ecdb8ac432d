"""Crash-safe writes: a file or a directory appears under its final name complete, or not at all.

Results, sweep checkpoints, training checkpoints, assembled GGUF files and converted model directories all go
through here, so a killed process never leaves a half-written file that a later run would trust.

A temporary directory is named after the host and process that writes it (`.NAME.tmp-HOST-PID-XXXX`), so
one left behind by a killed process (SIGKILL during a GGUF conversion leaves hundreds of MB) is recognised
and removed by the next `atomic_directory` in the same folder, while one still being written is left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], *, text: bool = False,
                 shareable: bool = False) -> Path:  # fmt: skip
    """write(fileobj) into a temp file next to `path`, fsync, then rename it over `path`.

    text: open the file as UTF-8 text instead of bytes. shareable: make it world-readable (mkstemp files are
    private to their owner), for files meant to be handed around such as training checkpoints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") if text else os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if shareable:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_directory(target: Path, complete: str = "config.json") -> Iterator[Path]:
    """Yield an empty temp directory next to `target`; when the block ends, rename it to `target`.

    A directory counts as complete when it holds `complete`. An incomplete one left at `target` by a crash is
    replaced; a complete one written meanwhile by another process wins (ours is discarded). On error the temp
    directory is removed and nothing appears at `target`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{_host()}-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        if target.exists() and not (target / complete).is_file():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / complete).is_file():
                raise
            shutil.rmtree(tmp)  # another process finished the same work first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TEMP_DIR = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[^.]+$")
# A temporary directory written by another machine (a shared file system) is only judged by its age.
FOREIGN_MAX_AGE_S = 24 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep it
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary directories of `atomic_directory` in `folder` whose writer is gone: on this host
    a process that no longer exists, on another host one older than a day. Returns what was removed."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_DIR.match(entry.name)
        if m is None or not entry.is_dir() or entry.is_symlink():
            continue
        if m["host"] == _host():
            stale = not _alive(int(m["pid"]))
        else:
            try:
                stale = time.time() - entry.stat().st_mtime > FOREIGN_MAX_AGE_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
