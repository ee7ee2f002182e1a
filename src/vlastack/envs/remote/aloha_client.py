"""ALOHA sim (gym-aloha) evaluation client: runs in ``.venv-aloha`` and queries a policy server.

Protocol of ACT (Zhao et al. 2023, ``imitate_episodes.py``): transfer-cube and insertion, 50 Hz
joint-position control with 14-d actions, episodes of 400 steps, success = the env reward reaches
its maximum 4. Observations go out in openpi's ALOHA style (REFERENCE.md §1.6): ``state`` (14,)
and ``images/{cam_high,...}`` uint8 CHW, 224×224 letterboxed. Only the cameras the policy uses
are rendered, without shadows or multisampling (~25× faster on a CPU than gym-aloha's step,
which renders three 640×480 cameras with shadows).

    python -m vlastack.envs.remote.aloha_client --task transfer_cube --port 8000 --out r.jsonl
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Any

import numpy as np

from vlastack.envs.remote.common import add_common_args, pad_to_square, run_client

# openpi's camera names -> MuJoCo cameras of gym-aloha's scene. openpi's sim client sends only
# cam_high (= "top"); the other three are the natural counterparts in the scene.
CAMERAS = {
    "cam_high": "top",
    "cam_low": "angle",
    "cam_left_wrist": "left_wrist",
    "cam_right_wrist": "right_wrist",
}
INSTRUCTIONS = {
    "transfer_cube": "pick up the cube with the right arm and hand it over to the left arm",
    "insertion": "pick up the peg and the socket and insert the peg into the socket",
}
MAX_STEPS = 400  # ACT's episode_len for both sim tasks (LeRobot's gym_aloha config too)
EXECUTE_HORIZON = 10  # openpi examples/aloha_sim: ActionChunkBroker(action_horizon=10)
MAX_REWARD = 4


class AlohaSim:
    """gym-aloha's dm_control task driven directly, rendering only the requested cameras."""

    control_hz = 50.0
    action_dim = 14

    def __init__(
        self,
        task: str = "transfer_cube",
        cameras: tuple[str, ...] = ("cam_high",),
        image_size: int = 224,
        prompt: str | None = None,
        send_prompt: bool = True,
    ) -> None:
        from gym_aloha.env import AlohaEnv

        if task not in INSTRUCTIONS:
            raise SystemExit(f"unknown ALOHA task {task!r}; choose from {sorted(INSTRUCTIONS)}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras:
            raise SystemExit(f"unknown ALOHA camera(s) {unknown}; choose from {sorted(CAMERAS)}")
        if not 16 <= image_size <= 640:
            raise SystemExit(f"--image-size {image_size} must be in 16..640 (offscreen buffer)")
        self.name = task
        self.task = f"aloha/{task}"
        self.instruction = prompt or INSTRUCTIONS[task]
        self.send_prompt = send_prompt
        self.cameras = tuple(cameras)
        self.image_size = image_size
        # Rendered at gym-aloha's 4:3 aspect, then letterboxed, like openpi's resize_with_pad of
        # a 640×480 frame: the field of view matches the ALOHA sim datasets.
        self.render_hw = (round(image_size * 3 / 4), image_size)
        # AlohaEnv only builds the dm_control environment here; its reset/step are not used
        # (they render three 640×480 cameras every step).
        self._env = AlohaEnv(task)._env
        self.physics = self._env.physics
        self._task = self._env.task
        quality = self.physics.model.vis.quality
        quality.shadowsize = 0  # shadows and MSAA dominate CPU render time (ENVIRONMENT.md)
        quality.offsamples = 0
        self._task.get_observation = self._raw_observation  # instance override: no renders

    def _raw_observation(self, physics: Any) -> collections.OrderedDict:
        return collections.OrderedDict(qpos=self._task.get_qpos(physics))

    def _render(self, camera: str) -> np.ndarray:
        h, w = self.render_hw
        img = self.physics.render(height=h, width=w, camera_id=CAMERAS[camera])
        return pad_to_square(img, self.image_size)[0]

    def _obs(self, qpos: np.ndarray) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "state": np.asarray(qpos, dtype=np.float32),
            # dm_control returns upright HWC images; openpi's ALOHA inputs are CHW.
            "images": {
                c: np.ascontiguousarray(self._render(c).transpose(2, 0, 1)) for c in self.cameras
            },
        }
        if self.send_prompt:
            obs["prompt"] = self.instruction
        return obs

    def object_pixels(self) -> dict[str, list[float]]:
        """Where the red object (cube / peg) projects in each sent image, as (u, v) from top-left.

        Recorded per episode so anyone can check the images arrived upright and unmirrored.
        """
        from dm_control.mujoco.engine import Camera

        h, w = self.render_hw
        top, left = (self.image_size - h) // 2, (self.image_size - w) // 2
        xyz1 = np.r_[self.physics.data.qpos[16:19], 1.0]
        out = {}
        for c in self.cameras:
            xs, ys, s = Camera(self.physics, h, w, CAMERAS[c]).matrix @ xyz1
            out[c] = [round(float(xs / s) + left, 2), round(float(ys / s) + top, 2)]
        return out

    def jobs(self, episodes: int, seed: int) -> list[dict[str, Any]]:
        return [{"task": self.task, "episode": e, "seed": seed + e} for e in range(episodes)]

    def reset(self, job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        from gym_aloha.tasks.sim import BOX_POSE
        from gym_aloha.utils import sample_box_pose, sample_insertion_pose

        # As gym_aloha.env.AlohaEnv.reset: object poses come from the seed via a module global.
        seed = int(job["seed"])
        self._task.random.seed(seed)
        self._task._random = np.random.RandomState(seed)
        if self.name == "transfer_cube":
            BOX_POSE[0] = sample_box_pose(seed)
        else:
            BOX_POSE[0] = np.concatenate(sample_insertion_pose(seed))
        ts = self._env.reset()
        self.max_reward = 0.0
        info = {
            "initial_state": self.physics.data.qpos.copy(),
            "extra": {"object_px": self.object_pixels(), "cameras": list(self.cameras)},
        }
        return self._obs(ts.observation["qpos"]), info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]:
        ts = self._env.step(np.asarray(action, dtype=np.float64))
        reward = float(ts.reward or 0.0)
        self.max_reward = max(self.max_reward, reward)
        return self._obs(ts.observation["qpos"]), reward >= MAX_REWARD, False, {"reward": reward}

    def episode_extra(self) -> dict[str, Any]:
        return {"max_reward": self.max_reward, "success_reward": MAX_REWARD}

    def close(self) -> None:
        self.physics.free()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="transfer_cube", choices=sorted(INSTRUCTIONS))
    p.add_argument(
        "--cameras",
        default="cam_high",
        help=f"comma list of openpi camera names to render and send; from {sorted(CAMERAS)}",
    )
    p.add_argument("--prompt", default=None, help="instruction sent as 'prompt'")
    p.add_argument("--no-prompt", action="store_true", help="send no 'prompt' (openpi's sim)")
    add_common_args(p)
    args = p.parse_args(argv)
    sim = AlohaSim(
        args.task,
        cameras=tuple(c.strip() for c in args.cameras.split(",") if c.strip()),
        image_size=args.image_size,
        prompt=args.prompt,
        send_prompt=not args.no_prompt,
    )
    if args.execute_horizon is None:
        args.execute_horizon = EXECUTE_HORIZON
    return run_client(sim, args, MAX_STEPS)


if __name__ == "__main__":
    sys.exit(main())
