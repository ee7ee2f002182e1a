"""Collect scripted-expert demonstrations from simulators into a LeRobot v3 dataset.

Workers (processes of the default pool, or Ray tasks: ``vlastack.executors``) each roll out whole
episodes, one at a time, and send them to the parent, the only writer. The seed of every attempt
is a pure function of (base seed, env name, attempt index), and the parent writes results in
attempt order and keeps the first N successes, so the dataset depends neither on the number of
workers nor on the executor, and a resumed run (``meta/collect_state.json``) continues exactly
where the interrupted one stopped. A crashed worker costs only the episode it was running, which
is retried.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlastack import atomic
from vlastack.errors import ConfigError, DataError
from vlastack.executors import ExecutorChoice, as_choice, make_executor
from vlastack.image_size import DEFAULT_IMAGE_SIZE

STATE_FILE = "meta/collect_state.json"
STATE_VERSION = 1
MAX_RETRIES = 2  # per attempt, after a worker crash or exception
# Settings that change what an episode contains; a resumed run must use the same ones.
_FIXED_SETTINGS = ("image_size", "camera", "noise", "seed", "keep_failures", "state")


def attempt_seed(base_seed: int, env_name: str, attempt: int) -> int:
    """Deterministic episode seed of one attempt (independent of worker count and run history)."""
    task_key = zlib.crc32(env_name.encode())
    return int(np.random.SeedSequence([base_seed, task_key, attempt]).generate_state(1)[0] >> 1)


@dataclass
class EpisodeResult:
    """One rolled-out episode, as a worker returns it. Frame t pairs obs_t with action_t."""

    env_name: str
    attempt: int
    seed: int
    success: bool
    instruction: str
    image_key: str
    images: np.ndarray  # (T, H, W, 3) uint8
    states: np.ndarray  # (T, S) float32
    actions: np.ndarray  # (T, A) float32
    sim_s: float  # wall time of the rollout in the worker

    @property
    def num_frames(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class TaskStats:
    attempts: int = 0
    successes: int = 0
    kept: int = 0
    frames: int = 0
    errors: int = 0

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else float("nan")


@dataclass
class CollectSummary:
    out: str
    tasks: dict[str, TaskStats]
    wall_s: float
    new_episodes: int
    new_frames: int
    workers: int
    messages: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.new_frames / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frames_per_s"] = self.frames_per_s
        return d


# ---- worker side -----------------------------------------------------------------------
_WORKER_ENVS: dict[str, Any] = {}


def _worker_env(env_name: str, options: dict[str, Any]) -> Any:
    from vlastack.envs import make_env

    env = _WORKER_ENVS.get(env_name)
    if env is None:
        env = make_env(
            env_name,
            camera=options["camera"],
            image_size=tuple(options["image_size"]),
            seed=options["seed"],
            **options["env_kwargs"],
        )
        _WORKER_ENVS[env_name] = env
    return env


def collect_tasks(env: str) -> list[str]:
    """The tasks of ``env``: an env or suite name, or a comma list of them (``A,B``, as
    ``bench heads`` takes), in order without duplicates. One dataset holds one robot, so the
    tasks must come from one simulator (the part before ``/``)."""
    from vlastack.envs import list_tasks

    names = [n.strip() for n in env.split(",")]
    if not all(names):
        raise ConfigError(f"--env {env!r}: an empty name in the comma list")
    tasks: list[str] = []
    for name in names:
        tasks += [t for t in list_tasks(name) if t not in tasks]
    families = sorted({t.split("/")[0] for t in tasks})
    if len(families) > 1:
        raise ConfigError(
            f"--env {env!r} mixes simulators {families}; one dataset holds one robot, so collect "
            "from one simulator at a time (and mix datasets in training with --data A,B)"
        )
    return tasks


def run_episode(env_name: str, attempt: int, seed: int, options: dict[str, Any]) -> EpisodeResult:
    """Roll out the scripted expert for one episode (runs in a worker or in-process)."""
    from vlastack.envs.experts import make_expert

    t0 = time.perf_counter()
    env = _worker_env(env_name, options)
    expert = make_expert(env, noise=options["noise"], seed=seed)
    obs, info = env.reset(seed=seed)
    images, states, actions = [], [], []
    success = False
    for _ in range(env.max_steps):
        action = expert.act(info["raw_obs"])
        images.append(obs[env.image_key])
        states.append(obs["observation.state"])
        actions.append(np.asarray(action, dtype=np.float32))
        obs, _, terminated, truncated, info = env.step(action)
        success = success or bool(info["success"])
        if terminated or truncated:
            break
    return EpisodeResult(
        env_name=env_name,
        attempt=attempt,
        seed=seed,
        success=success,
        instruction=env.instruction,
        image_key=env.image_key,
        images=np.stack(images),
        states=np.stack(states).astype(np.float32),
        actions=np.stack(actions),
        sim_s=time.perf_counter() - t0,
    )


class EpisodeFailed(Exception):
    """An episode's exception as a worker reports it (its class name and message)."""


