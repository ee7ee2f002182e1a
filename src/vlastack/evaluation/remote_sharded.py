"""A remote simulator's episodes sharded over an executor (the process pool or Ray tasks).

``evaluate_remote`` runs every episode in one client process in order. ``evaluate_remote_sharded``
hands them out one (task, seed) at a time to the workers of a ``vlastack.executors`` executor,
so ALOHA and LIBERO run on Ray (``--executor ray``, local or ``--ray-address``) or on several
local processes, with the same per-episode outcomes.

Each worker keeps a ``RemoteEvalWork``: on its first job it loads the policy, serves it on a free
loopback port (``ServerThread``) and starts the simulator's client with the simulator venv's
python in job-stream mode (``envs.remote.common.serve_jobs``): requests on the client's stdin,
one JSON answer a line on an inherited pipe. The worker itself runs with vlastack's interpreter
(torch, the policy); only the client runs with the simulator's, so the simulator venv needs no
Ray (a Ray worker started with ``runtime_env={"py_executable": ...}`` must import ``ray``, which
the simulator venvs do not have). The plan (which episodes exist: ALOHA's seeds, LIBERO's init
states) comes from a worker's client too, so the driver needs no simulator installed.

A worker that dies loses only its episode, which is retried once, then recorded as an error
(``evaluation.pool.run_on_executor``); so is an episode the client reports as failed to run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlastack.envs.remote.runner import (
    VERSION_PACKAGES,
    check_venv,
    client_env,
    default_venv,
    sim_spec,
)
from vlastack.errors import ConfigError, VlastackError
from vlastack.evaluation.episode import Job
from vlastack.evaluation.metrics import EpisodeRecord
from vlastack.evaluation.pool import MAX_ATTEMPTS, _progress_bar, _reraise, run_on_executor
from vlastack.evaluation.remote import (
    _as_policy,
    _cameras_for,
    _finish_record,
    finish_remote_manifest_and_summary,
    remote_manifest,
)
from vlastack.evaluation.results import EvalResults, start_results_folder, write_results_folder
from vlastack.executors import ExecutorChoice, as_choice, make_executor


@dataclass
class RemoteJob(Job):
    """One episode of a remote simulator: ``client_job`` is the plan entry its client runs."""

    client_job: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanRequest:
    """Ask a worker's client which episodes ``episodes`` per task from ``seed`` are."""

    episodes: int
    seed: int
    key: tuple[str, int] = ("plan", -1)


