"""Crash-safe writes (interp/core/files.py): nothing half-written ever appears under the final name."""

from __future__ import annotations

import pytest

from interp.core.files import atomic_directory, atomic_write


def test_atomic_write_text_bytes_and_failure(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write(path, lambda fh: fh.write("old"), text=True)
    assert path.read_text() == "old" and oct(path.stat().st_mode & 0o777) == "0o600"

    def crash(fh) -> None:
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert path.read_text() == "old"  # the earlier file stands, no temp file is left
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]
    atomic_write(path, lambda fh: fh.write(b"new"), shareable=True)
    assert path.read_bytes() == b"new" and oct(path.stat().st_mode & 0o777) == "0o644"


def test_atomic_directory_replaces_incomplete_keeps_complete_and_cleans_up(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "junk").write_text("a crash left this")  # incomplete: no config.json
    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]

    with atomic_directory(target) as tmp:  # a complete copy already there (another process) wins
        (tmp / "config.json").write_text('{"second": 1}')
    assert (target / "config.json").read_text() == "{}"

    other = tmp_path / "other"
    with pytest.raises(RuntimeError), atomic_directory(other) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed")
    assert not other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
