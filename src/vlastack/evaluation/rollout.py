"""Closed-loop rollouts of a policy in simulated environments, in parallel worker processes.

``evaluate`` runs ``episodes_per_task`` episodes per task with seeds ``seed + task_index *
stride + episode``, executes ``execute_horizon`` actions of each predicted chunk (or ensembles
chunks, ACT-style), records per-episode metrics, videos, a manifest of the protocol, and
aggregates. A crashed episode or worker is retried once, then recorded as ``error``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import multiprocessing as mp
import os
import re
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, MissingExtraError, VlastackError
from vlastack.evaluation.metrics import (
    EpisodeRecord,
    chunk_boundary_jump,
    mean_squared_jerk,
    peak_memory_mb,
    summarize,
)
from vlastack.policy_formats import load_registered_policy

ACTION_REMAP_MODES = ("strict", "pad")
MAX_ATTEMPTS = 2  # the first try plus one retry


class PolicyLike(Protocol):
    def reset(self) -> None: ...

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...


PolicyFactory = Callable[[], PolicyLike]


# ---------------------------------------------------------------------------------------------
# Loading environments and policies
# ---------------------------------------------------------------------------------------------
def env_module(env_name: str) -> ModuleType:
    """The module providing ``make_env``/``list_tasks``/``difficulty_of`` for ``env_name``
    (``vlastack.envs``, whose registry also holds the environments plugins register)."""
    try:
        import vlastack.envs as envs
    except ImportError as exc:
        raise MissingExtraError(
            exc.name or "gymnasium", "sim", f"simulated environment {env_name!r}"
        ) from exc
    if not hasattr(envs, "make_env"):
        raise ConfigError(f"vlastack.envs in this build has no make_env; cannot run {env_name!r}")
    return envs


def resolve_tasks(env_name: str) -> list[str]:
    """A suite name (``metaworld/mt10``) expands to its tasks; a single task stays itself."""
    mod = env_module(env_name)
    try:
        tasks = list(mod.list_tasks(env_name))
    except (VlastackError, KeyError, ValueError):
        tasks = []
    return tasks or [env_name]


def difficulty(env_name: str, task: str) -> str | None:
    fn = getattr(env_module(env_name), "difficulty_of", None)
    if fn is None:
        return None
    try:
        return None if (d := fn(task)) is None else str(d)
    except Exception:
        return None


def mixture_members(checkpoint: str | Path) -> list[Any]:
    """The robots a mixture checkpoint was trained on (``EmbodimentEntry`` list, default
    first), read from its JSON files only; empty for a single-robot or unreadable checkpoint
    (loading it then reports what is wrong)."""
    try:
        from vlastack.training.checkpoint import FORMAT_VERSION, Checkpoint, resolve_checkpoint

        path = Path(resolve_checkpoint(checkpoint))
        config = json.loads((path / "config.json").read_text())
        if not isinstance(config, dict) or not config.get("mixture"):
            return []
        normalization = json.loads((path / "normalization.json").read_text())
    except (ImportError, OSError, ValueError, VlastackError):
        return []
    # Weights are not needed to list the members, so none are read.
    ckpt = Checkpoint(path, {}, config, normalization, None, FORMAT_VERSION)
    return ckpt.embodiments()


def check_embodiment_name(checkpoint: str | Path, name: str) -> None:
    """Raise a ConfigError naming the members when ``name`` (``--embodiment``) is not one of a
    mixture checkpoint's members (by member name, or a robot_type naming exactly one)."""
    members = mixture_members(checkpoint)
    if not members:
        return  # a single-robot checkpoint: Policy.from_checkpoint checks the name
    by_robot = [m for m in members if m.embodiment and m.embodiment.robot_type == name]
    if any(m.name == name for m in members) or len(by_robot) == 1:
        return
    shared = " (that robot_type is shared by several; use the member name)" if by_robot else ""
    raise ConfigError(
        f"--embodiment {name!r}{shared}: {checkpoint} was trained on a mixture of "
        f"{[m.name for m in members]}; pass one of those member names"
    )