class CollectWork:
    """What one worker runs: ``(env_name, attempt, seed)`` -> ``EpisodeResult``, or
    ``EpisodeFailed`` when the episode raised. Picklable; ``fn`` is ``run_episode`` as the
    parent sees it when the run starts."""

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        self.fn = fn
        self.options = options

    def __call__(self, job: tuple[str, int, int]) -> EpisodeResult | EpisodeFailed:
        try:
            return self.fn(*job, self.options)
        except Exception as exc:  # a simulator error: the parent retries, then records it
            return EpisodeFailed(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        for env in _WORKER_ENVS.values():
            env.close()
        _WORKER_ENVS.clear()


# ---- parent side -----------------------------------------------------------------------
class _State:
    """The sidecar ``meta/collect_state.json``: settings, per-task progress, episode log."""

    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        self.path = root / STATE_FILE
        self.settings = settings
        self.tasks: dict[str, dict[str, Any]] = {}
        self.episodes: list[dict[str, Any]] = []
        self.pending: dict[str, Any] | None = None

    def task(self, name: str) -> dict[str, Any]:
        return self.tasks.setdefault(
            name, {"next_attempt": 0, "kept": 0, "successes": 0, "frames": 0, "errors": 0}
        )

    def save(self) -> None:
        d = {
            "version": STATE_VERSION,
            "settings": self.settings,
            "tasks": self.tasks,
            "episodes": self.episodes,
            "pending": self.pending,
        }
        atomic.write_text(self.path, json.dumps(d, indent=1))

    @classmethod
    def load(cls, root: Path, settings: dict[str, Any]) -> _State:
        path = root / STATE_FILE
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); delete it and the dataset") from None
        old = d.get("settings", {})
        for key in _FIXED_SETTINGS:
            if old.get(key) != settings.get(key):
                raise ConfigError(
                    f"{path}: this dataset was collected with {key}={old.get(key)!r} but the "
                    f"command asks for {key}={settings.get(key)!r}; use the same value to resume "
                    "or choose a new --out"
                )
        st = cls(root, settings)
        st.tasks = d.get("tasks", {})
        st.episodes = d.get("episodes", [])
        st.pending = d.get("pending")
        return st


def _features(spec: Any, Feature: Any) -> dict[str, Any]:
    cam = spec.cameras[0]
    return {
        cam.key: Feature("video", (cam.height, cam.width, 3), ["height", "width", "channels"]),
        "observation.state": Feature("float32", (spec.state.dim,), list(spec.state.names)),
        "action": Feature("float32", (spec.action.dim,), list(spec.action.names)),
    }


