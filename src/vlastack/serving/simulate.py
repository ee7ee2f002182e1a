"""Virtual-time delay harness for the action runtimes (``serving.runtime``).

``SimClock``/``SimExecutor`` make an inference call take exactly ``delay_s`` of virtual time, so
delay experiments do not depend on the machine's load. ``simulate`` drives a position-controlled
point robot along a target trajectory; ``simulate_env`` runs one episode of a real simulator at an
emulated control rate. Both report missed ticks, jumps at chunk boundaries and jerk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlastack.serving.runtime import ActionRuntime

# ---------------------------------------------------------------------------------------------
# Virtual time


class SimClock:
    """Virtual time in seconds: advances only when told (``sleep``) or when a ``SimFuture`` is
    waited for. Makes delay experiments independent of the machine's load."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class SimFuture:
    """Result computed at submit time, visible ``delay_s`` of virtual time later."""

    def __init__(self, clock: SimClock, value: Any, ready_at: float) -> None:
        self._clock, self._value, self.ready_at = clock, value, ready_at

    def done(self) -> bool:
        return self._clock.t >= self.ready_at

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            self._clock.t = self.ready_at  # the caller waits: virtual time passes
        return self._value


class SimExecutor:
    """Executor whose calls take exactly ``delay_s`` of virtual time (their CPU time is ignored)."""

    def __init__(self, clock: SimClock, delay_s: float) -> None:
        self.clock, self.delay_s = clock, delay_s

    def submit(self, fn: Callable[..., Any], *args: Any) -> SimFuture:
        return SimFuture(self.clock, fn(*args), self.clock.t + self.delay_s)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# A point robot tracking a target


@dataclass
class SimResult:
    """Per-run metrics of ``simulate`` (positions in action units, time in control ticks)."""

    strategy: str
    control_hz: float
    delay_ms: float
    ticks: int
    missed_ticks: int
    inferences: int
    # |x_t − 2x_{t−1} + x_{t−2}| (second difference of the executed positions: smooth motion
    # contributes ~0, a discontinuity its full size) at ticks where the executing chunk changed,
    # and at the other ticks for scale.
    boundary_jump: float
    within_chunk_jump: float
    mean_sq_jerk: float  # mean |d³x/dt³|² of the executed positions, (units/s³)²
    tracking_rmse: float  # RMSE between executed position and the target at the same time

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _mean_sq_jerk(x: list[np.ndarray], control_hz: float) -> float:
    """Mean over ticks of |d³x/dt³|² (summed over dims), dt = 1/control_hz; nan under 4 ticks."""
    if len(x) < 4:
        return float("nan")
    d3 = np.diff(np.stack(x).astype(np.float64), n=3, axis=0) * control_hz**3
    return float(np.mean(np.sum(d3**2, axis=-1)))


