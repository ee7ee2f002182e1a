"""Atomic file writes: the one helper every writer of vlastack uses.

A file is written to a temporary sibling (same folder, so the rename stays on one file system)
and renamed over its target with ``os.replace``, which is atomic on POSIX: a reader, or a process
killed mid-write, sees the old file or the new one, never a half-written one. ``durable=True``
also fsyncs the file and its folder, so the rename survives a power loss, not only a kill.

Writers that commit several files together (a dataset's episode, a checkpoint folder) stage them
with ``staged_path`` and rename them in their own order; the single-file case is ``write_bytes``
/ ``write_text`` / ``write_json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be
    opened (e.g. Windows)."""
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
    """A fresh temporary sibling of ``path`` (hidden, unique per call) for a write to be renamed
    over ``path`` later."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, then ``os.replace``)."""
    path = Path(path)
    tmp = staged_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str, *, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode(), durable=durable)


def write_json(path: str | Path, obj: Any, *, indent: int = 2, durable: bool = False) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n", durable=durable)


__all__ = ["fsync_dir", "staged_path", "write_bytes", "write_json", "write_text"]
