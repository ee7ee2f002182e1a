"""One episode: ``EpisodeRunner`` builds the policy once and one env per task, then runs a ``Job``.

An episode resets the env with its seed, asks the policy for a chunk whenever the queue of
actions runs dry (or every step, ACT-style, with ``ensemble``), executes ``execute_horizon``
actions of each chunk, clips them to the action bounds, and ends on ``info['success']``,
termination or ``max_steps``. It returns an ``EpisodeRecord`` (smoothness, latency, memory,
initial-state fingerprint) and writes its video when asked. ``RunSpec`` and ``Job`` are
picklable, so worker processes (``evaluation.pool``) run the same code.

With ``high_level_hz`` a hierarchical policy runs at two rates, one env step = one control tick
at the env's ``control_hz``: ``serving.hierarchy.HierarchicalRuntime`` (around ``sync`` or
``ensemble``) runs System 2 every ``control_hz / high_level_hz`` steps and System 1 on the
latest subtask; the record's ``extra["high_level"]`` says the rates, how many times System 2 ran
and the per-tick latency.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError
from vlastack.evaluation.loading import (
    PolicyFactory,
    PolicyLike,
    checkpoint_embodiment,
    env_module,
    load_policy,
    mixture_members,
    policy_embodiment,
)
from vlastack.evaluation.metrics import (
    EpisodeRecord,
    chunk_boundary_jump,
    mean_squared_jerk,
    peak_memory_mb,
)
from vlastack.evaluation.remap import Remap, mismatch_message
from vlastack.image_size import DEFAULT_IMAGE_SIZE


@dataclass
class RunSpec:
    """Everything a worker needs to run episodes; picklable (spawned workers get a copy)."""

    env: str
    checkpoint: str | None = None
    policy_factory: PolicyFactory | None = None
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    camera: str | None = None
    max_steps: int | None = None
    execute_horizon: int | None = None
    ensemble: bool = False
    action_remap: str = "strict"
    clip_actions: bool = True
    out_dir: str | None = None
    video_fps: float = 20.0
    condition: str = "default"
    torch_threads: int | None = None
    embodiment: str | None = None  # mixture member to act as (None: the one matching the env)
    high_level_hz: float | None = None  # hierarchical policies: System 2's rate (two rates)
    high_level_async: bool = False  # System 2 in a background thread (HierarchicalRuntime)


@dataclass
class Job:
    task: str
    task_index: int
    episode: int
    seed: int
    record_video: bool
    attempts: int = 0
    difficulty: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.task, self.episode)


def video_name(task: str, episode: int, success: bool) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", task).strip("-")
    return f"{safe}_ep{episode}_{'success' if success else 'fail'}.mp4"


class EpisodeRunner:
    """Builds the policy once and one env per task, then runs episodes (in a worker or inline)."""

    def __init__(self, spec: RunSpec) -> None:
        # Import the smoothness math (torch) now, not inside the first timed episode.
        importlib.import_module("vlastack.functional.smoothness")
        self.spec = spec
        self._policy: PolicyLike | None = None
        self._envs: dict[str, Any] = {}
        self._remaps: dict[str, Remap | None] = {}
        self.remap_notes: dict[str, str] = {}
        # A mixture checkpoint is loaded knowing the first env's embodiment, to act as the
        # member matching it; its embodiment.json is only the default member's.
        self._members = (
            [m.name for m in mixture_members(spec.checkpoint)] if spec.checkpoint else []
        )
        self._env_embodiment: EmbodimentSpec | None = None
        self._two_rate: Any = None  # the episode's HierarchicalRuntime (high_level_hz)

    @property
    def policy(self) -> PolicyLike:
        if self._policy is None:
            if self.spec.torch_threads:
                os.environ.setdefault("OMP_NUM_THREADS", str(self.spec.torch_threads))
            if self.spec.policy_factory is not None:
                self._policy = self.spec.policy_factory()
            elif self.spec.checkpoint is not None:
                self._policy = load_policy(
                    self.spec.checkpoint,
                    expect_embodiment=self._env_embodiment,
                    embodiment=self.spec.embodiment,
                )
            else:
                raise ConfigError("evaluate() needs a checkpoint path or a policy factory")
            if self.spec.torch_threads and "torch" in sys.modules:
                import torch

                torch.set_num_threads(self.spec.torch_threads)
        return self._policy

    def env(self, task: str) -> Any:
        if task not in self._envs:
            mod = env_module(self.spec.env)
            env = mod.make_env(task, camera=self.spec.camera, image_size=self.spec.image_size)
            self._envs[task] = env
            if self._env_embodiment is None:
                self._env_embodiment = getattr(env, "embodiment", None)
            self._remaps[task] = self._check_embodiment(task, env)
        return self._envs[task]

    def _check_embodiment(self, task: str, env: Any) -> Remap | None:
        pol = None
        if self.spec.checkpoint is not None and not self._members:
            pol = checkpoint_embodiment(self.spec.checkpoint)
        if pol is None:
            pol = policy_embodiment(self.policy)
        env_emb = getattr(env, "embodiment", None)
        if pol is None or env_emb is None or not pol.differences(env_emb):
            return None
        note = ""
        if self._members:
            acting_as = getattr(self.policy, "embodiment_name", None)
            note = (
                f"It acts as {acting_as!r} (--embodiment) of the mixture {self._members}. "
                if self.spec.embodiment
                else f"No member of this mixture checkpoint {self._members} matches it. "
            )
        msg = mismatch_message(pol, env_emb, task, note)
        if self.spec.action_remap == "strict":
            raise ConfigError(msg)
        note = "remapped (pad/truncate): " + "; ".join(pol.differences(env_emb))
        warnings.warn(f"{task}: {note}", stacklevel=2)
        self.remap_notes[task] = note
        return Remap(pol, env_emb)

    def prepare(self, task: str) -> None:
        """Build the policy and the task's env and check their embodiments. A VlastackError
        here is a setup mistake that stops the evaluation; errors later are episode errors."""
        env = self.env(task)
        if self.spec.high_level_hz is not None:
            from vlastack.serving.hierarchy import check_hierarchical

            hz = _control_hz(env)
            if self.spec.high_level_hz > hz:
                raise ConfigError(
                    f"--high-level-hz {self.spec.high_level_hz:g} is faster than {task}'s control "
                    f"rate ({hz:g} Hz, one env step per tick): the high level is the slow one; "
                    f"give at most {hz:g}"
                )
            check_hierarchical(self.policy)
        _ = self.policy

    def run(self, job: Job) -> EpisodeRecord:
        spec = self.spec
        env = self.env(job.task)
        policy = self.policy
        t_start = time.perf_counter()  # episode time, without building the env and policy
        remap = self._remaps.get(job.task)
        max_steps = spec.max_steps or int(getattr(env, "max_steps", 0) or 500)
        meta = getattr(policy, "metadata", None) or {}
        execute_horizon = spec.execute_horizon or meta.get("execute_horizon")

        act_spec = getattr(getattr(env, "embodiment", None), "action", None)
        low = high = None
        if act_spec is not None and act_spec.low is not None and act_spec.high is not None:
            low = np.asarray(act_spec.low, dtype=np.float32)
            high = np.asarray(act_spec.high, dtype=np.float32)
        n_clipped = 0

        env_s = 0.0
        t0 = time.perf_counter()
        obs, reset_info = env.reset(seed=job.seed)
        env_s += time.perf_counter() - t0
        policy.reset()
        from vlastack.evaluation.subgoal import SubgoalTracker

        tracker = SubgoalTracker.for_policy(policy)  # CoT-VLA: subgoal vs the real frame t+k
        # Fingerprint of the initial simulator state (the privileged one when the env exposes
        # it: the policy's state may not include object poses).
        raw = reset_info.get("raw_obs", obs.get("observation.state", np.zeros(0)))
        if isinstance(raw, dict):  # named arrays (PushT: agent, block and goal poses)
            raw = [np.ravel(np.asarray(raw[k], dtype=np.float64)) for k in sorted(raw)]
            raw = np.concatenate(raw) if raw else np.zeros(0)
        state0 = np.asarray(raw, dtype=np.float32)
        init_sha = hashlib.sha256(np.round(state0, 5).tobytes()).hexdigest()[:16]
        instruction = str(getattr(env, "instruction", obs.get("task", "")))
        cam_key = _image_key(env, obs)
        frames: list[np.ndarray] = []
        if job.record_video and cam_key:
            frames.append(np.asarray(obs[cam_key]))

        two_rate = self._two_rate_runtime(policy, env, execute_horizon)
        executed: list[np.ndarray] = []
        chunk_starts: list[int] = []
        latencies_ms: list[float] = []
        pending: deque[np.ndarray] = deque()
        ensembler = None
        # a policy whose history advances every control step (LeRobot's Diffusion Policy)
        observe = getattr(policy, "observe", None)
        success = False
        steps_to_success = None
        step = 0
        for step in range(1, max_steps + 1):
            if two_rate is not None:
                pobs = remap.obs(obs) if remap else obs
                before = two_rate.last_chunk_id
                t0 = time.perf_counter()
                action = np.asarray(two_rate.step(pobs), dtype=np.float32)
                if two_rate.last_chunk_id != before:  # a chunk was computed on this tick
                    latencies_ms.append((time.perf_counter() - t0) * 1e3)
                    if not spec.ensemble:
                        chunk_starts.append(step - 1)
                    if tracker is not None:
                        tracker.after_infer(step - 1, pobs)
                if remap:
                    action = remap.actions(action)
                pending.append(action)
            elif spec.ensemble or not pending:
                pobs = remap.obs(obs) if remap else obs
                t0 = time.perf_counter()
                chunk = np.asarray(policy.infer(pobs)["actions"], dtype=np.float32)
                latencies_ms.append((time.perf_counter() - t0) * 1e3)
                if tracker is not None:
                    tracker.after_infer(step - 1, pobs)
                if chunk.ndim == 3:  # (1, H, A) from a batched policy
                    chunk = chunk[0]
                if remap:
                    chunk = remap.actions(chunk)
                horizon = chunk.shape[0]
                if execute_horizon is None:
                    execute_horizon = horizon
                if spec.ensemble:
                    if ensembler is None:
                        ensembler = _make_ensembler()
                    pending = deque([np.asarray(ensembler.update(chunk), dtype=np.float32)])
                else:
                    chunk_starts.append(step - 1)
                    pending.extend(chunk[: max(1, min(int(execute_horizon), horizon))])
            elif callable(observe):
                observe(remap.obs(obs) if remap else obs)
            action = pending.popleft()
            if spec.clip_actions and low is not None:
                clipped = np.clip(action, low, high)
                n_clipped += bool(np.any(clipped != action))
                action = clipped
            executed.append(action)
            t0 = time.perf_counter()
            obs, _r, terminated, truncated, info = env.step(action)
            env_s += time.perf_counter() - t0
            if tracker is not None:
                tracker.on_frame(step, remap.obs(obs) if remap else obs)
            if job.record_video and cam_key:
                frames.append(np.asarray(obs[cam_key]))
            if info.get("success"):
                success, steps_to_success = True, step
                break
            if terminated or truncated:
                break

        acts = np.stack(executed) if executed else np.zeros((0, 1), dtype=np.float32)
        control_hz = _control_hz(env)
        policy_ms = sum(latencies_ms)
        if two_rate is not None:
            self._close_two_rate()
            policy_ms = sum(two_rate.tick_ms)  # ticks where only System 2 ran count too
        mem = peak_memory_mb()
        record = EpisodeRecord(
            task=job.task,
            episode=job.episode,
            seed=job.seed,
            status="success" if success else "failure",
            steps=step,
            steps_to_success=steps_to_success,
            instruction=instruction,
            difficulty=job.difficulty,
            condition=spec.condition,
            mean_squared_jerk=mean_squared_jerk(acts, dt_s=1.0 / control_hz),
            chunk_jump=chunk_boundary_jump(acts, chunk_starts),
            num_chunks=len(latencies_ms),
            latencies_ms=[round(x, 4) for x in latencies_ms],
            peak_rss_mb=mem["peak_rss_mb"],
            peak_cuda_mb=mem["peak_cuda_mb"],
            initial_state_sha=init_sha,
            attempts=job.attempts,
            extra={
                "execute_horizon": execute_horizon,
                "env_s": round(env_s, 6),
                "policy_s": round(policy_ms / 1e3, 6),
                "max_steps": max_steps,
                "control_hz": control_hz,
                "clipped_steps": n_clipped,
                **({"embodiment": meta["embodiment_name"]} if meta.get("embodiment_name") else {}),
                **({"remap": self.remap_notes[job.task]} if job.task in self.remap_notes else {}),
                **({"subgoal": sg} if tracker and (sg := tracker.summary()) else {}),
                **({"high_level": _two_rate_extra(two_rate)} if two_rate is not None else {}),
            },
        )
        if frames and spec.out_dir:
            from vlastack.evaluation.video import annotate_frames, write_mp4

            outcome = f"SUCCESS at step {steps_to_success}" if success else f"FAIL ({step} steps)"
            name = video_name(job.task, job.episode, success)
            write_mp4(
                Path(spec.out_dir) / "videos" / name,
                annotate_frames(frames, instruction, outcome),
                fps=spec.video_fps,
            )
            record.video = f"videos/{name}"
        record.wall_s = time.perf_counter() - t_start
        return record

    def _two_rate_runtime(self, policy: Any, env: Any, execute_horizon: int | None) -> Any:
        """The two-rate runtime of an episode (reset), or None without ``high_level_hz``."""
        self._close_two_rate()  # an episode that raised left its runtime open
        if self.spec.high_level_hz is None:
            return None
        from vlastack.serving.hierarchy import HierarchicalRuntime

        kw: dict[str, Any] = {} if self.spec.ensemble else {"execute_horizon": execute_horizon}
        rt = HierarchicalRuntime(
            policy,
            "ensemble" if self.spec.ensemble else "sync",
            high_level_hz=self.spec.high_level_hz,
            control_hz=_control_hz(env),
            high_level_async=self.spec.high_level_async,
            **kw,
        )
        rt.reset()
        self._two_rate = rt
        return rt

    def _close_two_rate(self) -> None:
        if self._two_rate is not None:
            self._two_rate.close()  # joins its System 2 thread
            self._two_rate = None

    def close(self) -> None:
        self._close_two_rate()
        for env in self._envs.values():
            close = getattr(env, "close", None)
            if close:
                close()


def _two_rate_extra(runtime: Any) -> dict[str, Any]:
    """The episode's two-rate summary, with every tick's wall time (ms) for the run's own."""
    return {**runtime.summary(), "tick_ms": [round(x, 3) for x in runtime.tick_ms]}


