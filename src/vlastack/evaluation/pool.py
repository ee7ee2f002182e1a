"""Running many episodes: inline, or on an executor (process pool or Ray), with one retry each.

``run_jobs`` runs ``Job``s with ``EpisodeRunner``s: ``workers=0`` in this process (no crash
isolation); else on an executor (``vlastack.executors``: the default process pool, or Ray
tasks), each worker keeping one ``EvalWork`` (its policy and envs) and running one job at a
time. An episode whose run or worker crashed (or ran past ``episode_timeout_s``) is retried once,
then recorded as ``error``. A ``VlastackError`` while building the env or policy is a setup
mistake and stops the whole run. Finished episodes are appended to ``episodes.jsonl`` as they
come in, whichever executor runs them.
"""

from __future__ import annotations

import json
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError, VlastackError
from vlastack.evaluation.episode import EpisodeRunner, Job, RunSpec, error_record
from vlastack.evaluation.metrics import EpisodeRecord
from vlastack.executors import Executor, ExecutorChoice, make_executor

MAX_ATTEMPTS = 2  # the first try plus one retry


class EvalWork:
    """What one worker runs: builds an ``EpisodeRunner`` on its first job, then answers each
    ``Job`` with ``("done", key, record dict)``, ``("error", key, traceback)`` or, for a setup
    mistake, ``("fatal", key, (error class name, message))``. Picklable: it travels to spawned
    processes and Ray workers before its runner exists."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self._runner: EpisodeRunner | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "_runner": None}

    def __call__(self, job: Job) -> tuple[str, tuple[str, int], Any]:
        try:
            if self._runner is None:
                self._runner = EpisodeRunner(self.spec)
            self._runner.prepare(job.task)
        except VlastackError as exc:  # a setup mistake: stop the whole evaluation
            return ("fatal", job.key, (type(exc).__name__, str(exc)))
        except Exception:
            return ("error", job.key, traceback.format_exc(limit=8))
        try:
            return ("done", job.key, self._runner.run(job).to_dict())
        except Exception:
            return ("error", job.key, traceback.format_exc(limit=8))

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


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
    executor: ExecutorChoice | None = None,
) -> list[EpisodeRecord]:
    """Run ``jobs``; ``workers=0`` inline, else on ``executor`` (default: the process pool)."""
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
        if not jobs:  # a resumed run that had finished: nothing to start
            pass
        elif workers <= 0:
            _run_inline(spec, jobs, finish)
        else:
            choice = executor or ExecutorChoice()
            ex = make_executor(choice, EvalWork(spec), min(workers, len(jobs)), episode_timeout_s)
            try:
                run_on_executor(ex, jobs, finish)
            finally:
                ex.close()
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


def run_on_executor(ex: Executor, jobs: list[Job], finish: Callable[[EpisodeRecord], None]) -> None:
    """Keep every worker of ``ex`` busy with ``jobs``; retry a lost or failed episode once
    (before the remaining jobs), then record it as an error."""
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

    while remaining:
        while pending and ex.free() > 0:
            job = pending.popleft()
            job.attempts += 1
            ex.submit(job)
        messages, lost = ex.poll(timeout_s=0.5)
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
            if consecutive_deaths > 2 * ex.workers + 2:
                raise RuntimeError(
                    f"{consecutive_deaths} workers in a row died without finishing an episode "
                    f"(last: {why}). If evaluate() is called from a script, guard the call with "
                    "`if __name__ == '__main__':` (workers are spawned and re-import the main "
                    "module)."
                )
            failed(job, why)


__all__ = ["MAX_ATTEMPTS", "EvalWork", "run_jobs", "run_on_executor"]
