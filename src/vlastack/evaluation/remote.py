"""Evaluating a policy on a simulator that lives in its own virtualenv (ALOHA, LIBERO).

``evaluate_remote`` serves the policy in this process on a free loopback port (``ServerThread``),
runs the simulator's client (``envs.remote.runner.run_sim_client``) with the simulator venv's
python as a subprocess, reads the per-episode JSONL it writes, and summarises it with
``vlastack.evaluation.metrics`` into the same results folder as ``evaluate``
(``manifest.json``, ``episodes.jsonl``, ``summary.json``).

    python -m vlastack.evaluation.remote --sim aloha/transfer_cube --toy --episodes 2 --out r/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vlastack.envs.remote.runner import (
    SimSpec,
    build_parser,
    check_venv,
    client_env,
    default_venv,
    run_sim_client,
    sim_spec,
    sim_versions,
    venv_main,
)
from vlastack.errors import ConfigError, VlastackError
from vlastack.evaluation.loading import (
    load_policy,
    mixture_members,
    policy_embodiment,
    resolve_checkpoint_dir,
)
from vlastack.evaluation.manifest import build_manifest
from vlastack.evaluation.metrics import (
    EpisodeRecord,
    chunk_boundary_jump,
    mean_squared_jerk,
    summarize,
)
from vlastack.evaluation.results import (
    EvalResults,
    initial_states,
    resolved_horizons,
    run_timing,
    start_results_folder,
    write_results_folder,
)


def member_for_sim(members: Sequence[Any], spec: SimSpec) -> tuple[str | None, str]:
    """The mixture member to act as on a remote simulator, and why. The simulator runs in
    another venv, so there is no EmbodimentSpec here to compare with (as Meta-World has): a
    member fits when its own state and action sizes are the client's; among several, one whose
    name or robot_type names the simulator's family wins. None when no member fits."""
    from vlastack.serving.toy import style_dims

    state, action = style_dims(spec.style)
    fits = [m for m in members if m.state_dim == state and m.action_dim == action]
    if not fits:
        sizes = [(m.name, m.state_dim, m.action_dim) for m in members]
        return None, (
            f"no member has the {spec.family} client's {state}-d state and {action}-d actions "
            f"(members, state, action: {sizes})"
        )

    def named(m: Any) -> bool:
        robot = getattr(m.embodiment, "robot_type", "") or ""
        return spec.family in m.name.lower() or spec.family in robot.lower()

    best = next((m for m in fits if named(m)), fits[0])
    return best.name, f"{state}-d state and {action}-d actions like the {spec.family} client"


def _as_policy(policy: Any, spec: SimSpec | None = None) -> tuple[Any, str | None]:
    """A checkpoint path, a zero-arg factory or a policy object -> (policy, checkpoint or None).
    A mixture checkpoint acts as the member that fits ``spec``'s client (``member_for_sim``)."""
    if isinstance(policy, (str, Path)):
        if not Path(policy).exists():
            raise ConfigError(f"checkpoint {policy} does not exist; pass a checkpoint folder")
        ckpt = str(resolve_checkpoint_dir(policy))
        members = mixture_members(ckpt) if spec is not None else []
        if members and spec is not None:
            name, why = member_for_sim(members, spec)
            log = logging.getLogger("vlastack.eval")
            if name is not None:
                log.info("%s: acting as mixture member %r (%s)", ckpt, name, why)
                return load_policy(ckpt, embodiment=name), ckpt
            log.warning("%s: %s; acting as the first member (--embodiment NAME picks)", ckpt, why)
        return load_policy(ckpt), ckpt
    if not hasattr(policy, "infer") and callable(policy):
        policy = policy()
    if not hasattr(policy, "infer"):
        raise ConfigError(f"{type(policy).__name__} has no infer(obs); pass a Policy or checkpoint")
    return policy, None


def _cameras_for(policy: Any, spec: SimSpec) -> tuple[str, ...]:
    """Render only the cameras the policy uses (by openpi camera name), cam_high by default."""
    if not spec.cameras:
        return ()
    emb = policy_embodiment(policy)
    names = [c.name for c in emb.cameras] if emb is not None else []
    used = tuple(c for c in spec.cameras if c in names)
    return used or spec.cameras[:1]


def _error_record(task: str, episode: int, seed: int, message: str) -> dict[str, Any]:
    return {"task": task, "episode": episode, "seed": seed, "status": "error", "error": message}


