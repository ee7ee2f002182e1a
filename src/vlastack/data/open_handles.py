"""Open decoders kept per process and per thread, the part both frame decoders share
(``video.VideoDecoder`` on PyAV, ``video_torchcodec.TorchCodecDecoder``).

A handle is not shared across processes (each DataLoader worker, a fork, notices the pid changed
and opens its own) nor across threads (a decoder's seek state is not thread-safe, and the
training loop's prefetch thread decodes while validation does too). Pickling keeps only the
settings, so a worker rebuilds an empty table.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any


class PerThreadHandles:
    """``_open``: this process and thread's {path: handle}; ``close`` empties it."""

    def __init__(self, tolerance_s: float = 1e-4, max_open: int = 64) -> None:
        self.tolerance_s = tolerance_s
        self.max_open = max_open
        self._pid = os.getpid()
        self._local = threading.local()

    @property
    def _open(self) -> dict[str, Any]:
        """This thread's open handles (a thread's are dropped when it ends)."""
        if os.getpid() != self._pid:
            self._local = threading.local()
            self._pid = os.getpid()
        table = getattr(self._local, "open", None)
        if table is None:
            table = self._local.open = {}
        return table

    def _close_handle(self, handle: Any) -> None:
        """Release one handle (default: nothing, the handle closes when dropped)."""

    def close(self) -> None:
        """Close this thread's handles."""
        for h in self._open.values():
            with contextlib.suppress(Exception):
                self._close_handle(h)
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"tolerance_s": self.tolerance_s, "max_open": self.max_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


__all__ = ["PerThreadHandles"]
