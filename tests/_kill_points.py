"""Kill a process at its k-th file-system event, for the kill tests' helper scripts (each runs the
operation under test in a forked child, once to count the events, then once per event with a
SIGKILL there). ``before(fn)`` counts a call of ``fn`` as an event; ``half_write(real)`` counts a
write and, when it is the one to die at, writes half of the data first (a torn file)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any


class KillPoints:
    def __init__(self) -> None:
        self.events = 0  # events seen so far in this process
        self.kill_at = -1  # the event to die at (-1: never)

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def event(self) -> bool:
        """True at the event to die at; else count it."""
        if self.events == self.kill_at:
            return True
        self.events += 1
        return False

    def before(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            if self.event():
                self.die()
            return fn(*a, **kw)

        return wrapped

    def half_write(self, real: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def write(target: Any, data: Any) -> Any:
            if self.event():
                real(target, data[: len(data) // 2])
                self.die()
            return real(target, data)

        return write
