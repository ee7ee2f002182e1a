"""Running many episodes: inline, or in a pool of spawned worker processes, with one retry each.

``run_jobs`` hands ``Job``s to ``EpisodeRunner``s (``workers=0``: in this process, no crash
isolation; else ``WorkerPool``: one spawned process per worker, one job at a time each), retries
an episode whose run or worker crashed (or ran past ``episode_timeout_s``) once, then records it
as ``error``. A ``VlastackError`` while building the env or policy is a setup mistake and stops
the whole run. Finished episodes are appended to ``episodes.jsonl`` as they come in.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError, VlastackError
from vlastack.evaluation.episode import EpisodeRunner, Job, RunSpec, error_record
from vlastack.evaluation.metrics import EpisodeRecord

MAX_ATTEMPTS = 2  # the first try plus one retry


def _worker_main(spec: RunSpec, jobs: Any, results: Any) -> None:
    from vlastack.lifeline import watch_parent

    watch_parent(os.getppid())  # spawned by the evaluating process: die with it
    os.environ.setdefault("MUJOCO_GL", "egl")
    runner = EpisodeRunner(spec)
    while True:
        try:
            job = jobs.recv()
        except EOFError:  # the parent went away
            break
        if job is None:
            break
        try:
            runner.prepare(job.task)
        except VlastackError as exc:  # a setup mistake: stop the whole evaluation
            results.send(("fatal", job.key, (type(exc).__name__, str(exc))))
            continue
        except Exception:
            results.send(("error", job.key, traceback.format_exc(limit=8)))
            continue
        try:
            rec = runner.run(job)
            results.send(("done", job.key, rec.to_dict()))
        except Exception:
            results.send(("error", job.key, traceback.format_exc(limit=8)))
    runner.close()


@dataclass
class _Worker:
    proc: Any
    jobs: Any  # parent's sending end of the job pipe
    results: Any  # parent's receiving end of the result pipe
    job: Job | None = None
    since: float = 0.0


class WorkerPool:
    """N spawned workers, one job at a time each, so a dead worker names the episode it held.

    Each worker has its own pair of pipes (no queue shared between processes): a worker that dies
    mid-write cannot leave a shared lock held and stall the others, and ``connection.wait`` on
    the result pipes and process sentinels notices both results and deaths at once.
    """

    def __init__(self, spec: RunSpec, workers: int, episode_timeout_s: float | None) -> None:
        self.ctx = mp.get_context("spawn")
        self.spec = spec
        self.timeout_s = episode_timeout_s
        self.workers: list[_Worker] = [self._start() for _ in range(workers)]

    def _start(self) -> _Worker:
        job_r, job_w = self.ctx.Pipe(duplex=False)
        res_r, res_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_main, args=(self.spec, job_r, res_w), daemon=True)
        proc.start()
        job_r.close()  # the child holds its own copies
        res_w.close()
        return _Worker(proc, job_w, res_r)

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.job is None]

    def submit(self, w: _Worker, job: Job) -> None:
        w.job, w.since = job, time.monotonic()
        w.jobs.send(job)

    def poll(self, timeout_s: float) -> tuple[list[tuple[Job, Any]], list[tuple[Job, str]]]:
        """Wait for results; returns (job, message) pairs and (job, reason) for lost jobs."""
        from multiprocessing.connection import wait

        busy = [w for w in self.workers if w.job is not None]
        handles = [w.results for w in busy] + [w.proc.sentinel for w in busy]
        ready = set(wait(handles, timeout=timeout_s)) if handles else set()
        messages, lost = [], []
        now = time.monotonic()
        for i, w in enumerate(self.workers):
            if w.job is None:
                if not w.proc.is_alive():
                    self.workers[i] = self._start()
                continue
            msg = None
            if w.results in ready or w.proc.sentinel in ready:
                try:
                    if w.results.poll():
                        msg = w.results.recv()
                except (EOFError, OSError):
                    msg = None
            if msg is not None:
                messages.append((w.job, msg))
                w.job = None
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
            self.workers[i] = self._start()
        return messages, lost

    @staticmethod
    def _discard(w: _Worker) -> None:
        for conn in (w.jobs, w.results):
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(OSError, BrokenPipeError):
                w.jobs.send(None)
        deadline = time.monotonic() + 10
        for w in self.workers:
            w.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            self._discard(w)


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="episodes", unit="ep", disable=not enabled, dynamic_ncols=True)


def run_jobs(
    spec: RunSpec,
    jobs: list[Job],
    workers: int,
    episode_timeout_s: float | None,
    progress: bool,
    out: Path | None,
) -> list[EpisodeRecord]:
    records: list[EpisodeRecord] = []
    bar = _progress_bar(len(jobs), progress)
    n_success = 0

    def finish(rec: EpisodeRecord) -> None:
        nonlocal n_success
        records.append(rec)
        n_success += rec.status == "success"
        if out:  # append as we go so that an interrupted run keeps its finished episodes
            with open(out / "episodes.jsonl", "a") as f:
                f.write(json.dumps(rec.to_dict()) + "\n")
        done = sum(r.status != "error" for r in records)
        bar.set_postfix(success=f"{n_success}/{done}", errors=len(records) - done)
        bar.update(1)

    try:
        if workers <= 0:
            _run_inline(spec, jobs, finish)
        else:
            _run_pool(spec, jobs, workers, episode_timeout_s, finish)
    finally:
        bar.close()
    return records


def _run_inline(spec: RunSpec, jobs: list[Job], finish: Callable[[EpisodeRecord], None]) -> None:
    runner = EpisodeRunner(spec)
    try:
        for job in jobs:
            while True:
                job.attempts += 1
                try:
                    runner.prepare(job.task)
                except VlastackError:  # a setup mistake: stop the whole evaluation
                    raise
                except Exception:
                    err = traceback.format_exc(limit=8)
                else:
                    try:
                        rec = runner.run(job)
                    except Exception:
                        err = traceback.format_exc(limit=8)
                    else:
                        finish(rec)
                        break
                if job.attempts >= MAX_ATTEMPTS:
                    finish(error_record(job, err))
                    break
    finally:
        runner.close()


def _reraise(name: str, message: str) -> None:
    import vlastack.errors as errors

    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, VlastackError):
        try:
            raise cls(message)
        except TypeError:
            pass
    raise ConfigError(message)


def _run_pool(
    spec: RunSpec,
    jobs: list[Job],
    workers: int,
    episode_timeout_s: float | None,
    finish: Callable[[EpisodeRecord], None],
) -> None:
    pool = WorkerPool(spec, min(workers, len(jobs)), episode_timeout_s)
    pending = deque(jobs)
    remaining = len(jobs)
    consecutive_deaths = 0

    def failed(job: Job, why: str) -> None:
        nonlocal remaining
        if job.attempts >= MAX_ATTEMPTS:
            finish(error_record(job, why))
            remaining -= 1
        else:
            pending.appendleft(job)  # retry once, before the remaining jobs

    try:
        while remaining:
            for w in pool.idle():
                if not pending:
                    break
                job = pending.popleft()
                job.attempts += 1
                pool.submit(w, job)
            messages, lost = pool.poll(timeout_s=0.5)
            for job, (kind, _key, payload) in messages:
                consecutive_deaths = 0
                if kind == "fatal":
                    _reraise(*payload)
                elif kind == "done":
                    rec = EpisodeRecord.from_dict(payload)
                    rec.attempts = job.attempts
                    finish(rec)
                    remaining -= 1
                else:
                    failed(job, payload)
            for job, why in lost:
                consecutive_deaths += 1
                if consecutive_deaths > 2 * len(pool.workers) + 2:
                    raise RuntimeError(
                        f"{consecutive_deaths} worker processes in a row died without finishing "
                        f"an episode (last: {why}). If evaluate() is called from a script, guard "
                        "the call with `if __name__ == '__main__':` (workers are spawned and "
                        "re-import the main module)."
                    )
                failed(job, why)
    finally:
        pool.close()


__all__ = ["MAX_ATTEMPTS", "WorkerPool", "run_jobs"]