class RemoteEvalWork:
    """One worker's policy server and simulator client, built on its first job; picklable
    before that (it travels to spawned processes and Ray workers)."""

    def __init__(
        self,
        sim: str,
        venv: str,
        policy: Any,
        *,
        embodiment: str | None,
        image_size: int,
        cameras: tuple[str, ...] | None,
        max_steps: int | None,
        execute_horizon: int | None,
        condition: str,
        client_args: tuple[str, ...] = (),
        torch_threads: int | None = None,
    ) -> None:
        self.sim, self.venv, self.policy = sim, venv, policy
        self.embodiment = embodiment
        self.image_size = image_size
        self.cameras = cameras
        self.max_steps, self.execute_horizon = max_steps, execute_horizon
        self.condition = condition
        self.client_args = client_args
        self.torch_threads = torch_threads
        self._live: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_live": None}

    # -- the worker's server and client ------------------------------------------------------
    def _load_policy(self) -> Any:
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        spec = sim_spec(self.sim)
        if self.embodiment is not None and isinstance(self.policy, (str, Path)):
            from vlastack.evaluation.loading import load_policy, resolve_checkpoint_dir

            return load_policy(resolve_checkpoint_dir(self.policy), embodiment=self.embodiment)
        return _as_policy(self.policy, spec)[0]

    def _start(self) -> dict[str, Any]:
        from vlastack.serving.server import ServerThread

        spec = sim_spec(self.sim)
        python = check_venv(spec.family, Path(self.venv))
        live: dict[str, Any] = {}
        if self._live is not None and "policy" in self._live:
            live["policy"] = self._live["policy"]  # a restarted client keeps the loaded policy
        else:
            live["policy"] = self._load_policy()
        cams = self.cameras or _cameras_for(live["policy"], spec)
        live["cameras"] = cams
        live["tmp"] = tempfile.TemporaryDirectory(prefix="vlastack-remote-worker-")
        tmp = Path(live["tmp"].name)
        live["actions"] = tmp / "actions"
        live["log"] = tmp / "sim_client.log"
        live["server"] = ServerThread(live["policy"], host="127.0.0.1", port=0).start()
        read_fd, write_fd = os.pipe()
        cmd = [
            str(python),
            "-m",
            spec.module,
            *spec.args,
            "--port",
            str(live["server"].port),
            "--image-size",
            str(self.image_size),
            "--actions-dir",
            str(live["actions"]),
            "--result-fd",
            str(write_fd),
            *(["--max-steps", str(self.max_steps)] if self.max_steps else []),
            *(["--execute-horizon", str(self.execute_horizon)] if self.execute_horizon else []),
            *(["--cameras", ",".join(cams)] if cams else []),
            *self.client_args,
        ]
        with open(live["log"], "w") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            live["proc"] = subprocess.Popen(
                cmd,
                env=client_env(tmp),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
                text=True,
            )
        os.close(write_fd)  # the client holds it: end of file here when the client exits
        live["results"] = os.fdopen(read_fd, "r")
        return live

    def _log_tail(self, n: int = 15) -> str:
        try:
            lines = Path(self._live["log"]).read_text(errors="replace").splitlines()  # type: ignore[index]
        except (OSError, TypeError, KeyError):
            return ""
        return "\n".join(lines[-n:])

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request to the client, its answer; raises ``RuntimeError`` (with the client's
        last log lines) when the client is gone, and restarts it on the next request."""
        if self._live is None or "proc" not in self._live or self._live["proc"].poll() is not None:
            self._stop_client()
            self._live = self._start()
        live = self._live
        try:
            live["proc"].stdin.write(json.dumps(request) + "\n")
            live["proc"].stdin.flush()
            line = live["results"].readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            proc = live["proc"]
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            tail = self._log_tail()
            self._stop_client()  # the next request starts a new client
            raise RuntimeError(f"the simulator client exited with code {proc.returncode}:\n{tail}")
        return dict(json.loads(line))

    # -- jobs --------------------------------------------------------------------------------
    def __call__(self, job: RemoteJob | PlanRequest) -> tuple[str, Any, Any]:
        try:
            if isinstance(job, PlanRequest):
                names = VERSION_PACKAGES[sim_spec(self.sim).family]
                answer = self._ask(
                    {"plan": {"episodes": job.episodes, "seed": job.seed, "versions": names}}
                )
                assert self._live is not None
                return ("plan", job.key, {**answer, "cameras": list(self._live["cameras"])})
            raw = self._ask({"job": job.client_job})
        except VlastackError as exc:  # a setup mistake (no venv, bad checkpoint): stop the run
            return ("fatal", job.key, (type(exc).__name__, str(exc)))
        except Exception:
            return ("error", job.key, traceback.format_exc(limit=8))
        if raw.get("status") == "error":  # the episode failed to run: the caller retries once
            return ("error", job.key, str(raw.get("error") or "episode error"))
        assert self._live is not None
        actions_dir = Path(self._live["actions"])
        rec = _finish_record(raw, actions_dir, self.condition)
        name = rec.extra.pop("actions_file", None)  # the worker's temporary copy: gone below
        if name:
            with contextlib.suppress(OSError):
                (actions_dir / name).unlink()
        return ("done", job.key, rec.to_dict())

    def _stop_client(self) -> None:
        live = self._live
        if live is None:
            return
        proc = live.pop("proc", None)
        if proc is not None:
            with contextlib.suppress(OSError, BrokenPipeError, ValueError):
                proc.stdin.close()  # end of stdin: the client closes its simulator and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for key, stop in (("results", "close"), ("server", "stop"), ("tmp", "cleanup")):
            obj = live.pop(key, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    getattr(obj, stop)()

    def close(self) -> None:
        self._stop_client()
        self._live = None


def _plan(ex: Any, episodes: int, seed: int) -> dict[str, Any]:
    """The plan from one worker's client (retried once, as an episode is)."""
    why = "no answer"
    for _attempt in range(MAX_ATTEMPTS):
        ex.submit(PlanRequest(episodes, seed))
        while True:
            done, lost = ex.poll(timeout_s=0.5)
            if done:
                kind, _key, payload = done[0][1]
                if kind == "plan":
                    return dict(payload)
                if kind == "fatal":
                    _reraise(*payload)
                why = str(payload)
                break
            if lost:
                why = lost[0][1]
                break
    raise VlastackError(f"could not get the episode plan from the simulator client: {why}")


