"""The robot-side control loop: policy chunks -> action runtime -> safety layer -> robot.

``RobotRunner.run_episode`` ticks at ``control_hz`` by an injectable clock. Every tick it reads
the robot, lets the action runtime (``serving.runtime``: sync, ensemble, async, rtc) work on the
observation in a worker thread, and waits for its action until the tick's deadline; the control
thread never blocks on the policy. Whatever the runtime gave (an action, nothing yet, an
exception) goes through the ``SafetyFilter`` and exactly one command goes to the robot:

* action ready, its chunk's inference began less than ``stale_after_s`` ago -> the action
  (clamped, rate-limited);
* nothing ready yet -> hold; counted ``wait`` while the last fresh chunk is younger than
  ``stale_after_s``, ``stale`` after that; an action from a chunk older than that -> hold, ``stale``;
* the server is lost (``PolicyLostError``) -> hold, ``server_lost``; any other policy exception ->
  hold, ``policy_error``. The runtime is rebuilt (queues dropped, never replayed) and the next
  tick asks again (``RemotePolicy`` reconnects);
* holds of those kinds for ``abort_after_s`` in a row end the episode (``stopped`` says why).

With an ``intervention`` source (``intervention.TeleopIntervention``), a tick on which a person
intervenes sends the teleoperator's action instead, through the same safety layer; the policy
keeps running (its action is recorded beside the human's) and its queued chunks are dropped
when the person hands back.

Waits are bounded in real time by one control period, so a clock that jumps cannot stall the
loop. Each tick can be recorded (``record.RolloutRecorder``).

With ``high_level`` (``{"high_level_hz": ..., "high_level_async": ...}``) a hierarchical policy
runs at two rates through ``serving.hierarchy.HierarchicalRuntime`` around the strategy: System 2
every ``control_hz / high_level_hz`` ticks of the clock, System 1 every tick on the latest
subtask; the episode's summary says the rates and how often System 2 ran.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.robot.interface import Robot
from vlastack.robot.safety import WAIT, SafetyFilter, count_violations
from vlastack.robot.sources import ChunkClock, PolicyLostError, chunk_clock
from vlastack.serving.hierarchy import HierarchicalRuntime, two_rate_summary
from vlastack.serving.runtime import ActionRuntime, make_runtime

log = logging.getLogger("vlastack.robot")


@dataclass
class EpisodeResult:
    """One episode: what the robot was sent and what the safety layer did."""

    ticks: int
    success: bool | None
    stopped: str  # "done" (the robot ended it), "max_ticks", or why it was aborted
    counts: dict[str, int]  # per intervention kind, plus "wait"
    commands: np.ndarray  # (ticks, A) every command sent, holds included
    raw_actions: np.ndarray  # (ticks, A) the runtime's action, NaN where there was none
    violations: int  # commands outside the declared limits (must be 0)
    duration_s: float
    chunks: int  # inferences the runtime started
    human_ticks: int = 0  # ticks a person drove through the intervention source
    high_level: dict[str, Any] | None = None  # two rates: HierarchicalRuntime.summary()

    def summary(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "success": self.success,
            "stopped": self.stopped,
            "interventions": {k: v for k, v in self.counts.items() if v and k != WAIT},
            "waits": self.counts.get(WAIT, 0),
            "violations": self.violations,
            "duration_s": round(self.duration_s, 3),
            "chunks": self.chunks,
            "human_ticks": self.human_ticks,
            **({"high_level": self.high_level} if self.high_level is not None else {}),
        }


class RobotRunner:
    """Drives ``robot`` with ``policy`` (a ``ChunkPolicy``: ``RemotePolicy``, a
    ``vlastack.policy.Policy``, ...) through the runtime ``strategy`` and ``safety``.

    ``runtime_kwargs`` go to ``make_runtime`` (``execute_horizon``, ``threshold``, ...); async
    and rtc also get ``control_hz`` and the clock. ``clock``/``sleep`` default to
    ``time.monotonic``/``time.sleep``; tests inject a clock that jumps. ``task`` is the prompt
    sent when the robot's observation has none. ``recorder`` (``RolloutRecorder``) records.
    ``rename`` maps vlastack's observation keys to the ones a server expects (an openpi server
    for LIBERO wants ``observation/image`` ...; vlastack's server reads either).
    ``intervention`` (``TeleopIntervention``: ``poll()`` -> the human's command or None) lets a
    person take over.
    """

    def __init__(
        self,
        robot: Robot,
        policy: Any,
        safety: SafetyFilter,
        *,
        strategy: str = "sync",
        runtime_kwargs: dict[str, Any] | None = None,
        control_hz: float | None = None,
        task: str = "",
        abort_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        recorder: Any = None,
        rename: dict[str, str] | None = None,
        intervention: Any = None,
        high_level: dict[str, Any] | None = None,
    ) -> None:
        self.robot = robot
        self.high_level = dict(high_level) if high_level is not None else None
        self.intervention = intervention
        self.rename = dict(rename or {})
        self.safety = safety
        self.strategy = strategy
        self.runtime_kwargs = dict(runtime_kwargs or {})
        self.control_hz = float(control_hz or robot.embodiment.control_hz)
        if not self.control_hz > 0:
            raise ConfigError(f"control_hz must be positive, got {self.control_hz}")
        if safety.limits.dim != robot.embodiment.action.dim:
            raise ConfigError(
                f"the safety limits cover {safety.limits.dim} actions but the robot "
                f"{robot.embodiment.robot_type!r} takes {robot.embodiment.action.dim}"
            )
        self.period = 1.0 / self.control_hz
        self.task = task
        self.abort_after_s = abort_after_s
        self.clock = clock
        self.sleep = sleep
        self.recorder = recorder
        self.source: ChunkClock = chunk_clock(policy, clock)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._runtime_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._two_rate: list[HierarchicalRuntime] = []
        self.runtime = self._build_runtime()  # fail fast on a bad strategy / kwargs

    # ---- runtime ---------------------------------------------------------------------------
    def _build_runtime(self) -> ActionRuntime:
        kwargs = dict(self.runtime_kwargs)
        if self.strategy in ("async", "rtc"):
            # our own executor, so a hung request can be abandoned without waiting for it
            self._runtime_pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="vlastack-robot-infer"
            )
            kwargs.setdefault("control_hz", self.control_hz)
            kwargs["executor"] = self._runtime_pool
            kwargs["clock"] = self.clock
        self.source.reset_times()
        if self.high_level is not None:
            kwargs.pop("control_hz", None)
            kwargs.pop("clock", None)
            return HierarchicalRuntime(
                self.source,
                self.strategy,
                control_hz=self.control_hz,
                clock=self.clock,
                **self.high_level,
                **kwargs,
            )
        return make_runtime(self.strategy, self.source, **kwargs)

    def _drop_runtime(self, wait: bool = False) -> None:
        """Release the runtime's threads; a request in flight is abandoned unless ``wait``."""
        runtime = getattr(self, "runtime", None)
        if isinstance(runtime, HierarchicalRuntime):  # its System 2 thread
            runtime.close(wait=wait)
        if self._runtime_pool is not None:
            self._runtime_pool.shutdown(wait=False, cancel_futures=True)
            self._runtime_pool = None

    def _fresh_runtime(self) -> ActionRuntime:
        self._drop_runtime()
        runtime = self._build_runtime()
        runtime.reset()
        if isinstance(runtime, HierarchicalRuntime):
            self._two_rate.append(runtime)  # this episode's, for its summary
        return runtime

    # ---- timing ---------------------------------------------------------------------------
    def _wait(self, fut: concurrent.futures.Future, until: float) -> None:
        """Wait for ``fut`` until ``until`` by the clock, at most one period of real time."""
        remaining = min(until - self.clock(), self.period)
        if remaining > 0 and not fut.done():
            concurrent.futures.wait([fut], timeout=remaining)

    def _sleep_until(self, until: float) -> None:
        remaining = min(until - self.clock(), self.period)
        if remaining > 0:
            self.sleep(remaining)

    # ---- the loop -------------------------------------------------------------------------
    def _policy_obs(self, obs: dict[str, Any]) -> dict[str, Any]:
        out = dict(obs)
        if self.task and not out.get("task"):
            out["task"] = self.task
        for ours, theirs in self.rename.items():
            if ours in out:
                out[theirs] = out.pop(ours)
        return out

    def run_episode(self, max_ticks: int, seed: int | None = None) -> EpisodeResult:
        """Run one episode of at most ``max_ticks`` control ticks."""
        if max_ticks < 1:
            raise ConfigError(f"max_ticks must be >= 1, got {max_ticks}")
        robot, safety = self.robot, self.safety
        stale_s = safety.limits.stale_after_s
        robot.start_episode(seed)
        safety.reset()
        before = dict(safety.counts)
        self._two_rate = []
        self.runtime = self._fresh_runtime()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vlastack-robot")
        commands: list[np.ndarray] = []
        raws: list[np.ndarray] = []
        dim = safety.limits.dim
        pending: concurrent.futures.Future | None = None
        t_start = self.clock()
        next_t = t_start
        last_fresh = t_start  # the first chunk has stale_after_s to arrive
        prev_now = t_start
        bad_since: float | None = None  # start of the current run of held ticks
        bad: dict[str, int] = {}  # its reasons
        stopped = "max_ticks"
        chunks = 0
        human_ticks = 0
        was_human = False
        try:
            for tick in range(max_ticks):
                obs = robot.get_observation()
                if pending is None:
                    pending = self._pool.submit(self.runtime.step, self._policy_obs(obs))
                self._wait(pending, next_t + self.period)
                now = self.clock()
                if now < prev_now:  # the clock went back: shift every timestamp with it
                    back = prev_now - now
                    last_fresh -= back
                    next_t -= back
                    self.source.shift_times(-back)
                prev_now = now
                action: np.ndarray | None = None
                reason: str | None = None
                if pending.done():
                    fut, pending = pending, None
                    try:
                        action = np.asarray(fut.result(), dtype=np.float64)
                    except PolicyLostError as exc:
                        reason = "server_lost"
                        log.warning("policy server lost: %s; holding", exc)
                    except ConfigError:
                        raise  # a setup mistake (wrong strategy for this policy ...): stop
                    except Exception as exc:
                        reason = "policy_error"
                        log.warning("policy error: %s: %s; holding", type(exc).__name__, exc)
                    if reason is not None:
                        chunks += self.runtime.num_inferences
                        self.runtime = self._fresh_runtime()
                    else:
                        chunk_t = self.source.chunk_time(self.runtime.last_chunk_id)
                        if chunk_t is not None:
                            last_fresh = max(last_fresh, chunk_t)
                        if chunk_t is None or now - chunk_t > stale_s:
                            reason = "stale"
                else:
                    reason = "stale" if now - last_fresh > stale_s else WAIT
                human = self.intervention.poll() if self.intervention is not None else None
                if human is not None:
                    if not was_human:
                        log.info("intervention: a person drives (tick %d)", tick)
                    human_ticks += 1
                    cmd = safety.command(human, now, robot.hold_action(), None)
                else:
                    if was_human:  # handed back: the policy restarts from what it sees now
                        log.info("intervention ended (tick %d); the policy drives", tick)
                        pending = None  # its result belongs to the dropped runtime
                        chunks += self.runtime.num_inferences
                        self.runtime = self._fresh_runtime()
                        last_fresh = now
                        action, reason = None, WAIT  # this tick holds; no queued action runs
                    cmd = safety.command(action, now, robot.hold_action(), reason)
                was_human = human is not None
                if cmd is not None:  # None: must hold but no hold is known: send nothing
                    robot.send_action(cmd)
                    commands.append(cmd)
                    raw = action if action is not None and reason is None else None
                    raws.append(np.full(dim, np.nan) if raw is None else raw.reshape(-1))
                    if self.recorder is not None:
                        kinds = safety.last_kinds
                        self.recorder.add(
                            obs, cmd, raw, kinds, self._task_of(obs), intervention=was_human
                        )
                if robot.episode_done:
                    stopped = "done"
                    break
                if was_human:  # a person drives: the policy's troubles end no episode
                    reason = None
                if reason is None and "nonfinite" in safety.last_kinds:
                    reason = "nonfinite"  # found by the filter: a held tick like the others
                if reason is None:
                    bad_since, bad = None, {}
                elif reason != WAIT or bad_since is not None:  # waits extend a bad run only
                    bad_since = now if bad_since is None else bad_since
                    bad[reason] = bad.get(reason, 0) + 1
                    if now - bad_since >= self.abort_after_s:
                        why = ", ".join(f"{k} x{v}" for k, v in bad.items())
                        stopped = f"aborted: no usable action for {self.abort_after_s:g} s ({why})"
                        log.error("%s", stopped)
                        break
                next_t += self.period
                if abs(self.clock() - next_t) > self.period:  # fell behind, or the clock jumped
                    next_t = self.clock()
                self._sleep_until(next_t)
        finally:
            safety.end_episode()
            chunks += self.runtime.num_inferences
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self._drop_runtime(wait=True)  # the System 2 thread ends with the episode
        counts = {k: safety.counts[k] - before.get(k, 0) for k in safety.counts}
        cmd_arr = np.stack(commands) if commands else np.zeros((0, dim))
        result = EpisodeResult(
            ticks=len(commands),
            success=robot.success,
            stopped=stopped,
            counts=counts,
            commands=cmd_arr,
            raw_actions=np.stack(raws) if raws else np.zeros((0, dim)),
            violations=count_violations(cmd_arr, safety.limits),
            duration_s=self.clock() - t_start,
            chunks=chunks,
            human_ticks=human_ticks,
            high_level=two_rate_summary(self._two_rate) if self._two_rate else None,
        )
        if self.recorder is not None:
            self.recorder.save_episode(
                {"success": result.success, "stopped": stopped, "seed": seed}
            )
        return result

    def _task_of(self, obs: dict[str, Any]) -> str:
        task = obs.get("task") or self.task
        return str(task) if task else "unspecified"

    def close(self) -> None:
        self._drop_runtime(wait=True)
        close = getattr(self.source.policy, "close", None)
        if callable(close):
            close()


def stale_default(metadata: dict[str, Any], control_hz: float) -> float:
    """A chunk's default lifetime: 1.5x the time its executed part takes at ``control_hz``
    (``execute_horizon`` or ``action_horizon`` from the policy's metadata), at least 0.5 s."""
    horizon = metadata.get("execute_horizon") or metadata.get("action_horizon") or 0
    try:
        horizon = int(horizon)
    except (TypeError, ValueError):
        horizon = 0
    return max(0.5, 1.5 * horizon / control_hz) if horizon else 1.0


__all__ = ["EpisodeResult", "PolicyLostError", "RobotRunner", "stale_default"]