def _control_hz(env: Any) -> float:
    """The env's control rate (its embodiment's), 1 Hz when it declares none."""
    return float(getattr(getattr(env, "embodiment", None), "control_hz", 0.0) or 1.0)


def _image_key(env: Any, obs: dict[str, Any]) -> str | None:
    cam = getattr(env, "camera", None)
    if cam and f"observation.images.{cam}" in obs:
        return f"observation.images.{cam}"
    keys = sorted(k for k in obs if k.startswith("observation.images."))
    return keys[0] if keys else None


def error_record(job: Job, message: str) -> EpisodeRecord:
    return EpisodeRecord(
        task=job.task,
        episode=job.episode,
        seed=job.seed,
        status="error",
        difficulty=job.difficulty,
        attempts=job.attempts,
        error=message[-2000:],
    )


def _make_ensembler() -> Any:
    """ACT temporal ensembling (m = 0.01) from ``vlastack.serving.runtime``."""
    try:
        runtime = importlib.import_module("vlastack.serving.runtime")
    except ImportError as exc:
        raise ConfigError(
            "--ensemble needs vlastack.serving.runtime, which this build lacks; "
            "drop --ensemble to execute chunks open-loop"
        ) from exc
    cls = getattr(runtime, "TemporalEnsembler", None)
    if cls is None:
        raise ConfigError(
            "--ensemble needs vlastack.serving.runtime.TemporalEnsembler, which this build lacks"
        )
    return cls()


__all__ = ["EpisodeRunner", "Job", "RunSpec", "error_record", "video_name"]