def simulate(
    runtime: ActionRuntime,
    target: Callable[[float], np.ndarray],
    control_hz: float,
    num_ticks: int,
    warmup_ticks: int = 0,
    clock: SimClock | None = None,
) -> SimResult:
    """Drive a position-controlled point robot along ``target(time_s)`` at ``control_hz`` in wall
    clock time. Observations are ``{"time_s", "observation/state"}``. A tick whose deadline passes
    while ``runtime.step`` blocks is missed: the robot holds its position. Metrics skip the first
    ``warmup_ticks`` executed ticks (the first chunk always has to be waited for). With ``clock``
    (a ``SimClock`` shared with the runtime's ``SimExecutor``) the run is in virtual time."""
    period_s = 1.0 / control_hz
    runtime.reset()
    pos = np.asarray(target(0.0), dtype=np.float64)
    positions: list[np.ndarray] = []  # executed position per tick (held ones included)
    targets: list[np.ndarray] = []
    action_log: list[tuple[int, np.ndarray, int]] = []  # (tick index, action, chunk id)
    missed = 0
    env_tick = 0
    now_s: Callable[[], float] = clock if clock is not None else time.perf_counter
    sleep = clock.sleep if clock is not None else time.sleep
    t0 = now_s()
    for _ in range(num_ticks):
        obs = {"time_s": np.float64(env_tick * period_s), "observation/state": pos.copy()}
        action = runtime.step(obs)
        now = now_s() - t0
        # every deadline that passed while waiting is a tick with no new command
        while now > (env_tick + 1) * period_s + 1e-9:  # tolerance: virtual time is exact
            positions.append(pos.copy())
            targets.append(np.asarray(target(env_tick * period_s)))
            if len(action_log) >= warmup_ticks:
                missed += 1
            env_tick += 1
        pos = np.asarray(action, dtype=np.float64)
        positions.append(pos.copy())
        targets.append(np.asarray(target(env_tick * period_s)))
        action_log.append((len(positions) - 1, pos.copy(), runtime.last_chunk_id))
        env_tick += 1
        sleep_s = env_tick * period_s - (now_s() - t0)
        if sleep_s > 0:
            sleep(sleep_s)
    first = action_log[min(warmup_ticks, len(action_log) - 1)][0]
    x = np.stack(positions)[first:]
    err = x - np.stack(targets)[first:]
    all_x = np.stack(positions)
    switch: list[float] = []
    other: list[float] = []
    for (_, _, c_prev), (p, _, c) in zip(action_log[warmup_ticks:], action_log[warmup_ticks + 1 :]):
        if p >= first + 2:
            jump = float(np.linalg.norm(all_x[p] - 2 * all_x[p - 1] + all_x[p - 2]))
            (switch if c != c_prev else other).append(jump)
    return SimResult(
        strategy=runtime.name,
        control_hz=control_hz,
        delay_ms=float("nan"),
        ticks=num_ticks,
        missed_ticks=missed,
        inferences=runtime.num_inferences,
        boundary_jump=float(np.mean(switch)) if switch else 0.0,
        within_chunk_jump=float(np.mean(other)) if other else 0.0,
        mean_sq_jerk=_mean_sq_jerk(list(x), control_hz) if len(x) > 3 else 0.0,
        tracking_rmse=float(np.sqrt(np.mean(np.sum(err**2, axis=-1)))),
    )


# ---------------------------------------------------------------------------------------------
# Simulated-delay harness in a real simulator


