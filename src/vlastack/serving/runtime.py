"""Real-time action runtime: how a chunking policy's outputs become one action per control tick.

Strategies behind one interface (``ActionRuntime.reset()/step(obs) -> action``), picked by name:
``sync`` (action queue, execute ``execute_horizon`` actions per chunk), ``ensemble`` (ACT temporal
ensembling, Zhao et al. 2023), ``async`` (SmolVLA asynchronous inference, Shukor et al. 2025) and
``rtc`` (real-time chunking, Black, Galliker & Levine 2025: guided flow sampling that keeps the new
chunk consistent with the actions committed during the inference delay). REFERENCE.md §3.5–3.7.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vlastack.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Interfaces


class ChunkPolicy(Protocol):
    """A policy that returns an action chunk: ``infer(obs)["actions"]`` is float (H, A)."""

    def infer(self, obs: dict) -> dict: ...

    def reset(self) -> None: ...


@runtime_checkable
class GuidedChunkPolicy(Protocol):
    """A flow-matching policy that can sample a chunk guided toward committed actions (RTC).

    ``prev_actions`` (L, A) are the not-yet-executed actions of the previous chunk, aligned so that
    ``prev_actions[0]`` is the action for the observation's tick (unnormalized, as the robot sees
    them: the policy normalizes them like its outputs). The first ``inference_delay`` of them will
    execute while this call runs. Implementations call ``guided_flow_sample`` with their velocity.
    """

    def infer_guided(self, obs: dict, prev_actions: np.ndarray, inference_delay: int) -> dict: ...


class VelocityModel(Protocol):
    """One network evaluation of a flow head, openpi convention (t=1 noise -> t=0 data).

    ``velocity(x_t (B, H, A), t (B,)) -> v (B, H, A)`` with ``dx/dt = v``, i.e. ``v ≈ noise - data``
    and sampling runs Euler steps ``x <- x - v / N`` from t=1 to t=0. Observation context (prefix
    KV cache) is bound inside the object. Must be differentiable in ``x_t``: build cached context
    under ``torch.no_grad()``, not ``torch.inference_mode()`` (inference tensors cannot take part
    in the backward pass the guidance needs).
    """

    def velocity(self, x_t: Any, t: Any) -> Any: ...


# ---------------------------------------------------------------------------------------------
# Building blocks


class ActionQueue:
    """FIFO of actions; ``push`` keeps the first ``execute_horizon`` actions of a chunk."""

    def __init__(self, execute_horizon: int | None = None) -> None:
        if execute_horizon is not None and execute_horizon < 1:
            raise ConfigError(f"execute_horizon must be >= 1, got {execute_horizon}")
        self.execute_horizon = execute_horizon
        self._actions: deque[np.ndarray] = deque()

    def push(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk)
        n = len(chunk) if self.execute_horizon is None else min(self.execute_horizon, len(chunk))
        self._actions.clear()
        self._actions.extend(chunk[:n])

    def pop(self) -> np.ndarray:
        return self._actions.popleft()

    def clear(self) -> None:
        self._actions.clear()

    def __len__(self) -> int:
        return len(self._actions)


class TemporalEnsembler:
    """ACT temporal ensembling (§3.5): a new chunk every step; the action for step t averages all
    predictions for t, oldest first, with weights exp(-m * i) normalized to sum 1."""

    def __init__(self, m: float = 0.01) -> None:
        self.m = m
        self.reset()

    def reset(self) -> None:
        self._step = 0
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (start step, chunk (H, A))

    def update(self, chunk: np.ndarray) -> np.ndarray:
        """Add the chunk predicted at the current step; return the ensembled action; advance."""
        self._chunks.append((self._step, np.asarray(chunk, dtype=np.float64)))
        while self._chunks and self._step - self._chunks[0][0] >= len(self._chunks[0][1]):
            self._chunks.popleft()
        preds = np.stack([c[self._step - s] for s, c in self._chunks])  # (N, A), oldest first
        w = np.exp(-self.m * np.arange(len(preds)))
        self._step += 1
        return (w / w.sum()) @ preds


# SmolVLA's aggregate functions for the steps where an old and a new chunk overlap (§3.7).
AGGREGATES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "weighted_average": lambda old, new: 0.3 * old + 0.7 * new,
    "latest_only": lambda old, new: new,
    "average": lambda old, new: 0.5 * old + 0.5 * new,
    "conservative": lambda old, new: 0.7 * old + 0.3 * new,
}


# ---------------------------------------------------------------------------------------------
# Real-time chunking (guided flow sampling)


def prefix_weights(
    inference_delay: int, prefix_horizon: int, action_horizon: int, schedule: str = "exp"
) -> np.ndarray:
    """RTC soft mask W over the H positions (§3.6): 1 for i < d (frozen: executes during inference),
    decaying (linear, or exp: w·(e^w−1)/(e−1)) until ``prefix_horizon`` (= H − s, the end of the
    previous chunk), 0 after. ``schedule`` ∈ {"exp", "linear", "ones", "zeros"}; returns (H,)."""
    end = max(0, min(prefix_horizon, action_horizon))
    start = max(0, min(inference_delay, end))
    i = np.arange(action_horizon, dtype=np.float64)
    if schedule == "ones":
        w = np.ones(action_horizon)
    elif schedule == "zeros":
        w = (i < start).astype(np.float64)
    elif schedule in ("linear", "exp"):
        # 1 up to start-1, then linearly down to 1/(end-start+1) at end-1.
        w = np.clip((start - 1 - i) / (end - start + 1) + 1, 0.0, 1.0)
        if schedule == "exp":
            w = np.minimum(w * np.expm1(w) / (math.e - 1), 1.0)  # exact 1 on the frozen prefix
    else:
        raise ConfigError(f"unknown RTC schedule {schedule!r}; choose exp, linear, ones or zeros")
    return np.where(i >= end, 0.0, w)


def guidance_weight(t: float, max_guidance_weight: float) -> float:
    """min(c · 1/r², β) of RTC, written in the kinetix time τ = 1 − t (τ=0 noise, τ=1 data)."""
    tau = 1.0 - t
    if tau <= 0.0 or tau >= 1.0:
        return max_guidance_weight
    inv_r2 = (tau**2 + (1 - tau) ** 2) / (1 - tau) ** 2
    c = (1 - tau) / tau
    return min(c * inv_r2, max_guidance_weight)


def guided_flow_sample(
    model: VelocityModel,
    noise: Any,
    prev_actions: Any,
    inference_delay: int,
    num_steps: int = 10,
    max_guidance_weight: float = 5.0,
    schedule: str = "exp",
) -> Any:
    """Euler flow sampling (openpi convention) with RTC's ΠGDM guidance toward ``prev_actions``.

    noise (B, H, A); prev_actions (B, L, A) or (L, A), normalized like the model's actions, L ≤ H.
    Returns (B, H, A). With ``max_guidance_weight=0`` this is plain Euler sampling.

    Convention: kinetix writes Â = x + (1−τ)·v_k with v_k pointing to data; with t = 1 − τ and the
    openpi velocity v = −v_k this is Â = x − t·v, and the guided kinetix velocity v_k + w·g becomes
    v − w·g, where g = (∂Â/∂x)ᵀ[(Y − Â)·W] is one vector-Jacobian product through the network.
    """
    import torch

    x = noise
    B, H, A = x.shape
    y = torch.zeros_like(x)
    prev = prev_actions if prev_actions.dim() == 3 else prev_actions.unsqueeze(0).expand(B, -1, -1)
    L = min(prev.shape[1], H)
    y[:, :L] = prev[:, :L].to(x)
    w_np = prefix_weights(inference_delay, L, H, schedule)
    w = torch.as_tensor(w_np, dtype=x.dtype, device=x.device).view(1, H, 1)
    dt = -1.0 / num_steps
    for k in range(num_steps):
        t = 1.0 + k * dt
        t_vec = torch.full((B,), t, dtype=x.dtype, device=x.device)
        gw = guidance_weight(t, max_guidance_weight) if L > 0 else 0.0
        if gw == 0.0:
            with torch.no_grad():
                v = model.velocity(x, t_vec)
        else:
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                v = model.velocity(x_in, t_vec)
                a_hat = x_in - t * v  # one-step estimate of the clean chunk
                err = (y - a_hat) * w
                (g,) = torch.autograd.grad(a_hat, x_in, grad_outputs=err.detach())
            v = v.detach() - gw * g
        x = (x + dt * v).detach()
    return x


# ---------------------------------------------------------------------------------------------
# Strategies


class ActionRuntime:
    """Turns chunks from ``policy`` into one action per ``step(obs)`` call (one control tick).

    ``last_chunk_id`` says which chunk the last action came from (for measuring boundary jumps).
    ``executor`` (anything with ``submit(fn, *args) -> future``) and ``clock`` (seconds) default to
    real threads and ``time.perf_counter``; ``SimExecutor``/``SimClock`` replace them to simulate
    inference delay in virtual time.
    """

    name = "base"

    def __init__(
        self,
        policy: ChunkPolicy,
        executor: Any | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.policy = policy
        self.executor: Any = executor
        self.clock = clock or time.perf_counter
        self.last_chunk_id = -1
        self.num_inferences = 0

    def _infer_chunk(self, obs: dict) -> np.ndarray:
        self.num_inferences += 1
        if self.executor is not None:  # blocking call through the (possibly simulated) executor
            out = self.executor.submit(self.policy.infer, obs).result()
        else:
            out = self.policy.infer(obs)
        return np.asarray(out["actions"], dtype=np.float64)

    def reset(self) -> None:
        self.policy.reset()
        self.last_chunk_id = -1

    def step(self, obs: dict) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release background threads (no-op for synchronous strategies)."""

    def __enter__(self) -> ActionRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SyncRuntime(ActionRuntime):
    """Block on inference whenever the queue is empty; execute ``execute_horizon`` actions."""

    name = "sync"

    def __init__(
        self, policy: ChunkPolicy, execute_horizon: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(policy, **kwargs)
        self.queue = ActionQueue(execute_horizon)

    def reset(self) -> None:
        super().reset()
        self.queue.clear()

    def step(self, obs: dict) -> np.ndarray:
        if not len(self.queue):
            self.queue.push(self._infer_chunk(obs))
            self.last_chunk_id += 1
        return self.queue.pop()


class EnsembleRuntime(ActionRuntime):
    """ACT: query every step (blocking) and temporally ensemble all overlapping predictions."""

    name = "ensemble"

    def __init__(self, policy: ChunkPolicy, m: float = 0.01, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        self.ensembler = TemporalEnsembler(m)

    def reset(self) -> None:
        super().reset()
        self.ensembler.reset()

    def step(self, obs: dict) -> np.ndarray:
        action = self.ensembler.update(self._infer_chunk(obs))
        self.last_chunk_id += 1
        return action


@dataclass
class _Request:
    tick: int  # control tick of the observation; chunk[i] is the action for tick + i
    future: concurrent.futures.Future


class AsyncRuntime(ActionRuntime):
    """SmolVLA asynchronous inference (§3.7): while the queue runs, request the next chunk in a
    background thread as soon as ``len(queue) / chunk_size <= threshold``; on arrival drop the
    actions whose ticks have passed and merge the overlap with ``aggregate``.

    Ticks are ``step()`` calls, or, with ``control_hz``, wall-clock ticks since the first step (so
    that after a stall the actions whose time has passed are skipped instead of replayed late).
    ``threshold=0`` requests only when the queue is empty (sync-like); ``threshold=1`` requests on
    every tick.
    """

    name = "async"

    def __init__(
        self,
        policy: ChunkPolicy,
        threshold: float = 0.5,
        aggregate: str = "weighted_average",
        control_hz: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, **kwargs)
        self.control_hz = control_hz
        self._t0: float | None = None
        if aggregate not in AGGREGATES:
            raise ConfigError(f"unknown aggregate {aggregate!r}; choose from {sorted(AGGREGATES)}")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.aggregate = AGGREGATES[aggregate]
        self._own_executor = self.executor is None
        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="vlastack-runtime"
            )
        self._queue: deque[tuple[int, np.ndarray, int]] = deque()  # (tick, action, chunk id)
        self._tick = 0
        self._chunk_size = 0
        self._next_chunk_id = 0
        self._pending: _Request | None = None
        self.delays_ticks: list[int] = []  # measured request -> merge delays

    def reset(self) -> None:
        if self._pending is not None:
            self._pending.future.result()  # do not let a stale chunk land in the new episode
        super().reset()
        self._queue.clear()
        self._tick = 0
        self._t0 = None
        self._pending = None
        self.delays_ticks.clear()

    def _call_policy(self, obs: dict) -> np.ndarray:
        return np.asarray(self.policy.infer(obs)["actions"], dtype=np.float64)

    def _request(self, obs: dict) -> None:
        self.num_inferences += 1
        self._pending = _Request(self._tick, self.executor.submit(self._call_policy, dict(obs)))

    def _merge(self, start_tick: int, chunk: np.ndarray, chunk_id: int) -> None:
        old = {tick: (a, cid) for tick, a, cid in self._queue}
        merged: deque[tuple[int, np.ndarray, int]] = deque()
        for i, new in enumerate(chunk):
            tick = start_tick + i
            if tick < self._tick:
                continue  # its time has passed while the chunk was computed
            if tick in old:
                merged.append((tick, self.aggregate(old[tick][0], new), chunk_id))
            else:
                merged.append((tick, new, chunk_id))
        self._queue = merged

    def _collect(self, block: bool) -> None:
        req = self._pending
        if req is None or (not block and not req.future.done()):
            return
        chunk = req.future.result()
        self._pending = None
        self._chunk_size = len(chunk)
        self.delays_ticks.append(self._tick - req.tick)
        self._merge(req.tick, chunk, self._next_chunk_id)
        self._next_chunk_id += 1

    def _sync_clock(self) -> None:
        """Advance ``_tick`` to the wall-clock tick and drop queued actions whose time passed."""
        if self.control_hz is not None:
            now = self.clock()
            if self._t0 is None:
                self._t0 = now - self._tick / self.control_hz
            # +0.5: a step called a little before or after its deadline belongs to that tick
            self._tick = max(self._tick, int((now - self._t0) * self.control_hz + 0.5))
        while self._queue and self._queue[0][0] < self._tick:
            self._queue.popleft()

    def step(self, obs: dict) -> np.ndarray:
        self._sync_clock()
        self._collect(block=False)
        if self._pending is None and (
            not self._queue or len(self._queue) <= self.threshold * max(self._chunk_size, 1)
        ):
            self._request(obs)
        while not self._queue:
            self._collect(block=True)  # queue ran dry: the robot waits (missed ticks)
            self._sync_clock()
            if not self._queue and self._pending is None:
                self._request(obs)
        tick, action, chunk_id = self._queue.popleft()
        self.last_chunk_id = chunk_id
        self._tick = tick + 1
        return action

    def close(self) -> None:
        if self._own_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)


