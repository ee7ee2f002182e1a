"""The episode loop shared by the remote simulator clients (ALOHA, LIBERO).

Runs inside a simulator's own virtualenv, so it imports only numpy and ``vlastack.serving.client``
(numpy + msgpack + websockets, no torch). It queries the policy server for an action chunk,
executes ``execute_horizon`` actions of it (openpi: ActionChunkBroker / ``replan_steps``), and
writes one JSON line per episode in the field names of ``vlastack.evaluation.metrics.
EpisodeRecord``. Smoothness metrics need vlastack's torch-side code, so the executed actions go
to an ``.npy`` file per episode and the runner computes them in the main environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class RemoteSim(Protocol):
    """What a client's simulator wrapper provides; observations are already in wire format."""

    instruction: str  # of the task of the current episode
    control_hz: float
    action_dim: int

    def jobs(self, episodes: int, seed: int) -> list[dict[str, Any]]:
        """The episodes to run: dicts with "task" (registry-style name), "episode", "seed"."""
        ...

    def reset(self, job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """-> (observation to send, info with "initial_state" (array) and optional "extra")."""
        ...

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]:
        """-> (observation to send, success, done, info)."""
        ...

    def close(self) -> None: ...


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None)
    p.add_argument("--episodes", type=int, default=1, help="episodes per task")
    p.add_argument("--seed", type=int, default=0, help="episode e uses seed + e")
    p.add_argument("--max-steps", type=int, default=None, help="policy steps per episode")
    p.add_argument(
        "--execute-horizon",
        type=int,
        default=None,
        help="actions executed per policy query (default: the sim's openpi value)",
    )
    p.add_argument("--image-size", type=int, default=224, help="square image side sent (openpi)")
    p.add_argument("--out", default=None, help="JSONL file, one line per episode (appended)")
    p.add_argument("--actions-dir", default=None, help="write executed actions as .npy here")
    p.add_argument("--connect-timeout-s", type=float, default=60.0)
    p.add_argument("--recv-timeout-s", type=float, default=300.0)
    p.add_argument(
        "--result-fd",
        type=int,
        default=None,
        help="job-stream mode (a vlastack worker drives this client): read one JSON request a "
        "line on stdin, answer each with one JSON line on this inherited file descriptor",
    )


def pad_to_square(img_hwc: np.ndarray, size: int) -> tuple[np.ndarray, int, int]:
    """Centre ``img`` (h, w, 3) with h, w <= size on a black size×size canvas.

    Same geometry as openpi's ``image_tools.resize_with_pad`` when the image was rendered at the
    already-resized size (cheaper than rendering 640×480 and resampling). -> (image, top, left).
    """
    h, w = img_hwc.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((size, size, img_hwc.shape[2]), dtype=np.uint8)
    out[top : top + h, left : left + w] = img_hwc
    return out, top, left


def state_sha(state: np.ndarray) -> str:
    """Fingerprint of an initial simulator state (rounded like rollout.py's)."""
    s = np.round(np.asarray(state, dtype=np.float32), 5)
    return hashlib.sha256(s.tobytes()).hexdigest()[:16]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _connect(args: argparse.Namespace) -> Any:
    from vlastack.serving.client import PolicyClient

    return PolicyClient(
        args.host,
        args.port,
        api_key=args.api_key,
        connect_timeout_s=args.connect_timeout_s,
        recv_timeout_s=args.recv_timeout_s,
    )


