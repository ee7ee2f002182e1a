"""``--executor ray``: episodes as Ray tasks, on a local Ray instance or an existing cluster.

Each job is one Ray task (one CPU, no Ray-side retries: the caller retries a lost episode once,
as with the process pool). The work object is put in Ray's object store once; a Ray worker
process keeps the first copy it sees (keyed by a token per run), so a policy and its envs are
built once per worker process, as in the pool, not once per episode.

Without ``address`` a local Ray instance is started with ``num_cpus=workers`` and shut down at
``close()``; with ``address`` (``ray://host:10001`` or ``host:6379``) the tasks run on that
cluster, where vlastack (and the simulators) must be installed. A Ray already initialised in
this process is used as it is. ``VLASTACK_*`` and ``MUJOCO_GL`` variables travel with each task
(``runtime_env``), as a spawned pool worker inherits them.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from vlastack.errors import ConfigError
from vlastack.executors import Finished, Lost

_WORKS: dict[str, Any] = {}  # in a Ray worker process: token -> the work it keeps


def _run_job(token: str, work: Callable[[Any], Any], job: Any) -> Any:
    """The Ray task: run ``job`` with this process's copy of the run's work."""
    kept = _WORKS.get(token)
    if kept is None:
        for old in list(_WORKS):  # a previous run's policy and envs: release them
            close = getattr(_WORKS.pop(old), "close", None)
            if close is not None:
                close()
        os.environ.setdefault("MUJOCO_GL", "egl")
        kept = _WORKS[token] = work
    return kept(job)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, an optional extra: pip install 'vlastack[ray]' "
            "(or use the default --executor pool)"
        ) from None
    return ray


def init_ray(address: str | None, workers: int) -> None:
    """Start a local Ray instance with ``workers`` CPUs, or connect to the one at ``address``."""
    ray = import_ray()
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=workers, **kw)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ConfigError(
            f"could not start or reach {where}: {exc}; check --ray-address "
            "(host:6379 or ray://host:10001) or drop it to start a local instance"
        ) from exc


@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[None]:
    """Ray up for the whole block (several evaluations share it), shut down after it unless it
    was already up."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    init_ray(address, workers)
    try:
        yield
    finally:
        ray.shutdown()


def _env_vars() -> dict[str, str]:
    keep = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "HF_HUB_OFFLINE")
    return {k: v for k, v in os.environ.items() if k.startswith("VLASTACK_") or k in keep}


class RayExecutor:
    """``workers`` concurrent Ray tasks running ``work(job)``."""

    def __init__(
        self,
        work: Callable[[Any], Any],
        workers: int,
        episode_timeout_s: float | None,
        address: str | None = None,
    ) -> None:
        ray = self.ray = import_ray()
        self.workers = workers
        self.timeout_s = episode_timeout_s
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            init_ray(address, workers)
        self._task = ray.remote(num_cpus=1, max_retries=0)(_run_job).options(
            runtime_env={"env_vars": _env_vars()}
        )
        self._token = uuid.uuid4().hex
        self._work_ref = ray.put(work)
        self._inflight: dict[Any, tuple[Any, float]] = {}  # ObjectRef -> (job, started)

    def free(self) -> int:
        return self.workers - len(self._inflight)

    def submit(self, job: Any) -> None:
        ref = self._task.remote(self._token, self._work_ref, job)
        self._inflight[ref] = (job, time.monotonic())

    def poll(self, timeout_s: float) -> tuple[Finished, Lost]:
        ray = self.ray
        finished: Finished = []
        lost: Lost = []
        if not self._inflight:
            return finished, lost
        refs = list(self._inflight)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:  # and whatever else is done by now
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            job, _since = self._inflight.pop(ref)
            try:
                finished.append((job, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # the work raised out of itself
                lost.append((job, f"{exc.cause!r}" if exc.cause else str(exc)))
            except ray.exceptions.RayError as exc:  # the worker process died, or Ray lost it
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                lost.append((job, f"worker process died ({type(exc).__name__}: {first})"))
            except Exception:
                lost.append((job, traceback.format_exc(limit=4)))
        if self.timeout_s is not None:
            now = time.monotonic()
            for ref, (job, since) in list(self._inflight.items()):
                if now - since > self.timeout_s:
                    ray.cancel(ref, force=True)  # kills the worker running it
                    del self._inflight[ref]
                    lost.append((job, f"episode exceeded {self.timeout_s} s"))
        return finished, lost

    def close(self, abort: bool = False) -> None:
        ray = self.ray  # in-flight tasks are force-cancelled either way
        for ref in list(self._inflight):
            ray.cancel(ref, force=True)
        self._inflight.clear()
        if self.owns_ray:
            ray.shutdown()


__all__ = ["RayExecutor", "import_ray", "init_ray", "ray_session"]