def collect(
    env: str,
    out: str | Path,
    *,
    episodes_per_task: int = 20,
    workers: int = 1,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    camera: str | None = None,
    noise: float = 0.1,
    keep_failures: bool = False,
    seed: int = 0,
    max_attempts_factor: float = 3.0,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    start_method: str = "forkserver",
    executor: str | ExecutorChoice | None = None,
    ray_address: str | None = None,
) -> CollectSummary:
    """Collect ``episodes_per_task`` expert episodes for every task of ``env`` into ``out``.

    ``env`` is an env or suite name (``metaworld/mt10``). Only successful episodes are kept unless
    ``keep_failures``; a task stops after ``ceil(max_attempts_factor * episodes_per_task)``
    attempts. Re-running on an existing ``out`` resumes. ``executor`` runs the episodes:
    ``"pool"`` (default; ``workers=1`` runs in this process) or ``"ray"`` (Ray tasks on a local
    instance with ``workers`` CPUs, or the cluster at ``ray_address``); the dataset is the same.
    Returns per-task statistics.
    """
    choice = as_choice(executor, ray_address)
    from vlastack.data.layout import Feature
    from vlastack.data.writer import DatasetWriter
    from vlastack.envs import make_env

    if episodes_per_task < 1:
        raise ConfigError(f"episodes_per_task={episodes_per_task} must be >= 1")
    if workers < 1:
        raise ConfigError(f"workers={workers} must be >= 1")
    if noise < 0:
        raise ConfigError(f"noise={noise} must be >= 0")
    tasks = collect_tasks(env)
    root = Path(out)
    env_kwargs = dict(env_kwargs or {})
    options: dict[str, Any] = {
        "camera": camera,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "seed": seed,
        "noise": float(noise),
        "env_kwargs": env_kwargs,
    }
    settings = {
        "env": env,
        "image_size": options["image_size"],
        "camera": camera,
        "noise": float(noise),
        "seed": seed,
        "keep_failures": keep_failures,
        "state": env_kwargs.get("state", "agent_pos"),
        "episodes_per_task": episodes_per_task,
    }

    t_start = time.perf_counter()
    state_path = root / STATE_FILE
    if state_path.exists():
        state = _State.load(root, settings)
        writer = DatasetWriter.resume(root)
        _reconcile_pending(state, writer)
    else:
        if root.exists() and any(root.iterdir()):
            raise ConfigError(
                f"{root} exists and is not a collection output (no {STATE_FILE}); "
                "choose an empty or new --out directory"
            )
        probe = make_env(tasks[0], camera=camera, image_size=image_size, seed=seed, **env_kwargs)
        spec = probe.embodiment
        if workers == 1 and tasks[0] not in _WORKER_ENVS:
            # in-process collection starts with this task: keep the env (building a Meta-World
            # env costs ~1 s, a sizeable share of a short collection)
            _WORKER_ENVS[tasks[0]] = probe
        else:
            probe.close()
        writer = DatasetWriter.create(
            root,
            fps=int(round(spec.control_hz)),
            features=_features(spec, Feature),
            robot_type=spec.robot_type,
            embodiment=spec,
        )
        state = _State(root, settings)
        state.save()
    state.settings = settings

    max_attempts = int(np.ceil(max_attempts_factor * episodes_per_task))
    summary = CollectSummary(str(root), {}, 0.0, 0, 0, workers)
    runner = _Runner(
        tasks, options, state, writer, summary, episodes_per_task, max_attempts, keep_failures
    )
    try:
        runner.run(workers, progress, start_method, choice)
    finally:
        writer.finalize()
        state.save()
    for name in tasks:
        t = state.task(name)
        summary.tasks[name] = TaskStats(
            attempts=t["next_attempt"],
            successes=t["successes"],
            kept=t["kept"],
            frames=t["frames"],
            errors=t["errors"],
        )
        if t["kept"] < episodes_per_task:
            summary.messages.append(
                f"{name}: only {t['kept']}/{episodes_per_task} episodes after {t['next_attempt']} "
                f"attempts (expert success {t['successes']}/{t['next_attempt']})"
            )
    summary.wall_s = time.perf_counter() - t_start
    return summary


def _reconcile_pending(state: _State, writer: Any) -> None:
    """Decide whether the episode being written when the last run died reached the dataset."""
    pending = state.pending
    if pending is None:
        return
    written = _num_episodes(state.path.parent.parent, writer)
    if written == len(state.episodes) + 1:
        _commit(state, pending)  # it was saved; only the sidecar update was lost
    elif written != len(state.episodes):
        raise DataError(
            f"{state.path}: records {len(state.episodes)} episodes but the dataset holds "
            f"{written}; the two disagree, start a new --out"
        )
    state.pending = None
    state.save()


