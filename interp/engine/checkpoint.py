"""Resumable sweeps: finished (group, prompt) rows checkpointed to disk, append-only and crash-safe.

A checkpoint is a directory:

    manifest.json      what the sweep is (model, prompts, heads, intervention, score function): a resumed
                       sweep must match it exactly, or it is refused (never mixes two different sweeps)
    part-000001.npz    one flush of finished rows: group index, prompt index, and the value
    part-000002.npz    (per-prompt score) or the intervened readout (dataset-level score functions)

Every file is written to a temporary name in the same directory and then renamed (`os.replace`, atomic on
POSIX and Windows), so an interrupted run (Ctrl+C, a crash, a killed job) leaves only whole files; a stray
temporary file is ignored on resume. Rows are flushed every `every` seconds and whenever the sweep stops,
also by an exception, so at most `every` seconds of work are lost to a hard kill (SIGKILL, power loss).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from interp.core.errors import InterpError
from interp.core.files import atomic_write

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class CheckpointError(InterpError):
    """A checkpoint that belongs to a different sweep, or is unreadable."""


class SweepCheckpoint:
    """Finished rows of one sweep on disk. `fingerprint` is a JSON-able description of the sweep."""

    def __init__(self, directory: str | os.PathLike[str], fingerprint: dict[str, Any], every: float = 60.0) -> None:
        if every < 0:
            raise InterpError(f"checkpoint_every must be >= 0 seconds, got {every}.")
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise CheckpointError(f"Checkpoint path {self.dir} exists and is not a directory.")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples to lists
        self.every = every
        self._buffer: list[tuple[int, int, np.ndarray]] = []
        self._last_flush = time.monotonic()
        self._check_or_write_manifest()
        self._next_part = 1 + max((self._part_number(p) for p in self._parts()), default=0)

    # ---- manifest -----------------------------------------------------------------------------------------
    def _check_or_write_manifest(self) -> None:
        path = self.dir / MANIFEST
        if not path.exists():
            if self._parts():
                raise CheckpointError(f"Checkpoint {self.dir} has result parts but no {MANIFEST}; delete it.")
            payload = {"format_version": FORMAT_VERSION, "sweep": self.fingerprint}
            atomic_write(path, lambda fh: fh.write(json.dumps(payload, indent=1).encode()))
            return
        try:
            stored = json.loads(path.read_text())["sweep"]
            if not isinstance(stored, dict):
                raise KeyError("sweep")
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
            raise CheckpointError(f"Checkpoint manifest {path} is unreadable ({exc}); delete {self.dir}.") from exc
        differ = sorted(k for k in set(stored) | set(self.fingerprint) if stored.get(k) != self.fingerprint.get(k))
        if differ:
            raise CheckpointError(
                f"Checkpoint {self.dir} belongs to a different sweep (differs in: {', '.join(differ)}). "
                "Use a new checkpoint directory, or delete this one to start over."
            )

    # ---- parts --------------------------------------------------------------------------------------------
    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.npz"))

    @staticmethod
    def _part_number(path: Path) -> int:
        try:
            return int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            return 0

    def load(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """Every finished row: (group index, prompt index, value [] or readout [...])."""
        for part in self._parts():
            try:
                with np.load(part, allow_pickle=False) as data:
                    groups, prompts, values = data["groups"], data["prompts"], data["values"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated: BadZipFile
                raise CheckpointError(
                    f"Checkpoint part {part} is unreadable ({exc}); delete that file to redo its rows."
                ) from exc
            yield from zip(groups.tolist(), prompts.tolist(), values, strict=True)

    def add(self, group: int, prompt: int, value: np.ndarray) -> None:
        self._buffer.append((group, prompt, np.asarray(value)))

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one new part (atomically)."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        groups = np.array([g for g, _, _ in self._buffer], dtype=np.int64)
        prompts = np.array([p for _, p, _ in self._buffer], dtype=np.int64)
        values = np.stack([v for _, _, v in self._buffer])
        path = self.dir / f"part-{self._next_part:06d}.npz"
        atomic_write(path, lambda fh: np.savez(fh, groups=groups, prompts=prompts, values=values))
        self._next_part += 1
        self._buffer.clear()