def evaluate_remote_sharded(
    policy: Any,
    sim: str = "aloha/transfer_cube",
    *,
    episodes: int = 10,
    seed: int = 0,
    workers: int = 2,
    executor: str | ExecutorChoice | None = None,
    ray_address: str | None = None,
    out_dir: str | Path | None = None,
    max_steps: int | None = None,
    execute_horizon: int | None = None,
    image_size: int = 224,
    cameras: tuple[str, ...] | None = None,
    venv: str | Path | None = None,
    embodiment: str | None = None,
    episode_timeout_s: float | None = None,
    condition: str = "default",
    label: str | None = None,
    progress: bool = True,
    client_args: tuple[str, ...] = (),
) -> EvalResults:
    """``evaluate_remote``'s evaluation, each episode a job of ``executor`` (``"pool"`` or
    ``"ray"``) on ``workers`` workers; ``policy`` is a checkpoint folder (or a picklable policy
    or zero-arg factory). The simulator venv (``venv``, default ``default_venv(family)``) must
    exist at the same path wherever a worker runs."""
    choice = as_choice(executor, ray_address)
    spec = sim_spec(sim)
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ConfigError(f"workers={workers}: a sharded remote evaluation needs >= 1 worker")
    venv_path = (Path(venv) if venv is not None else default_venv(spec.family)).absolute()
    if not choice.address:  # the workers run here: say now what is missing
        check_venv(spec.family, venv_path)
    checkpoint: str | None = None
    if isinstance(policy, (str, Path)):
        if not Path(policy).exists():
            raise ConfigError(f"checkpoint {policy} does not exist; pass a checkpoint folder")
        from vlastack.evaluation.loading import resolve_checkpoint_dir

        checkpoint = policy = str(resolve_checkpoint_dir(policy))
    threads = max(1, (os.cpu_count() or 1) // workers)
    work = RemoteEvalWork(
        sim,
        str(venv_path),
        policy,
        embodiment=embodiment,
        image_size=image_size,
        cameras=tuple(cameras) if cameras else None,
        max_steps=max_steps,
        execute_horizon=execute_horizon,
        condition=condition,
        client_args=tuple(client_args),
        torch_threads=threads,
    )
    out = Path(out_dir) if out_dir else None
    records: list[EpisodeRecord] = []
    t0 = time.perf_counter()
    ex = make_executor(choice, work, workers, episode_timeout_s)
    try:
        plan = _plan(ex, episodes, seed)
        jobs: list[Job] = [
            RemoteJob(
                task=str(j["task"]),
                task_index=0,
                episode=int(j["episode"]),
                seed=int(j["seed"]),
                record_video=False,
                client_job=j,
            )
            for j in plan["jobs"]
        ]
        manifest = remote_manifest(
            spec,
            sim,
            checkpoint=checkpoint,
            policy=policy,
            episodes=episodes,
            seed=seed,
            max_steps=max_steps,
            execute_horizon=execute_horizon,
            image_size=image_size,
            cameras=plan["cameras"],
            condition=condition,
            venv=venv_path,
            sim_versions=plan["versions"],
            workers=workers,
        )
        manifest["executor"] = choice.label
        if out:
            start_results_folder(out, manifest)
        bar = _progress_bar(len(jobs), progress)

        def finish(rec: EpisodeRecord) -> None:
            records.append(rec)
            if out:  # as they arrive: an interrupted run keeps its finished episodes
                with open(out / "episodes.jsonl", "a") as f:
                    f.write(json.dumps(rec.to_dict()) + "\n")
            bar.update(1)

        try:
            run_on_executor(ex, jobs, finish)
        finally:
            bar.close()
    finally:
        ex.close()
    wall_s = time.perf_counter() - t0
    order = {job.key: i for i, job in enumerate(jobs)}
    records.sort(key=lambda r: order[(r.task, r.episode)])  # the plan's order, whoever ran it
    name = label or (Path(checkpoint).name if checkpoint else type(policy).__name__)
    summary = finish_remote_manifest_and_summary(
        manifest, records, sim, checkpoint, condition, name, wall_s, workers
    )
    summary["timing"]["executor"] = choice.label
    if out:
        write_results_folder(out, manifest, records, summary)
    return EvalResults(records, summary, manifest, out)


__all__ = ["PlanRequest", "RemoteEvalWork", "RemoteJob", "evaluate_remote_sharded"]