def load_policy(
    checkpoint: str | Path,
    *,
    expect_embodiment: EmbodimentSpec | None = None,
    embodiment: str | None = None,
) -> PolicyLike:
    """Load a checkpoint folder as a Policy: a folder that a registered checkpoint format claims
    (``vlastack.policy_formats``, added by plugins) loads with it, any other as a native one.

    For a mixture checkpoint, ``embodiment`` names the member to act as; without it the member
    whose embodiment matches ``expect_embodiment`` (the environment's) is chosen, else the first
    (the environment check then explains the mismatch or remaps). A single-robot checkpoint
    loads as before (``expect_embodiment`` is left to that check, so ``--action-remap pad``
    still works).
    """
    path = Path(checkpoint)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; pass a checkpoint folder")
    other = load_registered_policy(path, expect_embodiment=expect_embodiment, embodiment=embodiment)
    if other is not None:
        return other
    try:
        from vlastack.policy import Policy
    except ImportError as exc:
        raise ConfigError(f"cannot load {path}: vlastack.policy is unavailable ({exc})") from exc
    members = mixture_members(path)
    if not members:
        return Policy.from_checkpoint(path, embodiment=embodiment)
    if embodiment is not None:
        check_embodiment_name(path, embodiment)
        return Policy.from_checkpoint(path, embodiment=embodiment)
    fits = expect_embodiment is not None and any(
        m.embodiment is not None and not m.embodiment.differences(expect_embodiment)
        for m in members
    )
    return Policy.from_checkpoint(path, expect_embodiment=expect_embodiment if fits else None)


def resolve_checkpoint_dir(checkpoint: str | Path) -> Path:
    """A run folder or a ``last`` pointer resolves to its step folder (so the manifest hashes the
    weights actually used); other folders stay as given."""
    try:
        from vlastack.training.checkpoint import resolve_checkpoint

        return Path(resolve_checkpoint(checkpoint))
    except (ImportError, VlastackError):
        return Path(checkpoint).resolve()


def checkpoint_label(checkpoint: str | Path) -> str:
    """``runs/pick/checkpoints/step_001000`` -> ``pick@step_001000``; else the folder name."""
    p = Path(checkpoint)
    if p.name.startswith("step_"):
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        return f"{run.name}@{p.name}"
    return p.name


def checkpoint_embodiment(checkpoint: str | Path) -> EmbodimentSpec | None:
    p = Path(checkpoint) / "embodiment.json"
    return EmbodimentSpec.load(p) if p.exists() else None


def policy_embodiment(policy: Any) -> EmbodimentSpec | None:
    emb = getattr(policy, "embodiment", None)
    if emb is None:
        emb = (getattr(policy, "metadata", None) or {}).get("embodiment")
    if isinstance(emb, dict):
        emb = EmbodimentSpec.from_dict(emb, source="policy metadata")
    return emb if isinstance(emb, EmbodimentSpec) else None


def mismatch_message(
    policy_emb: EmbodimentSpec,
    env_emb: EmbodimentSpec,
    task: str,
    note: str = "",
) -> str:
    """``note`` (ending in a space) says which mixture member was tried and why."""
    diffs = policy_emb.differences(env_emb)
    return (
        f"the checkpoint's embodiment ({policy_emb.robot_type}) does not match environment "
        f"{task!r} ({env_emb.robot_type}): "
        + "; ".join(f"policy {d} env" for d in diffs)
        + ". "
        + note
        + "Evaluate on an environment of the robot it was trained on, or pass --action-remap pad "
        "(alias --allow-mismatch) to zero-pad/truncate actions and state to the environment's "
        "sizes (a warning is logged and the manifest records it; results are then not comparable)."
    )


