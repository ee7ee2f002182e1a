"""Atomic file writes: the one helper every writer of vlastack uses.

A file is written to a temporary sibling (same folder, so the rename stays on one file system)
and renamed over its target with ``os.replace``, which is atomic on POSIX: a reader, or a process
killed mid-write, sees the old file or the new one, never a half-written one. ``durable=True``
also fsyncs the file and its folder, so the rename survives a power loss, not only a kill.

Writers that commit several files together (a dataset's episode, a checkpoint folder) stage them
with ``staged_path`` and rename them in their own order; the single-file case is ``write_bytes``
/ ``write_text`` / ``write_json``, or ``replacing`` where a library or a tool writes the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be
    opened (e.g. Windows)."""
    _fsync(path)


def fsync_file(path: str | Path) -> None:
    """Flush a written file's contents to disk (best effort: a no-op where that fails)."""
    _fsync(path)


def _fsync(path: str | Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staged_path(path: str | Path) -> Path:
    """A fresh temporary sibling of ``path`` (hidden, unique per call, ending in ``.tmp``) for a
    write to be renamed over ``path`` later; its folder is created, the file is not (so whoever
    writes it creates it with the usual permissions, not a private temp file's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def replacing(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a staged path for the caller (or a tool it runs) to write; when the block exits
    normally, rename it over ``path``; if it raises, remove it and leave ``path`` as it was."""
    path = Path(path)
    tmp = staged_path(path)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, then ``os.replace``)."""
    path = Path(path)
    with replacing(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | Path, text: str, *, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode(), durable=durable)


def write_json(path: str | Path, obj: Any, *, indent: int = 2, durable: bool = False) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n", durable=durable)


__all__ = [
    "fsync_dir",
    "fsync_file",
    "replacing",
    "staged_path",
    "write_bytes",
    "write_json",
    "write_text",
]
