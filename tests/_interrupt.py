"""Ctrl-C in the middle of a run, for the resume tests: ``interrupt_after_lines(path, n)``
starts a thread that sends this process SIGINT once ``path`` holds ``n`` lines."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path


def interrupt_after_lines(path: Path, n: int, timeout_s: float = 120.0) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists() and len(path.read_text().splitlines()) >= n:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t
