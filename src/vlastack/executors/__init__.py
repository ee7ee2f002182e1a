"""Where episodes run: the executor seam shared by ``vlastack eval`` and ``vlastack collect``.

An episode's work (``evaluation.pool.EvalWork``, ``envs.collect.CollectWork``) is a picklable
callable that a worker keeps and calls once per job; an ``Executor`` runs such calls somewhere
and hands back results as they arrive. The episode logic, the retry rule (one retry, then an
``error`` record) and the writing of results stay with the callers, so every executor gives the
same episodes. Two implementations:

* ``pool`` (default, nothing to start): ``process.ProcessExecutor``, one spawned process per
  worker on this machine, one job at a time each.
* ``ray``: ``ray_executor.RayExecutor``, the same calls as Ray tasks, on a local Ray instance
  started on demand (``num_cpus`` = workers) or on an existing cluster (``address``). Ray is the
  optional extra ``vlastack[ray]``.

Both take one job per worker at a time, so a worker that dies names the one episode it lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from vlastack.errors import ConfigError

EXECUTORS = ("pool", "ray")

# poll() returns (job, what the work returned) for finished jobs and (job, why) for lost ones.
Finished = list[tuple[Any, Any]]
Lost = list[tuple[Any, str]]


class Executor(Protocol):
    """Runs ``work(job)`` for submitted jobs, one job per worker at a time."""

    workers: int

    def free(self) -> int:
        """How many more jobs it takes now."""
        ...

    def submit(self, job: Any) -> None: ...

    def poll(self, timeout_s: float) -> tuple[Finished, Lost]:
        """Wait up to ``timeout_s`` for results; a job whose worker died, that raised out of the
        work, or that ran past the episode timeout comes back in ``Lost`` with the reason."""
        ...

    def close(self, abort: bool = False) -> None:
        """Stop the workers: let the jobs in flight finish (up to a deadline), or with ``abort``
        (SIGTERM, Ctrl-C) kill them now; the caller redoes unfinished jobs on resume."""
        ...


@dataclass(frozen=True)
class ExecutorChoice:
    """What ``--executor`` and ``--ray-address`` asked for."""

    kind: str = "pool"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"executor={self.kind!r}; expected one of {EXECUTORS}")
        if self.address and self.kind != "ray":
            raise ConfigError(
                f"ray_address={self.address!r} is for --executor ray; add --executor ray "
                "or drop --ray-address"
            )

    @property
    def label(self) -> str:
        return self.kind if not self.address else f"{self.kind}@{self.address}"


def as_choice(executor: str | ExecutorChoice | None, address: str | None = None) -> ExecutorChoice:
    if isinstance(executor, ExecutorChoice):
        if address and address != executor.address:
            raise ConfigError("give the Ray address once: in the ExecutorChoice or as ray_address")
        return executor
    return ExecutorChoice(executor or "pool", address)


def make_executor(
    choice: ExecutorChoice,
    work: Callable[[Any], Any],
    workers: int,
    episode_timeout_s: float | None = None,
    start_method: str = "spawn",
) -> Executor:
    """An executor of ``choice.kind`` running ``work`` on ``workers`` workers."""
    if workers < 1:
        raise ConfigError(f"workers={workers}: an executor needs at least one worker")
    if choice.kind == "ray":
        from vlastack.executors.ray_executor import RayExecutor

        return RayExecutor(work, workers, episode_timeout_s, address=choice.address)
    from vlastack.executors.process import ProcessExecutor

    return ProcessExecutor(work, workers, episode_timeout_s, start_method=start_method)


@contextlib.contextmanager
def executor_session(choice: ExecutorChoice, workers: int) -> Iterator[None]:
    """Around several evaluations (the suites): with Ray, start or reach it once for all."""
    if choice.kind != "ray":
        yield
        return
    from vlastack.executors.ray_executor import ray_session

    with ray_session(choice.address, max(1, workers)):
        yield


__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorChoice",
    "Finished",
    "Lost",
    "as_choice",
    "executor_session",
    "make_executor",
]