@dataclass
class EnvSimResult:
    """Per-episode metrics of ``simulate_env`` (time in control ticks, actions in robot units)."""

    strategy: str
    control_hz: float
    seed: int
    success: bool
    ticks: int  # control ticks simulated (each is one env step)
    ticks_to_success: int | None
    missed_ticks: int  # deadlines with no fresh command (the hold action ran instead)
    inferences: int
    # ‖a_t − a_{t−1}‖ of the commands sent (holds included) at ticks where the executing chunk
    # changed, and at the other ticks for scale. For delta-position actions (Meta-World) this is
    # the jump in commanded velocity.
    boundary_jump: float
    within_chunk_jump: float
    mean_sq_jerk_action: float  # of the commands, (units/s³)² with dt = 1/control_hz
    mean_sq_jerk_state: float  # of the measured state (e.g. hand position), same units

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def simulate_env(
    runtime: ActionRuntime,
    env: Any,
    control_hz: float,
    max_ticks: int,
    clock: SimClock,
    seed: int = 0,
    hold_action: Callable[[np.ndarray | None], np.ndarray] | None = None,
    state_key: str = "observation.state",
    state_dims: slice = slice(None),
    warmup_ticks: int = 1,
) -> EnvSimResult:
    """Run one episode of ``env`` (a gymnasium-style ``VlaEnv``) under ``runtime`` at
    ``control_hz`` in virtual time (``clock`` shared with the runtime's ``SimExecutor``).

    The control rate is emulated: one control tick = one ``env.step`` whatever the simulator's
    own step length, and the runtime's clock runs at ``control_hz``; so an inference delay of δ
    seconds spans δ·control_hz ticks. A command is due by the end of its tick (as in
    ``simulate``), so a blocking call of δ costs ⌈δ·control_hz⌉ − 1 missed ticks. A tick whose
    deadline passes while ``runtime.step`` blocks is missed: the env steps with ``hold_action(last_command)`` (default: repeat the last
    command; zeros before the first) and keeps the observation the runtime already used. Missed
    ticks count after ``warmup_ticks`` executed actions (every strategy waits for its first
    chunk). Commands are clipped to the env's action bounds, as in evaluation. The episode ends on
    ``info["success"]``, termination, or ``max_ticks``.
    ``state_dims`` picks the part of ``obs[state_key]`` whose jerk is reported (hand position).
    """
    period_s = 1.0 / control_hz
    act_spec = getattr(getattr(env, "embodiment", None), "action", None)
    low = getattr(act_spec, "low", None)
    high = getattr(act_spec, "high", None)
    obs, _ = env.reset(seed=seed)
    runtime.reset()
    commands: list[np.ndarray] = []  # sent each tick, holds included
    states: list[np.ndarray] = [np.asarray(obs[state_key], dtype=np.float64)[state_dims]]
    executed: list[tuple[int, int]] = []  # (tick index, chunk id) of runtime actions
    missed = 0
    tick = 0
    success = False
    ticks_to_success: int | None = None
    done = False
    t0 = clock()

    def env_step(cmd: np.ndarray) -> None:
        nonlocal obs, tick, success, ticks_to_success, done
        if low is not None and high is not None:  # like the evaluation harness (clip_actions)
            cmd = np.clip(cmd, low, high)
        commands.append(np.asarray(cmd, dtype=np.float64))
        obs, _r, terminated, truncated, info = env.step(np.asarray(cmd, dtype=np.float32))
        states.append(np.asarray(obs[state_key], dtype=np.float64)[state_dims])
        tick += 1
        if info.get("success") and not success:
            success, ticks_to_success = True, tick
        done = success or bool(terminated) or bool(truncated) or tick >= max_ticks

    while not done:
        action = np.asarray(runtime.step(obs), dtype=np.float64)
        # every deadline that passed while the runtime blocked is a tick with no fresh command
        while not done and clock() - t0 > (tick + 1) * period_s + 1e-9:  # virtual time is exact
            last = commands[-1] if commands else None
            hold = hold_action(last) if hold_action else (last if last is not None else None)
            env_step(np.zeros_like(action) if hold is None else hold)
            missed += len(executed) >= warmup_ticks
        if done:
            break
        executed.append((tick, runtime.last_chunk_id))
        env_step(action)
        wait_s = tick * period_s - (clock() - t0)
        if wait_s > 0:
            clock.sleep(wait_s)

    cmd = np.stack(commands) if commands else np.zeros((0, 1))
    switch: list[float] = []
    other: list[float] = []
    for (_, c_prev), (p, c) in zip(executed[warmup_ticks:], executed[warmup_ticks + 1 :]):
        if p >= 1:
            jump = float(np.linalg.norm(cmd[p] - cmd[p - 1]))
            (switch if c != c_prev else other).append(jump)
    first = executed[min(warmup_ticks, len(executed) - 1)][0] if executed else 0
    return EnvSimResult(
        strategy=runtime.name,
        control_hz=control_hz,
        seed=seed,
        success=success,
        ticks=tick,
        ticks_to_success=ticks_to_success,
        missed_ticks=missed,
        inferences=runtime.num_inferences,
        boundary_jump=float(np.mean(switch)) if switch else float("nan"),
        within_chunk_jump=float(np.mean(other)) if other else float("nan"),
        mean_sq_jerk_action=_mean_sq_jerk(list(cmd[first:]), control_hz),
        mean_sq_jerk_state=_mean_sq_jerk(states[first + 1 :], control_hz),
    )
