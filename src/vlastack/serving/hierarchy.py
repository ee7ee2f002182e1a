"""Two rates: a slow high level (System 2) naming the subtask, a fast low level (System 1) acting.

For a policy whose model was built with ``hierarchy=True`` (``models/hierarchy.py``; the
``hierarchy`` recipe), anything with ``infer_high_level(obs) -> {"subtask": str}`` and
``infer(obs)`` that reads ``obs["subtask"]`` (``vlastack.policy.Policy``):

- ``HierarchicalRuntime``: in-process, one ``step(obs)`` per control tick. The high level runs on
  the first tick and then every ``control_hz / high_level_hz`` ticks; every tick goes through an
  inner strategy (``sync``, ``ensemble``, ``async``, ``rtc``) whose chunk requests carry the
  latest subtask. Ticks are ``step()`` calls, or with ``clock`` wall-clock ticks at
  ``control_hz`` (a stalled loop skips ticks; the high level runs once when its time has come,
  never twice to catch up).
- ``TwoRatePolicy``: what ``vlastack serve --high-level-hz`` serves. Each connection (a
  ``PolicyServer`` session) runs the high level when ``1 / high_level_hz`` seconds of ``clock``
  have passed since its last run, and the low level on every request with the latest subtask. The
  reply is the plain one (``actions``: a plain openpi client reads only that) plus ``subtask`` and
  ``high_level_ran`` for logging.

Where System 2 runs (``HierarchicalRuntime(high_level_async=...)``, ``--high-level-async`` on
``eval`` and ``robot``):

- **synchronous** (the default): in the caller's thread on its tick; that tick's low level waits
  for it. Deterministic: the subtask of every tick depends only on the observations, never on
  timing, so an evaluation repeats exactly, and System 1 always acts on a subtask computed from
  the observation of the tick it was asked on (as in training, where each window's own label is
  teacher-forced).
- **background**: on its tick System 2 starts in a thread of its own (one in flight at most: a
  due tick while one runs is skipped and counted) and the tick goes on with the current subtask;
  the subtask switches on the first tick after System 2 finished. A slow System 2 then never
  stalls a System 1 tick, at the price of acting a little longer on the old subtask and of
  timing-dependent results. Only the first tick of an episode waits (there is no subtask yet).
  A System 2 exception is raised from the next ``step`` as ``HighLevelError``; ``reset`` waits
  for a run in flight and drops it, ``close`` joins the thread.

Torch-free, like ``runtime.py``.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.serving.runtime import ActionRuntime, make_runtime

SUBTASK_KEY = "subtask"  # = vlastack.models.hierarchy.SUBTASK_KEY (this module stays torch-free)


def check_rates(high_level_hz: float, control_hz: float | None = None) -> None:
    if not high_level_hz > 0:
        raise ConfigError(f"--high-level-hz must be > 0, got {high_level_hz}")
    if control_hz is not None:
        if not control_hz > 0:
            raise ConfigError(f"--control-hz must be > 0, got {control_hz}")
        if high_level_hz > control_hz:
            raise ConfigError(
                f"--high-level-hz {high_level_hz:g} is faster than --control-hz {control_hz:g}: "
                "the high level is the slow one; lower it or raise the control rate"
            )


def check_hierarchical(policy: Any) -> None:
    if not getattr(policy, "supports_hierarchy", False) or not callable(
        getattr(policy, "infer_high_level", None)
    ):
        raise ConfigError(
            f"{getattr(policy, 'source', type(policy).__name__)} has no high level to run at "
            "--high-level-hz: train a model with hierarchy=True (`vlastack train --recipe "
            "hierarchy`), or drop --high-level-hz"
        )


class HighLevelSchedule:
    """``due(now)``: True at the first call, then once per ``period`` (in the units of ``now``:
    ticks or seconds) on a fixed grid; periods missed during a stall are skipped."""

    def __init__(self, period: float) -> None:
        if not period > 0:
            raise ConfigError(f"high-level period must be > 0, got {period}")
        self.period = float(period)
        self._next: float | None = None

    def reset(self) -> None:
        self._next = None

    def due(self, now: float) -> bool:
        eps = 1e-9 * max(1.0, abs(now))
        if self._next is not None and now < self._next - eps:
            return False
        start = now if self._next is None else self._next
        self._next = start + (math.floor((now - start) / self.period + eps) + 1) * self.period
        return True


class HighLevelError(RuntimeError):
    """System 2 (``infer_high_level``) raised in the background thread; the cause is chained."""


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


class HierarchicalRuntime(ActionRuntime):
    """The high level every ``control_hz / high_level_hz`` ticks, the inner ``strategy`` every
    tick on the latest subtask. ``subtask`` is the current one; ``high_level_ticks`` the ticks at
    which the high level ran (background: was started); ``tick_ms`` the wall time of every
    ``step`` (both levels and the inner strategy); ``high_level_ms`` of every System 2 call."""

    name = "hierarchy"

    def __init__(
        self,
        policy: Any,
        strategy: str = "sync",
        *,
        high_level_hz: float = 1.0,
        control_hz: float = 20.0,
        high_level_async: bool = False,
        clock: Callable[[], float] | None = None,
        executor: Any | None = None,
        **strategy_kwargs: Any,
    ) -> None:
        check_rates(high_level_hz, control_hz)
        check_hierarchical(policy)
        super().__init__(policy, executor=executor, clock=clock)
        self.control_hz = float(control_hz)
        self.high_level_hz = float(high_level_hz)
        self.high_level_async = bool(high_level_async)
        self._wall_clock = clock  # None: a tick is one step() call
        if strategy in ("async", "rtc"):
            strategy_kwargs.setdefault("control_hz", control_hz if clock is not None else None)
            strategy_kwargs["clock"] = self.clock
            if executor is not None:
                strategy_kwargs["executor"] = executor
        elif executor is not None:
            strategy_kwargs["executor"] = executor
        self.inner = make_runtime(strategy, policy, **strategy_kwargs)
        self.strategy = strategy
        self.schedule = HighLevelSchedule(self.control_hz / self.high_level_hz)
        self.subtask: str | None = None
        self.high_level_ticks: list[int] = []
        self.high_level_skipped = 0  # background: due ticks skipped, one was still running
        self.high_level_ms: list[float] = []
        self.tick_ms: list[float] = []
        self._calls = 0
        self._t0: float | None = None
        self._s2_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._s2: tuple[int, concurrent.futures.Future] | None = None  # (tick, run in flight)
        if self.high_level_async:
            self._s2_pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="vlastack-system2"
            )

    @property
    def num_inferences(self) -> int:  # type: ignore[override]
        return int(self.inner.num_inferences)

    @num_inferences.setter
    def num_inferences(self, value: int) -> None:  # the base class sets 0
        pass

    @property
    def high_level_runs(self) -> int:
        return len(self.high_level_ticks)

    def _tick(self) -> int:
        if self._wall_clock is None:
            tick = self._calls
        else:
            now = self._wall_clock()
            if self._t0 is None:
                self._t0 = now
            tick = int((now - self._t0) * self.control_hz + 0.5)
        self._calls += 1
        return tick

    def _wait_in_flight(self) -> None:
        """Let a background run in flight finish and drop it (its subtask is stale)."""
        if self._s2 is not None:
            concurrent.futures.wait([self._s2[1]])
            self._s2 = None

    def reset(self) -> None:
        self._wait_in_flight()
        self.inner.reset()
        self.schedule.reset()
        self.subtask = None
        self.high_level_ticks.clear()
        self.high_level_ms.clear()
        self.tick_ms.clear()
        self.high_level_skipped = 0
        self._calls = 0
        self._t0 = None
        self.last_chunk_id = -1

    def _run_high_level(self, obs: dict) -> str:
        policy: Any = self.policy  # checked at construction (check_hierarchical)
        t0 = time.perf_counter()
        subtask = str(policy.infer_high_level(obs)[SUBTASK_KEY])
        self.high_level_ms.append((time.perf_counter() - t0) * 1e3)
        return subtask

    def _collect(self, block: bool) -> None:
        """Background: take the subtask of a finished run (waiting for it with ``block``)."""
        if self._s2 is None or (not block and not self._s2[1].done()):
            return
        (tick, future), self._s2 = self._s2, None
        try:
            self.subtask = future.result()
        except Exception as exc:
            raise HighLevelError(
                f"System 2 (infer_high_level of {getattr(self.policy, 'source', '')!s} "
                f"{type(self.policy).__name__}) failed in the background on the observation of "
                f"tick {tick}: {type(exc).__name__}: {exc}"
            ) from exc

    def _high_level(self, tick: int, obs: dict) -> None:
        if self._s2_pool is None:
            if self.schedule.due(tick):
                self.subtask = self._run_high_level(obs)
                self.high_level_ticks.append(tick)
            return
        self._collect(block=False)
        if self.schedule.due(tick):
            if self._s2 is not None:
                self.high_level_skipped += 1
            else:
                self._s2 = (tick, self._s2_pool.submit(self._run_high_level, dict(obs)))
                self.high_level_ticks.append(tick)
        if self.subtask is None:  # the episode's first tick: nothing to act on yet
            self._collect(block=True)

    def step(self, obs: dict) -> np.ndarray:
        t0 = time.perf_counter()
        self._high_level(self._tick(), obs)
        action = self.inner.step({**obs, SUBTASK_KEY: self.subtask})
        self.last_chunk_id = self.inner.last_chunk_id
        self.tick_ms.append((time.perf_counter() - t0) * 1e3)
        return action

    def summary(self) -> dict[str, Any]:
        """The rates used, how often System 2 ran and what ticks cost (for episode records)."""
        return two_rate_summary([self])

    def close(self, wait: bool = True) -> None:
        """Stop the inner strategy and the System 2 thread. ``wait=False`` abandons a run in
        flight (its thread ends when that call returns) instead of joining it."""
        self.inner.close()
        if self._s2_pool is not None:
            self._s2_pool.shutdown(wait=wait, cancel_futures=True)
            self._s2_pool = None
            self._s2 = None


def two_rate_summary(runtimes: list[HierarchicalRuntime]) -> dict[str, Any]:
    """One summary of the runtimes an episode used (a runner rebuilds its runtime after an
    error): the rates, System 2 runs and skips, and tick / System 2 wall times in ms."""
    first = runtimes[0]
    ticks = [t for rt in runtimes for t in rt.tick_ms]
    high = [t for rt in runtimes for t in rt.high_level_ms]
    return {
        "high_level_hz": first.high_level_hz,
        "control_hz": first.control_hz,
        "high_level_async": first.high_level_async,
        "strategy": first.strategy,
        "high_level_runs": sum(rt.high_level_runs for rt in runtimes),
        "high_level_skipped": sum(rt.high_level_skipped for rt in runtimes),
        "high_level_ms_p50": percentile_ms(high, 50),
        "ticks": len(ticks),
        "tick_ms_p50": percentile_ms(ticks, 50),
        "tick_ms_p99": percentile_ms(ticks, 99),
        "tick_ms_max": percentile_ms(ticks, 100),
    }


class _TwoRateSession:
    """One connection's state: the policy's own session, its schedule and latest subtask."""

    def __init__(self, owner: TwoRatePolicy) -> None:
        self.owner = owner
        new = getattr(owner.policy, "new_session", None)
        self.session = new() if callable(new) else None
        self.schedule = HighLevelSchedule(1.0 / owner.high_level_hz)
        self.subtask: str | None = None
        self.high_level_calls = 0

    def reset(self) -> None:
        if self.session is not None:
            self.session.reset()
        self.schedule.reset()
        self.subtask = None

    def _kw(self) -> dict[str, Any]:
        return {} if self.session is None else {"session": self.session}

    def infer(self, obs: dict) -> dict:
        policy = self.owner.policy
        ran = self.schedule.due(self.owner.clock()) or self.subtask is None
        if ran:  # the first request of a connection always runs it: the grid starts there
            self.subtask = str(policy.infer_high_level(obs, **self._kw())[SUBTASK_KEY])
            self.high_level_calls += 1
        out = dict(policy.infer({**obs, SUBTASK_KEY: self.subtask}, **self._kw()))
        out[SUBTASK_KEY] = self.subtask
        out["high_level_ran"] = bool(ran)
        return out


class TwoRatePolicy:
    """A hierarchical policy served at two rates (``vlastack serve --high-level-hz``): per
    connection, System 2 every ``1 / high_level_hz`` seconds of ``clock``, System 1 on every
    request. No ``infer_batch``: requests are not batched across clients."""

    def __init__(
        self,
        policy: Any,
        high_level_hz: float,
        control_hz: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_rates(high_level_hz, control_hz)
        check_hierarchical(policy)
        self.policy = policy
        self.high_level_hz = float(high_level_hz)
        self.clock = clock
        self.metadata = {
            **dict(getattr(policy, "metadata", {})),
            "high_level_hz": self.high_level_hz,
            "control_hz": control_hz,
        }
        self._default = _TwoRateSession(self)

    def new_session(self) -> _TwoRateSession:
        return _TwoRateSession(self)

    def infer(self, obs: dict) -> dict:
        return self._default.infer(obs)

    def reset(self) -> None:
        self._default.reset()