class _Remap:
    """Zero-pad/truncate action (policy A → env A) and state (env S → policy S), rename camera."""

    def __init__(self, policy_emb: EmbodimentSpec, env_emb: EmbodimentSpec) -> None:
        self.action_dim = env_emb.action.dim
        self.state_dim = policy_emb.state.dim
        self.camera_rename: dict[str, str] = {}
        pol_cams = [c.key for c in policy_emb.cameras]
        env_cams = [c.key for c in env_emb.cameras]
        if len(pol_cams) == 1 and len(env_cams) == 1 and pol_cams != env_cams:
            self.camera_rename = {env_cams[0]: pol_cams[0]}

    def obs(self, obs: dict[str, Any]) -> dict[str, Any]:
        out = {self.camera_rename.get(k, k): v for k, v in obs.items()}
        s = np.asarray(out.get("observation.state", np.zeros(0)), dtype=np.float32)
        out["observation.state"] = _fit(s, self.state_dim)
        return out

    def actions(self, chunk: np.ndarray) -> np.ndarray:
        return _fit(chunk, self.action_dim)


def _fit(x: np.ndarray, dim: int) -> np.ndarray:
    """Truncate or zero-pad the last axis to ``dim``."""
    if x.shape[-1] >= dim:
        return x[..., :dim]
    out = np.zeros((*x.shape[:-1], dim), dtype=x.dtype)
    out[..., : x.shape[-1]] = x
    return out


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


# ---------------------------------------------------------------------------------------------
# One episode
# ---------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """Everything a worker needs to run episodes; picklable (spawned workers get a copy)."""

    env: str
    checkpoint: str | None = None
    policy_factory: PolicyFactory | None = None
    image_size: tuple[int, int] = (128, 128)
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
        self._remaps: dict[str, _Remap | None] = {}
        self.remap_notes: dict[str, str] = {}
        # A mixture checkpoint is loaded knowing the first env's embodiment, to act as the
        # member matching it; its embodiment.json is only the default member's.
        self._members = (
            [m.name for m in mixture_members(spec.checkpoint)] if spec.checkpoint else []
        )
        self._env_embodiment: EmbodimentSpec | None = None

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

    def _check_embodiment(self, task: str, env: Any) -> _Remap | None:
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
        return _Remap(pol, env_emb)

    def prepare(self, task: str) -> None:
        """Build the policy and the task's env and check their embodiments. A VlastackError
        here is a setup mistake that stops the evaluation; errors later are episode errors."""
        self.env(task)
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

        executed: list[np.ndarray] = []
        chunk_starts: list[int] = []
        latencies_ms: list[float] = []
        pending: deque[np.ndarray] = deque()
        ensembler = None
        success = False
        steps_to_success = None
        step = 0
        for step in range(1, max_steps + 1):
            if spec.ensemble or not pending:
                pobs = remap.obs(obs) if remap else obs
                t0 = time.perf_counter()
                chunk = np.asarray(policy.infer(pobs)["actions"], dtype=np.float32)
                latencies_ms.append((time.perf_counter() - t0) * 1e3)
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
            action = pending.popleft()
            if spec.clip_actions and low is not None:
                clipped = np.clip(action, low, high)
                n_clipped += bool(np.any(clipped != action))
                action = clipped
            executed.append(action)
            t0 = time.perf_counter()
            obs, _r, terminated, truncated, info = env.step(action)
            env_s += time.perf_counter() - t0
            if job.record_video and cam_key:
                frames.append(np.asarray(obs[cam_key]))
            if info.get("success"):
                success, steps_to_success = True, step
                break
            if terminated or truncated:
                break

        acts = np.stack(executed) if executed else np.zeros((0, 1), dtype=np.float32)
        emb = getattr(env, "embodiment", None)
        control_hz = float(getattr(emb, "control_hz", 0.0) or 1.0)
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
                "policy_s": round(sum(latencies_ms) / 1e3, 6),
                "max_steps": max_steps,
                "control_hz": control_hz,
                "clipped_steps": n_clipped,
                **({"embodiment": meta["embodiment_name"]} if meta.get("embodiment_name") else {}),
                **({"remap": self.remap_notes[job.task]} if job.task in self.remap_notes else {}),
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

    def close(self) -> None:
        for env in self._envs.values():
            close = getattr(env, "close", None)
            if close:
                close()


def _image_key(env: Any, obs: dict[str, Any]) -> str | None:
    cam = getattr(env, "camera", None)
    if cam and f"observation.images.{cam}" in obs:
        return f"observation.images.{cam}"
    keys = sorted(k for k in obs if k.startswith("observation.images."))
    return keys[0] if keys else None