def _finish_record(raw: dict[str, Any], actions_dir: Path, condition: str) -> Any:
    """Client JSON -> EpisodeRecord, adding the smoothness metrics computed from its actions."""
    import numpy as np

    rec = EpisodeRecord.from_dict({**raw, "condition": condition})
    name = rec.extra.get("actions_file")
    if name and (actions_dir / name).exists():
        acts = np.load(actions_dir / name)
        hz = float(rec.extra.get("control_hz") or 1.0)
        rec.mean_squared_jerk = mean_squared_jerk(acts, dt_s=1.0 / hz)
        rec.chunk_jump = chunk_boundary_jump(acts, rec.extra.get("chunk_starts") or [0])
    return rec


def remote_manifest(
    spec: SimSpec,
    sim: str,
    *,
    checkpoint: str | None,
    policy: Any,
    episodes: int,
    seed: int,
    max_steps: int | None,
    execute_horizon: int | None,
    image_size: int,
    cameras: Sequence[str],
    condition: str,
    venv: Path,
    sim_versions: dict[str, Any],
    workers: int,
) -> dict[str, Any]:
    """The manifest of a remote evaluation (whichever way its episodes run)."""
    run_spec = SimpleNamespace(
        env=sim,
        checkpoint=checkpoint,
        policy_factory=None if checkpoint else policy,
        max_steps=max_steps,
        execute_horizon=execute_horizon,
        ensemble=False,
        image_size=(image_size, image_size),
        camera=",".join(cameras) or None,
        action_remap="none",
        clip_actions=False,
        condition=condition,
        video_fps=None,
        high_level_hz=None,  # no two-rate loop on the remote runner (cli/eval.py refuses it)
        high_level_async=False,
    )
    manifest = build_manifest(
        run_spec,
        tasks=[sim],
        episodes_per_task=episodes,
        seed=seed,
        workers=workers,
        video_episodes_per_task=0,
        seeds={sim: [seed + e for e in range(episodes)]},
    )
    manifest["protocol"].update(
        {
            "seed_rule": "seed + episode",
            "success": spec.success,
            "remote": {
                "venv": str(venv),
                "client": spec.module,
                "observation_style": f"openpi {spec.style}",
                "transport": "openpi websocket msgpack-numpy over loopback",
                "sim_versions": sim_versions,
            },
        }
    )
    return manifest


def finish_remote_manifest_and_summary(
    manifest: dict[str, Any],
    records: list[EpisodeRecord],
    sim: str,
    checkpoint: str | None,
    condition: str,
    label: str,
    wall_s: float,
    workers: int,
) -> dict[str, Any]:
    """Complete ``manifest`` with what the episodes ran (tasks, seeds, initial states, resolved
    horizons) and return the run's summary."""
    tasks = list(dict.fromkeys(r.task for r in records))
    manifest["protocol"]["tasks"] = tasks
    manifest["protocol"]["seeds"] = {t: [r.seed for r in records if r.task == t] for t in tasks}
    manifest["initial_states"] = initial_states(records)
    manifest["protocol"]["execute_horizon_resolved"] = resolved_horizons(records)
    summary = summarize(records, baseline_condition=condition)
    summary["run"] = {
        "label": label,
        "kind": "eval",
        "env": sim,
        "checkpoint": checkpoint,
        "condition": condition,
        "remote": True,
    }
    summary["timing"] = run_timing(records, wall_s, workers=workers)
    return summary