class RTCRuntime(AsyncRuntime):
    """Asynchronous inference with real-time chunking (§3.6): each request passes the queued
    actions and the expected delay d (max of recent measured delays, in ticks) to
    ``policy.infer_guided``; the arriving chunk replaces the queue (its first d actions were guided
    to equal the ones executed meanwhile), so no averaging is needed."""

    name = "rtc"

    def __init__(
        self,
        policy: ChunkPolicy,
        threshold: float = 0.5,
        initial_delay_ticks: int = 0,
        control_hz: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            policy, threshold=threshold, aggregate="latest_only", control_hz=control_hz, **kwargs
        )
        if not isinstance(policy, GuidedChunkPolicy) or not getattr(
            policy, "supports_guided_sampling", True
        ):
            raise ConfigError(
                f"strategy 'rtc' needs a flow-matching policy with infer_guided(obs, prev_actions, "
                f"inference_delay); {type(policy).__name__} {getattr(policy, 'source', '')} has "
                "none (not a flow-matching head). Use 'async' instead."
            )
        self.initial_delay_ticks = initial_delay_ticks

    def expected_delay_ticks(self) -> int:
        recent = self.delays_ticks[-5:]
        return max(recent) if recent else self.initial_delay_ticks

    def _request(self, obs: dict) -> None:
        prev = np.array([a for _, a, _ in self._queue]) if self._queue else np.zeros((0, 0))
        delay = min(self.expected_delay_ticks(), len(prev))
        policy: Any = self.policy

        def call() -> np.ndarray:
            if len(prev) == 0:
                return np.asarray(policy.infer(obs)["actions"], dtype=np.float64)
            return np.asarray(policy.infer_guided(obs, prev, delay)["actions"], dtype=np.float64)

        self.num_inferences += 1
        self._pending = _Request(self._tick, self.executor.submit(call))