def _num_episodes(root: Path, writer: Any) -> int:
    n = getattr(writer, "num_episodes", None)
    if n is None:
        from vlastack.data.reader import DatasetReader

        n = DatasetReader(root).num_episodes
    return int(n)


def _commit(state: _State, rec: dict[str, Any]) -> None:
    t = state.task(rec["env"])
    t["next_attempt"] = rec["attempt"] + 1
    t["successes"] += int(rec["success"])
    if rec.get("episode_index") is not None:
        t["kept"] += 1
        t["frames"] += rec["frames"]
        state.episodes.append(rec)
    if rec.get("error"):
        t["errors"] += 1


class _Runner:
    """Schedules attempts per task in order, writes results in attempt order."""

    def __init__(
        self,
        tasks: list[str],
        options: dict[str, Any],
        state: _State,
        writer: Any,
        summary: CollectSummary,
        target: int,
        max_attempts: int,
        keep_failures: bool,
    ) -> None:
        self.tasks = tasks
        self.options = options
        self.state = state
        self.writer = writer
        self.summary = summary
        self.target = target
        self.max_attempts = max_attempts
        self.keep_failures = keep_failures
        self.next_dispatch = {t: state.task(t)["next_attempt"] for t in tasks}
        self.done: dict[str, dict[int, EpisodeResult | Exception]] = {t: {} for t in tasks}
        self.retries: dict[tuple[str, int], int] = {}
        self.requeue: list[tuple[str, int]] = []

    # A task needs more attempts while kept + successes already in flight/buffered < target.
    def _wanted(self, task: str) -> int:
        t = self.state.task(task)
        if t["kept"] >= self.target or t["next_attempt"] >= self.max_attempts:
            return 0
        buffered = self.next_dispatch[task] - t["next_attempt"]
        return max(
            0, min(self.target - t["kept"] - buffered, self.max_attempts - self.next_dispatch[task])
        )

    def _jobs(self, limit: int) -> list[tuple[str, int]]:
        jobs: list[tuple[str, int]] = []
        while self.requeue and len(jobs) < limit:
            jobs.append(self.requeue.pop(0))
        for task in self.tasks:
            for _ in range(self._wanted(task)):
                if len(jobs) >= limit:
                    return jobs
                jobs.append((task, self.next_dispatch[task]))
                self.next_dispatch[task] += 1
        return jobs

    def _job_args(self, job: tuple[str, int]) -> tuple[str, int, int, dict[str, Any]]:
        task, attempt = job
        return task, attempt, attempt_seed(self.options["seed"], task, attempt), self.options

    def run(self, workers: int, progress: bool, start_method: str, choice: ExecutorChoice) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        total = self.target * len(self.tasks)
        already = sum(min(self.state.task(t)["kept"], self.target) for t in self.tasks)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not progress,
        ) as bar:
            self._bar = bar
            self._bar_id = bar.add_task("collecting episodes", total=total, completed=already)
            if workers == 1 and choice.kind == "pool":
                self._run_inline()
            else:
                self._run_executor(choice, workers, start_method)

    def _run_inline(self) -> None:
        try:
            self._run_inline_jobs()
        finally:  # release GL contexts now, not at interpreter exit
            for env in _WORKER_ENVS.values():
                env.close()
            _WORKER_ENVS.clear()

    def _run_inline_jobs(self) -> None:
        """Simulate in this thread; write each finished episode (AV1 encode + parquet, ~10% of
        an episode's time) on one writer thread while the next episode runs. At most one episode
        waits to be written, so memory stays bounded and episodes are written in order; the
        lock keeps scheduling (``_jobs``) from reading the counters a write is updating."""
        lock = threading.Lock()

        def deliver(job: tuple[str, int], res: EpisodeResult | Exception) -> None:
            with lock:
                self._deliver(job, res)

        pending: Future[None] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="vlastack-collect-writer") as write_pool:
            while True:
                with lock:
                    jobs = self._jobs(1)
                if not jobs:
                    if pending is None:
                        break
                    # the episode being written counts as a success in flight; once written,
                    # a failed attempt may call for another one
                    pending.result()
                    pending = None
                    continue
                job = jobs[0]
                try:
                    res = run_episode(*self._job_args(job))
                except Exception as exc:  # a simulator error: retry, then record and go on
                    with lock:
                        self._retry_or_fail(job, exc)
                    continue
                if pending is not None:
                    pending.result()  # a write error surfaces here, before more work is done
                pending = write_pool.submit(deliver, job, res)
            if pending is not None:
                pending.result()

    def _run_executor(self, choice: ExecutorChoice, workers: int, start_method: str) -> None:
        """One episode per worker at a time, so a worker that dies names the attempt it lost."""
        work = CollectWork(run_episode, self.options)
        ex = make_executor(choice, work, workers, start_method=start_method)
        inflight = 0
        try:
            while True:
                for job in self._jobs(ex.free()):
                    ex.submit(self._job_args(job)[:3])
                    inflight += 1
                if not inflight:
                    break
                finished, lost = ex.poll(timeout_s=0.5)
                for args, res in finished:
                    inflight -= 1
                    if isinstance(res, EpisodeFailed):
                        self._retry_or_fail((args[0], args[1]), res)
                    else:
                        self._deliver((args[0], args[1]), res)
                for args, why in lost:
                    inflight -= 1
                    self.summary.messages.append(
                        f"{args[0]} attempt {args[1]}: {why}; its worker was replaced"
                    )
                    self._retry_or_fail((args[0], args[1]), RuntimeError(why))
        except BaseException:
            # SIGTERM (TerminatedError), Ctrl-C, a write error: stop the episodes in flight now
            # rather than wait for them (resume redoes them); the dataset is written only here.
            ex.close(abort=True)
            raise
        ex.close()

    def _retry_or_fail(self, job: tuple[str, int], exc: BaseException) -> None:
        n = self.retries.get(job, 0)
        if n < MAX_RETRIES:
            self.retries[job] = n + 1
            self.requeue.append(job)
        else:
            self._deliver(job, exc if isinstance(exc, Exception) else RuntimeError(str(exc)))

    def _deliver(self, job: tuple[str, int], res: EpisodeResult | Exception) -> None:
        task, _ = job
        self.done[task][job[1]] = res
        t = self.state.task(task)
        # write buffered results of this task in attempt order
        while t["next_attempt"] in self.done[task]:
            attempt = t["next_attempt"]
            r = self.done[task].pop(attempt)
            self._write(task, attempt, r)

    def _write(self, task: str, attempt: int, r: EpisodeResult | Exception) -> None:
        t = self.state.task(task)
        rec: dict[str, Any] = {
            "env": task,
            "attempt": attempt,
            "seed": attempt_seed(self.options["seed"], task, attempt),
            "success": False,
            "episode_index": None,
            "frames": 0,
        }
        if isinstance(r, Exception):
            rec["error"] = str(r) if isinstance(r, EpisodeFailed) else f"{type(r).__name__}: {r}"
            self.summary.messages.append(f"{task} attempt {attempt}: {rec['error']}")
            _commit(self.state, rec)
            self.state.save()
            return
        rec["success"] = bool(r.success)
        keep = (r.success or self.keep_failures) and t["kept"] < self.target
        if keep:
            rec["episode_index"] = len(self.state.episodes)
            rec["frames"] = r.num_frames
            self.state.pending = rec
            self.state.save()
            img_key = r.image_key
            for i in range(r.num_frames):
                self.writer.add_frame(
                    {
                        img_key: r.images[i],
                        "observation.state": r.states[i],
                        "action": r.actions[i],
                    },
                    task=r.instruction,
                )
            ep = self.writer.save_episode(
                extra={
                    "seed": r.seed,
                    "attempt": attempt,
                    "env": task,
                    "success": r.success,
                    "noise": self.options["noise"],
                }
            )
            if isinstance(ep, int):
                rec["episode_index"] = ep
            self.state.pending = None
            self.summary.new_episodes += 1
            self.summary.new_frames += r.num_frames
            self._bar.advance(self._bar_id)
        _commit(self.state, rec)
        self.state.save()
