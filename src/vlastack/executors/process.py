"""The default executor: N spawned worker processes on this machine, one job at a time each.

Each worker gets the work once (pickled at start), then jobs one by one over its own pipe. Each
worker has its own pair of pipes (no queue shared between processes): a worker that dies
mid-write cannot leave a shared lock held and stall the others, and ``connection.wait`` on the
result pipes and process sentinels notices both results and deaths at once. A dead or timed-out
worker is replaced and its job reported lost.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlastack.executors import Finished, Lost


class _Raised:
    """Sent instead of a result when the work itself raised (its own bug, not the episode's)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _worker_main(work: Callable[[Any], Any], jobs: Any, results: Any) -> None:
    from vlastack.lifeline import watch_parent

    watch_parent(os.getppid())  # spawned by the evaluating/collecting process: die with it
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        while True:
            try:
                job = jobs.recv()
            except EOFError:  # the parent went away
                break
            if job is None:
                break
            try:
                out = work(job)
            except Exception:
                out = _Raised(traceback.format_exc(limit=8))
            results.send(out)
    finally:
        close = getattr(work, "close", None)
        if close is not None:
            close()


@dataclass
class _Worker:
    proc: Any
    jobs: Any  # parent's sending end of the job pipe
    results: Any  # parent's receiving end of the result pipe
    job: Any = None
    busy: bool = False
    since: float = 0.0


class ProcessExecutor:
    """``workers`` processes started with ``start_method``, each running ``work(job)``."""

    def __init__(
        self,
        work: Callable[[Any], Any],
        workers: int,
        episode_timeout_s: float | None,
        start_method: str = "spawn",
    ) -> None:
        self.ctx: Any = mp.get_context(start_method)
        self.work = work
        self.workers = workers
        self.timeout_s = episode_timeout_s
        self._pool: list[_Worker] = [self._start() for _ in range(workers)]

    def _start(self) -> _Worker:
        job_r, job_w = self.ctx.Pipe(duplex=False)
        res_r, res_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_main, args=(self.work, job_r, res_w), daemon=True)
        proc.start()
        job_r.close()  # the child holds its own copies
        res_w.close()
        return _Worker(proc, job_w, res_r)

    def free(self) -> int:
        return sum(not w.busy for w in self._pool)

    def submit(self, job: Any) -> None:
        w = next(w for w in self._pool if not w.busy)
        w.job, w.busy, w.since = job, True, time.monotonic()
        w.jobs.send(job)

    def poll(self, timeout_s: float) -> tuple[Finished, Lost]:
        from multiprocessing.connection import wait

        busy = [w for w in self._pool if w.busy]
        handles = [w.results for w in busy] + [w.proc.sentinel for w in busy]
        ready = set(wait(handles, timeout=timeout_s)) if handles else set()
        finished: Finished = []
        lost: Lost = []
        now = time.monotonic()
        for i, w in enumerate(self._pool):
            if not w.busy:
                if not w.proc.is_alive():
                    self._pool[i] = self._start()
                continue
            got, msg = False, None
            if w.results in ready or w.proc.sentinel in ready:
                try:
                    if w.results.poll():
                        msg, got = w.results.recv(), True
                except (EOFError, OSError):
                    got = False
            if got:
                job, w.job, w.busy = w.job, None, False
                if isinstance(msg, _Raised):
                    lost.append((job, msg.text))
                else:
                    finished.append((job, msg))
                continue
            timed_out = self.timeout_s is not None and now - w.since > self.timeout_s
            if w.proc.is_alive() and not timed_out:
                continue
            if timed_out:
                w.proc.kill()
            w.proc.join(timeout=5)
            why = (
                f"episode exceeded {self.timeout_s} s"
                if timed_out
                else f"worker process died (exit code {w.proc.exitcode})"
            )
            lost.append((w.job, why))
            self._discard(w)
            self._pool[i] = self._start()
        return finished, lost

    @staticmethod
    def _discard(w: _Worker) -> None:
        for conn in (w.jobs, w.results):
            with contextlib.suppress(OSError):
                conn.close()

    def close(self, abort: bool = False) -> None:
        if abort:
            for w in self._pool:
                w.proc.kill()
        for w in self._pool:
            with contextlib.suppress(OSError, BrokenPipeError):
                w.jobs.send(None)
        deadline = time.monotonic() + 10
        for w in self._pool:
            w.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            self._discard(w)


__all__ = ["ProcessExecutor"]