def evaluate_remote(
    policy: Any,
    sim: str = "aloha/transfer_cube",
    *,
    episodes: int = 10,
    seed: int = 0,
    out_dir: str | Path | None = None,
    max_steps: int | None = None,
    execute_horizon: int | None = None,
    image_size: int = 224,
    cameras: Sequence[str] | None = None,
    venv: str | Path | None = None,
    client_args: Sequence[str] = (),
    timeout_s: float | None = None,
    condition: str = "default",
    label: str | None = None,
    progress: bool = True,
) -> Any:
    """Roll out ``policy`` (checkpoint folder, zero-arg factory or policy object) on ``sim``.

    The simulator runs in its own venv (``venv``, default ``default_venv(family)``) and talks to
    the policy over the openpi protocol. Episode ``e`` uses seed ``seed + e`` (``evaluate``'s rule
    for one task). Returns ``EvalResults``; with ``out_dir``, writes the results folder.
    """
    from vlastack.serving.server import ServerThread

    spec = sim_spec(sim)
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    venv_path = Path(venv) if venv is not None else default_venv(spec.family)
    python = check_venv(spec.family, venv_path)
    pol, checkpoint = _as_policy(policy, spec)
    cams = tuple(cameras) if cameras else _cameras_for(pol, spec)

    out = Path(out_dir) if out_dir else None
    tmp_ctx = tempfile.TemporaryDirectory(prefix="vlastack-remote-")
    tmp = Path(tmp_ctx.name)
    work = out if out is not None else tmp
    work.mkdir(parents=True, exist_ok=True)
    raw_path = work / "client_episodes.jsonl"
    raw_path.write_text("")
    actions_dir = work / "actions"
    log_path = work / "sim_client.log"

    manifest = remote_manifest(
        spec,
        sim,
        checkpoint=checkpoint,
        policy=pol,
        episodes=episodes,
        seed=seed,
        max_steps=max_steps,
        execute_horizon=execute_horizon,
        image_size=image_size,
        cameras=cams,
        condition=condition,
        venv=venv_path,
        sim_versions=sim_versions(spec.family, python),
        workers=1,
    )
    if out:
        start_results_folder(out, manifest)

    t0 = time.perf_counter()
    server = ServerThread(pol, host="127.0.0.1", port=0)
    server.start()
    try:
        cmd = [
            str(python),
            "-m",
            spec.module,
            *spec.args,
            "--port",
            str(server.port),
            "--episodes",
            str(episodes),
            "--seed",
            str(seed),
            "--image-size",
            str(image_size),
            "--out",
            str(raw_path),
            "--actions-dir",
            str(actions_dir),
            *(["--max-steps", str(max_steps)] if max_steps else []),
            *(["--execute-horizon", str(execute_horizon)] if execute_horizon else []),
            *(["--cameras", ",".join(cams)] if cams else []),
            *client_args,
        ]
        rc, tail = run_sim_client(cmd, client_env(tmp), log_path, timeout_s, progress)
    finally:
        server.stop()
    wall_s = time.perf_counter() - t0

    raws = [json.loads(line) for line in raw_path.read_text().splitlines() if line.strip()]
    if rc != 0 and not raws:  # nothing ran (bad venv, import error): fail loudly
        raise VlastackError(
            f"the {sim} client failed (exit {rc}); see {log_path if out else 'its log'}:\n{tail}"
        )
    plan_path = Path(f"{raw_path}.plan.json")
    plan = json.loads(plan_path.read_text()) if plan_path.exists() else []
    by_key = {(str(r["task"]), int(r["episode"])): r for r in raws}
    records: list[EpisodeRecord] = []
    for job in plan:
        raw = by_key.pop((str(job["task"]), int(job["episode"])), None)
        if raw is None:  # the client died before this episode was written
            why = f"simulator client exited with code {rc} before this episode: {tail}"
            raw = _error_record(str(job["task"]), int(job["episode"]), int(job["seed"]), why)
        records.append(_finish_record(raw, actions_dir, condition))
    records.extend(_finish_record(r, actions_dir, condition) for r in by_key.values())

    name = label or (Path(checkpoint).name if checkpoint else type(pol).__name__)
    summary = finish_remote_manifest_and_summary(
        manifest, records, sim, checkpoint, condition, name, wall_s, workers=1
    )
    summary["timing"]["client_exit_code"] = rc
    if out:
        write_results_folder(out, manifest, records, summary)
    tmp_ctx.cleanup()
    return EvalResults(records, summary, manifest, out, extra={"client_log_tail": tail})


# ---------------------------------------------------------------------------------------------
# python -m vlastack.evaluation.remote
# ---------------------------------------------------------------------------------------------
def run_cli(args: argparse.Namespace) -> int:
    """Evaluate as ``args`` (``envs.remote.runner.build_parser``) say; the exit code."""
    try:
        spec = sim_spec(args.sim)
        if args.toy == bool(args.checkpoint):
            raise ConfigError("pass exactly one of --checkpoint CKPT or --toy")
        if args.toy:
            from vlastack.serving.toy import ToyPolicy

            policy: Any = ToyPolicy(spec.style, action_horizon=50 if spec.family == "aloha" else 10)
        else:
            policy = args.checkpoint
        res = evaluate_remote(
            policy,
            args.sim,
            episodes=args.episodes,
            seed=args.seed,
            out_dir=args.out,
            max_steps=args.max_steps,
            execute_horizon=args.execute_horizon,
            image_size=args.image_size,
            cameras=args.cameras.split(",") if args.cameras else None,
            venv=args.venv,
        )
    except VlastackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    o = res.summary["overall"]
    print(
        f"{args.sim}: {o['successes']}/{o['completed']} successes, {o['errors']} errors, "
        f"latency p50 {o['latency']['p50_ms']} ms"
        + (f"; results in {res.out_dir}" if res.out_dir else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser("python -m vlastack.evaluation.remote").parse_args(argv)
    code = venv_main(args)
    return code if code is not None else run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
