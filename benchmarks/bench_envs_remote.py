"""ALOHA in its own venv: simulator steps/s alone vs over the openpi protocol (issue 3).

Rows: gym-aloha's own ``step`` (three 640×480 cameras with shadows; a few steps only), our
``AlohaSim`` alone (one camera, 224² letterboxed, shadows/MSAA off) and the full remote path
(``evaluate_remote`` with the toy ALOHA policy served in this process) querying every 10 steps
(openpi's ActionChunkBroker) and every step. Needs ``.venv-aloha``. Prints a table and a
last-line JSON. ``--libero-steps N`` also times LIBERO alone (CPU render settings vs defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from vlastack.envs.remote import runner  # noqa: E402
from vlastack.evaluation.remote import evaluate_remote  # noqa: E402

SIM_ALONE = r"""
import json, sys, time
import numpy as np
from vlastack.envs.remote.aloha_client import AlohaSim
steps, gym_steps = int(sys.argv[1]), int(sys.argv[2])
sim = AlohaSim("transfer_cube", cameras=("cam_high",), image_size=224)
obs, _ = sim.reset({"task": sim.task, "episode": 0, "seed": 0})
action = np.asarray(obs["state"], np.float64)
sim.step(action)  # warm-up: first render makes the GL context
t0 = time.perf_counter()
for _ in range(steps):
    sim.step(action)
alone = steps / (time.perf_counter() - t0)
t0 = time.perf_counter()
for _ in range(steps):
    sim._env.step(action)
physics = steps / (time.perf_counter() - t0)
from gym_aloha.env import AlohaEnv
env = AlohaEnv("transfer_cube")
env.reset(seed=0)
env.step(action.astype(np.float32))
t0 = time.perf_counter()
for _ in range(gym_steps):
    env.step(action.astype(np.float32))
gym = gym_steps / (time.perf_counter() - t0)
print(json.dumps({"sim_alone": alone, "physics_only": physics, "gym_aloha_default": gym}))
"""


LIBERO_ALONE = r"""
import json, sys, time
import numpy as np
from vlastack.envs.remote.libero_client import LiberoSim
out = {}
for cpu in (True, False):
    sim = LiberoSim("libero_spatial", task_ids=[0], cpu_render=cpu)
    job = sim.jobs(1, 0)[0]
    sim.reset(job)  # first reset builds the scene
    t0 = time.perf_counter(); sim.reset(job); reset_s = time.perf_counter() - t0
    a = np.zeros(7); a[-1] = -1
    t0 = time.perf_counter()
    for _ in range(int(sys.argv[1])):
        sim.step(a)
    key = "cpu_render" if cpu else "default_render"
    out[key] = {"step_ms": (time.perf_counter() - t0) / int(sys.argv[1]) * 1e3, "reset_s": reset_s}
    sim.close()
print(json.dumps(out))
"""


def _in_venv(code: str, venv: str, *argv: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [str(runner.venv_python(venv)), "-c", code, *argv],
            env=runner.client_env(Path(tmp)),
            capture_output=True,
            text=True,
            check=True,
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def sim_alone(steps: int, gym_steps: int, venv: str) -> dict[str, float]:
    return _in_venv(SIM_ALONE, venv, str(steps), str(gym_steps))


def remote(steps: int, execute_horizon: int, venv: str) -> dict[str, float]:
    from vlastack.serving.toy import ToyPolicy

    t0 = time.perf_counter()
    res = evaluate_remote(
        ToyPolicy("aloha", action_horizon=50),
        "aloha/transfer_cube",
        episodes=1,
        max_steps=steps,
        execute_horizon=execute_horizon,
        venv=venv,
        progress=False,
    )
    wall_s = time.perf_counter() - t0
    (rec,) = res.records
    if rec.status == "error":
        raise RuntimeError(rec.error)
    # Episode loop rate (client side, excludes process start and env build) and end-to-end.
    lat = res.summary["overall"]["latency"]
    return {
        "steps_per_s": rec.steps / rec.wall_s,
        "end_to_end_steps_per_s": rec.steps / wall_s,
        "startup_s": wall_s - rec.wall_s,
        "queries": rec.num_chunks,
        "round_trip_p50_ms": lat["p50_ms"],
        "round_trip_p95_ms": lat["p95_ms"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="steps per measurement (ACT episode)")
    p.add_argument("--gym-steps", type=int, default=5)
    p.add_argument("--venv", default=str(runner.default_venv("aloha")))
    p.add_argument(
        "--libero-steps", type=int, default=0, help="also time LIBERO (needs .venv-libero)"
    )
    args = p.parse_args()
    if not runner.venv_python(args.venv).exists():
        sys.exit(f"{args.venv} is absent: python -m vlastack.envs.remote.runner --make-venv aloha")
    res: dict[str, object] = {"cpu_count": os.cpu_count(), "steps": args.steps}
    alone = sim_alone(args.steps, args.gym_steps, args.venv)
    res.update(alone)
    r10 = remote(args.steps, 10, args.venv)
    r1 = remote(args.steps, 1, args.venv)
    res["remote_h10"], res["remote_h1"] = r10, r1
    res["protocol_overhead_h10"] = 1 - r10["steps_per_s"] / alone["sim_alone"]
    res["protocol_overhead_h1"] = 1 - r1["steps_per_s"] / alone["sim_alone"]
    print(f"ALOHA transfer_cube, cam_high 224x224, {args.steps} steps, {os.cpu_count()} CPUs")
    print(f"{'path':44s} {'steps/s':>9s} {'ms/step':>8s}")
    rows = [
        ("gym-aloha step (3 cams 640x480, shadows)", alone["gym_aloha_default"]),
        ("physics only (no render)", alone["physics_only"]),
        ("AlohaSim alone (1 cam, shadows/MSAA off)", alone["sim_alone"]),
        ("remote, query every 10 steps (openpi)", r10["steps_per_s"]),
        ("remote, query every step", r1["steps_per_s"]),
    ]
    for name, rate in rows:
        print(f"{name:44s} {rate:9.1f} {1000 / rate:8.2f}")
    print(
        f"protocol overhead vs sim alone: {res['protocol_overhead_h10']:.1%} (every 10), "
        f"{res['protocol_overhead_h1']:.1%} (every step); round trip p50 "
        f"{r1['round_trip_p50_ms']:.2f} ms; client start-up {r10['startup_s']:.1f} s"
    )
    libero_venv = str(runner.default_venv("libero"))
    if args.libero_steps and runner.venv_python(libero_venv).exists():
        lib = _in_venv(LIBERO_ALONE, libero_venv, str(args.libero_steps))
        res["libero_spatial"] = lib
        for k, v in lib.items():
            print(
                f"LIBERO libero_spatial 256² x2 cams, {k}: {v['step_ms']:.1f} ms/step, "
                f"reset (+10 wait steps) {v['reset_s']:.2f} s"
            )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