STRATEGIES: dict[str, type[ActionRuntime]] = {
    "sync": SyncRuntime,
    "ensemble": EnsembleRuntime,
    "async": AsyncRuntime,
    "rtc": RTCRuntime,
}


def make_runtime(strategy: str, policy: ChunkPolicy, **kwargs: Any) -> ActionRuntime:
    """Build a runtime by name: sync(execute_horizon), ensemble(m),
    async(threshold, aggregate, control_hz), rtc(threshold, initial_delay_ticks, control_hz)."""
    try:
        cls = STRATEGIES[strategy]
    except KeyError:
        raise ConfigError(
            f"unknown runtime strategy {strategy!r}; choose from {sorted(STRATEGIES)}"
        ) from None
    try:
        return cls(policy, **kwargs)  # type: ignore[call-arg]
    except TypeError as exc:
        raise ConfigError(f"runtime strategy {strategy!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Simulated-delay harness


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
    jerk = np.diff(x, n=3, axis=0) * control_hz**3 if len(x) > 3 else np.zeros((1, x.shape[1]))
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
        mean_sq_jerk=float(np.mean(np.sum(jerk**2, axis=-1))),
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


def _mean_sq_jerk(x: list[np.ndarray], control_hz: float) -> float:
    if len(x) < 4:
        return float("nan")
    d3 = np.diff(np.stack(x).astype(np.float64), n=3, axis=0) * control_hz**3
    return float(np.mean(np.sum(d3**2, axis=-1)))


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
