"""PushT adapter (gym-pusht; task of Chi et al. 2023, Diffusion Policy) with its official protocol.

A circular agent pushes a T-shaped block onto a fixed goal pose. Reward = clip(coverage / 0.95,
0, 1); success when coverage > 0.95 (the episode terminates); at most 300 steps at 10 Hz; the
evaluation seeds are 100000..100049 and the score is the mean over episodes of the episode's
maximum reward. Note: gym-pusht draws initial states with gymnasium's Generator, so seed 100000
does not give the same start as diffusion_policy's legacy ``RandomState`` (numbers are comparable
with LeRobot's gym-pusht evaluations, not bit-identical with the original paper's runs).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.envs.base import ObsDict, ScriptedExpert, VlaEnv, check_action
from vlastack.errors import ConfigError, require
from vlastack.image_size import DEFAULT_IMAGE_SIZE

MAX_STEPS = 300
CONTROL_HZ = 10.0
SUCCESS_COVERAGE = 0.95
TEST_SEEDS = list(range(100000, 100050))
INSTRUCTION = "push the T-shaped block onto the green target"
CAMERA = "top"


def embodiment(image_size: tuple[int, int]) -> EmbodimentSpec:
    h, w = image_size
    return EmbodimentSpec(
        robot_type="pusht",
        cameras=[CameraSpec(CAMERA, h, w, description="top-down view of the 512x512 px workspace")],
        state=VectorSpec(
            names=["agent_x", "agent_y"],
            units=["px", "px"],
            kind="absolute",
            low=[0.0, 0.0],
            high=[512.0, 512.0],
            description="agent position in workspace pixels (image rows = +y)",
        ),
        action=VectorSpec(
            names=["target_x", "target_y"],
            units=["px", "px"],
            kind="absolute",
            low=[0.0, 0.0],
            high=[512.0, 512.0],
            description="PD-controller target position of the agent, workspace pixels",
        ),
        control_hz=CONTROL_HZ,
        description="2-D point pusher (pymunk), 10 Hz absolute position targets",
    )


class PushTEnv(VlaEnv):
    """gym-pusht behind the vlastack contract; ``info["raw_obs"]`` has the block/goal poses."""

    def __init__(
        self,
        *,
        camera: str | None = None,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        seed: int | None = None,
        max_steps: int = MAX_STEPS,
        clip_actions: bool = False,
    ) -> None:
        camera = camera or CAMERA
        if camera != CAMERA:
            raise ConfigError(f"PushT has one camera, '{CAMERA}'; got camera='{camera}'")
        h, w = int(image_size[0]), int(image_size[1])
        if h <= 0 or w <= 0:
            raise ConfigError(f"image_size={image_size} must be two positive integers (H, W)")
        if max_steps < 1:
            raise ConfigError(f"max_steps={max_steps} must be >= 1")
        gym = require("gymnasium", "sim", "the PushT environment")
        require("gym_pusht", "sim", "the PushT environment")
        self.task_name = "pusht"
        self.instruction = INSTRUCTION
        self.camera = camera
        self.max_steps = max_steps
        self.clip_actions = clip_actions
        self.image_size = (h, w)
        self.embodiment = embodiment((h, w))
        self._gym_env = gym.make(
            "gym_pusht/PushT-v0",
            obs_type="pixels_agent_pos",
            render_mode="rgb_array",
            observation_width=w,
            observation_height=h,
            max_episode_steps=None,
            disable_env_checker=True,
        )
        self._raw = self._gym_env.unwrapped
        self._seed_rng = np.random.default_rng(seed)
        self._steps = 0
        self.action_space = gym.spaces.Box(0.0, 512.0, (2,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                self.image_key: gym.spaces.Box(0, 255, (h, w, 3), dtype=np.uint8),
                "observation.state": gym.spaces.Box(0.0, 512.0, (2,), dtype=np.float32),
                "task": gym.spaces.Text(max_length=256),
            }
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        raw_obs, raw_info = self._raw.reset(seed=int(seed), options=options)
        self._steps = 0
        info = {"success": False, "seed": int(seed), "coverage": self._raw._get_coverage()}
        info["raw_obs"] = self._raw_obs(raw_info)
        return self._obs(raw_obs), info

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        a = check_action(action, self.embodiment, clip=self.clip_actions, where="pusht")
        if self._steps >= self.max_steps:
            raise ConfigError(f"pusht: step() after the episode ended ({self.max_steps} steps)")
        raw_obs, reward, terminated, _, raw_info = self._raw.step(a.astype(np.float64))
        self._steps += 1
        success = bool(raw_info["is_success"])
        truncated = (not terminated) and self._steps >= self.max_steps
        info = {
            "success": success,
            "coverage": float(raw_info["coverage"]),
            "raw_obs": self._raw_obs(raw_info),
        }
        return self._obs(raw_obs), float(reward), bool(terminated), truncated, info

    def close(self) -> None:
        env = getattr(self, "_gym_env", None)
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
            self._gym_env = None

    def make_expert(self, *, noise: float = 0.0, seed: int | None = None) -> ScriptedExpert:
        from vlastack.envs.experts.pusht import PushTExpert

        return PushTExpert(noise=noise, seed=seed)

    @staticmethod
    def _raw_obs(raw_info: dict[str, Any]) -> dict[str, np.ndarray]:
        return {
            "agent_pos": np.asarray(raw_info["pos_agent"], dtype=np.float64),
            "agent_vel": np.asarray(raw_info["vel_agent"], dtype=np.float64),
            "block_pose": np.asarray(raw_info["block_pose"], dtype=np.float64),
            "goal_pose": np.asarray(raw_info["goal_pose"], dtype=np.float64),
        }

    def _obs(self, raw_obs: dict[str, np.ndarray]) -> ObsDict:
        img = np.ascontiguousarray(raw_obs["pixels"], dtype=np.uint8)
        self._last_image = img
        return {
            self.image_key: img,
            "observation.state": np.asarray(raw_obs["agent_pos"], dtype=np.float32),
            "task": self.instruction,
        }
