"""Real-time action runtime: how a chunking policy's outputs become one action per control tick.

Strategies behind one interface (``ActionRuntime.reset()/step(obs) -> action``), picked by name:
``sync`` (action queue, execute ``execute_horizon`` actions per chunk), ``ensemble`` (ACT temporal
ensembling, Zhao et al. 2023), ``async`` (SmolVLA asynchronous inference, Shukor et al. 2025) and
``rtc`` (real-time chunking, Black, Galliker & Levine 2025: guided flow sampling that keeps the new
chunk consistent with the actions committed during the inference delay). REFERENCE.md §3.5–3.7.
"""

from __future__ import annotations

import concurrent.futures
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
    execute while this call runs. Implementations sample with ``functional.rtc`` (a flow head's
    ``sample_actions_guided``, or ``guided_flow_sample`` over their velocity).
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
    Returns (B, H, A). With ``max_guidance_weight=0`` or L = 0 this is plain Euler sampling. The
    math is ``functional.rtc``: the soft mask ``prefix_weights`` over the L committed actions, of
    which the first ``inference_delay`` are frozen, and ``guided_euler_sample``.
    """
    import torch

    # here, not at the top: the runtime itself runs without torch (the robot runner in a
    # simulator's own venv); only guided sampling needs it
    from vlastack.functional.rtc import guided_euler_sample, prefix_weights

    B, H, _ = noise.shape
    y = torch.zeros_like(noise)
    prev = prev_actions if prev_actions.dim() == 3 else prev_actions.unsqueeze(0).expand(B, -1, -1)
    L = min(prev.shape[1], H)
    y[:, :L] = prev[:, :L].to(noise)
    w_np = prefix_weights(inference_delay, L, H, schedule)
    w = torch.as_tensor(w_np, dtype=noise.dtype, device=noise.device).view(1, H, 1)
    beta = max_guidance_weight if L > 0 else 0.0
    return guided_euler_sample(model.velocity, noise, y, w, num_steps, beta)


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
    """Block on inference whenever the queue is empty; execute ``execute_horizon`` actions.

    A policy with ``observe(obs)`` (an observation history that advances every control step, as
    LeRobot's Diffusion Policy ``select_action`` keeps it) is given the observation of every
    step it is not asked for a chunk, so its next chunk sees the previous control step."""

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
        else:
            observe = getattr(self.policy, "observe", None)
            if callable(observe):
                observe(obs)
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
