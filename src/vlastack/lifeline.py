"""Child processes that die with the command that started them.

``vlastack collect --workers N`` and ``vlastack train --num_workers N`` start their workers
through multiprocessing's forkserver, so a worker's parent is the forkserver, not the command:
when the command is killed (kill -9, OOM killer) nothing tells the workers, and they, the
forkserver and the resource tracker (each kept alive by the workers' inherited pipes) would live
on. ``watch_parent(pid)``, called first thing in every worker, starts a daemon thread that
SIGKILLs the worker once process ``pid`` is gone (or a zombie); the forkserver and the tracker
then see their pipes close and exit on their own. Where the parent is the direct parent on
Linux, ``prctl(PR_SET_PDEATHSIG)`` makes the kernel do it at once as well.

``TerminatedError``/``raise_on_sigterm``: SIGTERM becomes an exception in the main thread, so a
command unwinds (``finally`` blocks shut its pools down) and says why it stopped.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


class TerminatedError(SystemExit):
    """SIGTERM arrived. A ``SystemExit`` (so no ``except Exception`` eats it) rather than a bare
    ``BaseException``: asyncio re-raises ``SystemExit``/``KeyboardInterrupt`` out of a task step,
    but stores any other ``BaseException`` in the task and keeps the loop running, so a SIGTERM
    landing inside a task of ``vlastack serve`` would otherwise be swallowed and serve never stop."""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) S ...": the state letter follows the last ')'
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def watch_parent(pid: int, poll_s: float = POLL_S) -> None:
    """In a worker: die (SIGKILL) as soon as process ``pid`` (the command) is gone."""
    if sys.platform.startswith("linux") and os.getppid() == pid:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not _alive(pid):
        _die()

    def watch() -> None:
        while _alive(pid):
            time.sleep(poll_s)
        _die()

    threading.Thread(target=watch, name="vlastack-parent-watch", daemon=True).start()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise TerminatedError("terminated (SIGTERM)")


def raise_on_sigterm() -> None:
    """From the main thread: SIGTERM raises ``TerminatedError`` there (no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


__all__ = ["TerminatedError", "raise_on_sigterm", "watch_parent"]
