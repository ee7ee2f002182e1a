"""Stopping a run cleanly: SIGTERM / Ctrl-C set a flag the loop reads after each step."""

from __future__ import annotations

import signal
from typing import Any


def install_stop_handlers(flag: list[str]) -> dict[int, Any]:
    """SIGTERM / SIGINT set ``flag``; the loop saves and stops after the current step.

    A second Ctrl-C interrupts immediately (the usual escape hatch).
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.append(name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    for sig, h in previous.items():
        signal.signal(sig, h)
