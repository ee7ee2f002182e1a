"""A worker crash for ``vlastack collect``, injected from the test side.

``crash_worker_at("ENV:ATTEMPT")`` wraps ``vlastack.envs.collect.run_episode``: in a worker
process (never in the parent) that attempt kills the process with ``os._exit(13)``, as a
segfaulting simulator would. Patch it over ``collect.run_episode`` in the parent; the pool
pickles the ``functools.partial`` (function by name, the crash spec by value), so each worker
runs the wrapper whichever start method it uses, and the wrapper calls the real function that
this module captured when it was imported (before any patch).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from typing import Any

from vlastack.envs import collect as _collect

_run_episode = _collect.run_episode


def _crashing_run_episode(
    crash_at: str, env_name: str, attempt: int, seed: int, options: dict[str, Any]
) -> Any:
    if crash_at == f"{env_name}:{attempt}" and mp.parent_process() is not None:
        os._exit(13)  # simulate a segfaulting simulator in a worker process
    return _run_episode(env_name, attempt, seed, options)


def crash_worker_at(crash_at: str) -> Any:
    """A picklable stand-in for ``run_episode`` whose attempt ``crash_at`` kills its worker."""
    return functools.partial(_crashing_run_episode, crash_at)
