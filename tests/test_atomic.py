"""vlastack.atomic: a write replaces the file whole or not at all, and leaves no temporary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlastack import atomic


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "a.json"
    atomic.write_json(p, {"x": 1})
    atomic.write_json(p, {"x": 2}, durable=True)
    assert json.loads(p.read_text()) == {"x": 2}
    atomic.write_text(tmp_path / "b.txt", "hello")
    assert (tmp_path / "b.txt").read_text() == "hello"
    assert sorted(f.name for f in tmp_path.rglob("*") if f.is_file()) == ["a.json", "b.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.txt"
    atomic.write_text(p, "old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_text(p, "new")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


def test_staged_paths_are_unique_siblings(tmp_path: Path) -> None:
    a, b = atomic.staged_path(tmp_path / "x.bin"), atomic.staged_path(tmp_path / "x.bin")
    assert a != b and a.parent == b.parent == tmp_path