def _error_record(job: Job, message: str) -> EpisodeRecord:
    return EpisodeRecord(
        task=job.task,
        episode=job.episode,
        seed=job.seed,
        status="error",
        difficulty=job.difficulty,
        attempts=job.attempts,
        error=message[-2000:],
    )


# ---------------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------------
def _worker_main(spec: RunSpec, jobs: Any, results: Any) -> None:
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


class _Pool:
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


# ---------------------------------------------------------------------------------------------
# evaluate()
# ---------------------------------------------------------------------------------------------
@dataclass
class EvalResults:
    records: list[EpisodeRecord]
    summary: dict[str, Any]
    manifest: dict[str, Any]
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        return self.summary["overall"]["success_rate"]


def episode_seed(seed: int, task_index: int, episode: int, episodes_per_task: int) -> int:
    """Deterministic seed of one episode: seed + task offset + episode."""
    stride = max(1000, episodes_per_task)
    return seed + task_index * stride + episode


def make_jobs(
    env: str,
    tasks: list[str],
    episodes_per_task: int,
    seed: int,
    video_episodes_per_task: int,
    seeds: dict[str, list[int]] | None = None,
) -> list[Job]:
    jobs = []
    for ti, task in enumerate(tasks):
        diff = difficulty(env, task)
        for ep in range(episodes_per_task):
            s = seeds[task][ep] if seeds else episode_seed(seed, ti, ep, episodes_per_task)
            jobs.append(Job(task, ti, ep, s, ep < video_episodes_per_task, difficulty=diff))
    return jobs


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def evaluate(
    policy: str | Path | PolicyFactory,
    env: str,
    *,
    episodes_per_task: int = 10,
    seed: int = 0,
    workers: int = 1,
    execute_horizon: int | None = None,
    ensemble: bool = False,
    max_steps: int | None = None,
    image_size: tuple[int, int] = (128, 128),
    camera: str | None = None,
    video_episodes_per_task: int = 0,
    out_dir: str | Path | None = None,
    action_remap: str = "strict",
    clip_actions: bool = True,
    tasks: list[str] | None = None,
    seeds: dict[str, list[int]] | None = None,
    condition: str = "default",
    label: str | None = None,
    run_info: dict[str, Any] | None = None,
    episode_timeout_s: float | None = None,
    progress: bool = True,
    video_fps: float = 20.0,
    embodiment: str | None = None,
) -> EvalResults:
    """Roll out ``policy`` (checkpoint folder or picklable zero-arg factory) on ``env``.

    ``env`` is a task or a suite (expanded with ``list_tasks``; ``tasks`` overrides). ``workers=0``
    runs in this process (no crash isolation); ``workers>=1`` spawns that many processes, each
    building its own env and policy. Results go to ``out_dir`` when given: ``manifest.json``,
    ``episodes.jsonl``, ``summary.json``, ``videos/``. A checkpoint trained on a mixture of
    robots acts as the member matching the environment's embodiment, or ``embodiment`` (a
    member name or robot_type) when given.
    """
    from vlastack.evaluation.manifest import build_manifest

    if action_remap not in ACTION_REMAP_MODES:
        raise ConfigError(f"action_remap={action_remap!r}; expected one of {ACTION_REMAP_MODES}")
    if episodes_per_task < 1:
        raise ConfigError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if execute_horizon is not None and execute_horizon < 1:
        raise ConfigError(f"execute_horizon must be >= 1, got {execute_horizon}")
    checkpoint = None if callable(policy) else str(policy)
    if checkpoint is not None:
        if not Path(checkpoint).exists():
            raise ConfigError(f"checkpoint {checkpoint} does not exist; pass a checkpoint folder")
        checkpoint = str(resolve_checkpoint_dir(checkpoint))
        if embodiment is not None:  # fail here, not in every worker
            check_embodiment_name(checkpoint, embodiment)
    task_list = list(tasks) if tasks else resolve_tasks(env)
    jobs = make_jobs(env, task_list, episodes_per_task, seed, video_episodes_per_task, seeds)
    ncpu = os.cpu_count() or 1
    spec = RunSpec(
        env=env,
        checkpoint=checkpoint,
        policy_factory=policy if callable(policy) else None,
        image_size=(int(image_size[0]), int(image_size[1])),
        camera=camera,
        max_steps=max_steps,
        execute_horizon=execute_horizon,
        ensemble=ensemble,
        action_remap=action_remap,
        clip_actions=clip_actions,
        out_dir=str(out_dir) if out_dir else None,
        video_fps=video_fps,
        condition=condition,
        torch_threads=max(1, ncpu // max(1, workers)) if workers >= 1 else None,
        embodiment=embodiment,
    )
    manifest = build_manifest(
        spec,
        tasks=task_list,
        episodes_per_task=episodes_per_task,
        seed=seed,
        workers=workers,
        video_episodes_per_task=video_episodes_per_task,
        seeds={t: [j.seed for j in jobs if j.task == t] for t in task_list},
    )
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "manifest.json", json.dumps(manifest, indent=2))
        (out / "episodes.jsonl").write_text("")

    t0 = time.perf_counter()
    records = _run_jobs(spec, jobs, workers, episode_timeout_s, progress, out)
    wall_s = time.perf_counter() - t0
    order = {j.key: i for i, j in enumerate(jobs)}
    records.sort(key=lambda r: order[(r.task, r.episode)])

    # Record what workers resolved (execute horizon from the checkpoint, remapping) and the
    # initial-state fingerprints that a re-run from this manifest must reproduce.
    resolved = sorted({str(r.extra.get("execute_horizon")) for r in records if r.extra})
    manifest["protocol"]["execute_horizon_resolved"] = resolved
    remaps = {r.task: r.extra["remap"] for r in records if r.extra.get("remap")}
    if remaps:
        manifest["protocol"]["action_remap_applied"] = remaps
    acted_as = sorted({r.extra["embodiment"] for r in records if r.extra.get("embodiment")})
    if embodiment is not None or acted_as:
        manifest["protocol"]["embodiment"] = embodiment
        manifest["protocol"]["embodiment_resolved"] = acted_as
    manifest["initial_states"] = {
        f"{r.task}#{r.episode}": r.initial_state_sha for r in records if r.initial_state_sha
    }
    summary = summarize(records, baseline_condition=condition)
    env_s = sum(r.extra.get("env_s", 0.0) for r in records)
    policy_s = sum(r.extra.get("policy_s", 0.0) for r in records)
    steps = sum(r.steps for r in records if r.status != "error")
    summary["run"] = {
        "label": label or (checkpoint_label(checkpoint) if checkpoint else "policy"),
        "kind": "eval",
        "env": env,
        "checkpoint": checkpoint,
        "condition": condition,
        **({"embodiment": acted_as[0] if len(acted_as) == 1 else acted_as} if acted_as else {}),
        **(run_info or {}),
    }
    summary["timing"] = {
        "wall_s": wall_s,
        "workers": workers,
        "env_steps": steps,
        "steps_per_s": steps / wall_s if wall_s > 0 else None,
        "env_s": env_s,
        "policy_s": policy_s,
    }
    if out:
        _write_atomic(out / "manifest.json", json.dumps(manifest, indent=2))
        _write_atomic(
            out / "episodes.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in records)
        )
        _write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return EvalResults(records, summary, manifest, out)


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="episodes", unit="ep", disable=not enabled, dynamic_ncols=True)


def _run_jobs(
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
                    finish(_error_record(job, err))
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
    pool = _Pool(spec, min(workers, len(jobs)), episode_timeout_s)
    pending = deque(jobs)
    remaining = len(jobs)
    consecutive_deaths = 0

    def failed(job: Job, why: str) -> None:
        nonlocal remaining
        if job.attempts >= MAX_ATTEMPTS:
            finish(_error_record(job, why))
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


__all__ = [
    "EvalResults",
    "EpisodeRunner",
    "Job",
    "RunSpec",
    "episode_seed",
    "evaluate",
    "check_embodiment_name",
    "load_policy",
    "mixture_members",
    "resolve_tasks",
]