def run_episode(
    sim: RemoteSim,
    client: Any,
    job: dict[str, Any],
    *,
    max_steps: int,
    execute_horizon: int | None,
    actions_dir: str | None,
) -> dict[str, Any]:
    """One closed-loop episode; returns an EpisodeRecord-shaped dict (status success/failure)."""
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    obs, info = sim.reset(job)
    task, episode = str(job["task"]), int(job["episode"])
    env_s = time.perf_counter() - t0
    client.reset()
    executed: list[np.ndarray] = []
    chunk_starts: list[int] = []
    latencies_ms: list[float] = []
    server_infer_ms: list[float] = []
    pending: deque[np.ndarray] = deque()
    success, steps_to_success, step = False, None, 0
    horizon = execute_horizon
    for step in range(1, max_steps + 1):
        if not pending:
            t0 = time.perf_counter()
            reply = client.infer(obs)
            latencies_ms.append((time.perf_counter() - t0) * 1e3)
            timing = reply.get("server_timing") or {}
            if isinstance(timing, dict) and "infer_ms" in timing:
                server_infer_ms.append(float(timing["infer_ms"]))
            chunk = np.asarray(reply["actions"], dtype=np.float64)
            if chunk.ndim == 1:
                chunk = chunk[None]
            if chunk.ndim != 2 or chunk.shape[1] < sim.action_dim:
                raise ValueError(
                    f"policy returned 'actions' of shape {chunk.shape}; {task} needs "
                    f"(H, {sim.action_dim}) ({sim.action_dim}-d actions, openpi's output layout)"
                )
            # openpi's output transforms keep the leading action_dim dims (AlohaOutputs a[:, :14],
            # LiberoOutputs a[..., :7]); a padded model output works the same here.
            chunk = chunk[:, : sim.action_dim]
            if horizon is None:
                horizon = chunk.shape[0]
            chunk_starts.append(step - 1)
            pending.extend(chunk[: max(1, min(horizon, chunk.shape[0]))])
        action = pending.popleft()
        executed.append(action)
        t0 = time.perf_counter()
        obs, ok, done, _info = sim.step(action)
        env_s += time.perf_counter() - t0
        if ok:
            success, steps_to_success = True, step
            break
        if done:
            break
    extra: dict[str, Any] = {
        "execute_horizon": horizon,
        "env_s": round(env_s, 6),
        "policy_s": round(sum(latencies_ms) / 1e3, 6),
        "max_steps": max_steps,
        "control_hz": sim.control_hz,
        "chunk_starts": chunk_starts,
        "latency": "client round trip (serialize + network + server + policy)",
        **dict(info.get("extra") or {}),
        **(sim.episode_extra() if hasattr(sim, "episode_extra") else {}),
    }
    if server_infer_ms:
        extra["server_infer_ms_mean"] = round(float(np.mean(server_infer_ms)), 4)
    if actions_dir and executed:
        name = f"{task.replace('/', '__')}_ep{episode:04d}.npy"
        path = Path(actions_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp.npy")
        np.save(tmp, np.stack(executed).astype(np.float32))
        tmp.replace(path)
        extra["actions_file"] = name
    return {
        "task": task,
        "episode": episode,
        "seed": int(job["seed"]),
        "status": "success" if success else "failure",
        "steps": step,
        "steps_to_success": steps_to_success,
        "instruction": sim.instruction,
        "num_chunks": len(latencies_ms),
        "latencies_ms": [round(x, 4) for x in latencies_ms],
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "initial_state_sha": state_sha(info["initial_state"]),
        "attempts": 1,
        "error": None,
        "wall_s": round(time.perf_counter() - t_start, 4),
        "extra": extra,
    }


def _versions(names: list[str]) -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def _error_rec(sim: RemoteSim, job: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    return {
        **{k: job[k] for k in ("task", "episode", "seed")},
        "status": "error",
        "instruction": sim.instruction,
        "error": f"{type(exc).__name__}: {exc}",
        "extra": {"traceback": traceback.format_exc(limit=6)},
    }


def _dead_connection(exc: BaseException) -> bool:
    from vlastack.serving.client import ServerError

    return isinstance(exc, ServerError) or type(exc).__name__.startswith("Connection")


def serve_jobs(sim: RemoteSim, args: argparse.Namespace, default_max_steps: int) -> int:
    """Job-stream mode (``--result-fd``): a vlastack worker (process pool or Ray task) keeps this
    client and its simulator for many episodes, sharded by (task, seed) across workers.

    Requests, one JSON line each on stdin: ``{"plan": {"episodes": N, "seed": S, "versions":
    [package names]}}`` -> ``{"jobs": sim.jobs(N, S), "versions": {name: version}}``;
    ``{"job": JOB}`` (one of the plan's jobs) -> that episode's record, as ``run_client`` writes
    it. End of stdin ends the client. The answers go to ``--result-fd`` so that whatever the
    simulator prints on stdout cannot corrupt them.
    """
    max_steps = args.max_steps or default_max_steps
    results = os.fdopen(args.result_fd, "w", buffering=1)
    client = _connect(args)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            if "plan" in req:
                plan = req["plan"]
                answer: dict[str, Any] = {
                    "jobs": sim.jobs(int(plan["episodes"]), int(plan["seed"])),
                    "versions": _versions(list(plan.get("versions") or [])),
                }
            else:
                job = req["job"]
                try:
                    answer = run_episode(
                        sim,
                        client,
                        job,
                        max_steps=max_steps,
                        execute_horizon=args.execute_horizon,
                        actions_dir=args.actions_dir,
                    )
                except Exception as exc:  # reported; the worker decides about a retry
                    answer = _error_rec(sim, job, exc)
                    if _dead_connection(exc):
                        client.close()
                        client = _connect(args)
            results.write(json.dumps(answer) + "\n")
    finally:
        client.close()
        sim.close()
        results.close()
    return 0


def run_client(sim: RemoteSim, args: argparse.Namespace, default_max_steps: int) -> int:
    """Run ``args.episodes`` episodes and append their records to ``args.out``; exit code.
    With ``--result-fd``, serve a worker's requests instead (``serve_jobs``)."""
    if args.result_fd is not None:
        return serve_jobs(sim, args, default_max_steps)
    if not args.out:
        raise SystemExit("--out FILE is required (the JSONL the episodes are appended to)")
    max_steps = args.max_steps or default_max_steps
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    client = _connect(args)
    n_errors = 0
    jobs: list[dict[str, Any]] = []
    try:
        jobs = sim.jobs(args.episodes, args.seed)
        # The plan first, so the runner can tell which episodes a crashed client never ran.
        Path(f"{out}.plan.json").write_text(json.dumps(jobs))
        for job in jobs:
            try:
                rec = run_episode(
                    sim,
                    client,
                    job,
                    max_steps=max_steps,
                    execute_horizon=args.execute_horizon,
                    actions_dir=args.actions_dir,
                )
            except Exception as exc:  # one episode's crash must not lose the others
                n_errors += 1
                rec = _error_rec(sim, job, exc)
                if _dead_connection(exc):
                    client.close()
                    client = _connect(args)  # the old connection is dead after an error frame
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            err = f", {rec['error']}" if rec.get("error") else ""
            print(
                f"[{rec['task']}] episode {rec['episode']} seed {rec['seed']}: {rec['status']} "
                f"({rec.get('steps', 0)} steps{err})",
                file=sys.stderr,
                flush=True,
            )
    finally:
        client.close()
        sim.close()
    return 0 if n_errors < len(jobs) else 1
