"""Meta-World v3 adapter: 50 Sawyer manipulation tasks (Yu et al. 2019, Farama ``metaworld`` 3.x).

Each task gets a hand-written instruction, MT10/MT50 suites and the difficulty groups of Seo et al.
(2022) as used by SmolVLA/LeRobot. Episodes are seeded: one integer seed fixes the object/goal
layout (drawn from the task's own random-reset space, as MT1 does) so collection is reproducible.
Rendering is set up for CPUs (no shadows, no multisampling, offscreen buffer = camera size) and
the corner cameras, which MuJoCo renders upside down, are rotated back to upright.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.envs.base import (
    ObsDict,
    ScriptedExpert,
    VlaEnv,
    check_action,
    make_context_current,
    orient_upright,
)
from vlastack.envs.metaworld_tasks import DIFFICULTY, INSTRUCTIONS, MT10, TASKS, difficulty_of
from vlastack.errors import ConfigError, require
from vlastack.image_size import DEFAULT_IMAGE_SIZE

__all__ = [
    "DIFFICULTY",
    "INSTRUCTIONS",
    "MT10",
    "TASKS",
    "MetaWorldEnv",
    "difficulty_of",
    "embodiment",
]

CAMERAS = ("corner2", "corner", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
# The four corner cameras come out of MuJoCo rotated by 180 degrees; the others are upright.
_RAW_ORIENTATION = {
    "corner": "rot180",
    "corner2": "rot180",
    "corner3": "rot180",
    "corner4": "rot180",
}
# LeRobot moves corner2 to this position (after Seo et al. 2022) for its Meta-World dataset and
# evaluation; used by default so images match LeRobot's ``metaworld_mt50`` data.
LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)

CONTROL_HZ = 80.0  # MuJoCo timestep 0.0025 s x frame_skip 5 = 0.0125 s per step
MAX_STEPS = 500  # MT1 max_path_length

AGENT_POS_NAMES = ["hand_x", "hand_y", "hand_z", "gripper_opening"]
_OBJ_NAMES = [
    f"{obj}_{c}" for obj in ("obj1", "obj2") for c in ("x", "y", "z", "qw", "qx", "qy", "qz")
]
FULL_STATE_NAMES = (
    AGENT_POS_NAMES
    + _OBJ_NAMES
    + [f"prev_{n}" for n in AGENT_POS_NAMES + _OBJ_NAMES]
    + ["goal_x", "goal_y", "goal_z"]
)


def embodiment(
    camera: str, image_size: tuple[int, int], state: str = "agent_pos"
) -> EmbodimentSpec:
    """Sawyer spec: 4-d delta action, agent_pos (4) or full (39) state, one camera."""
    h, w = image_size
    full = state == "full"
    names = FULL_STATE_NAMES if full else AGENT_POS_NAMES
    units = ["normalized" if "gripper" in n else "quaternion" if "_q" in n else "m" for n in names]
    return EmbodimentSpec(
        robot_type="sawyer",
        cameras=[
            CameraSpec(
                camera,
                h,
                w,
                orientation="upright",
                description=f"Meta-World '{camera}' camera, rotated upright by vlastack",
            )
        ],
        state=VectorSpec(
            names=list(names),
            units=units,
            kind="absolute",
            description=(
                "full 39-d Meta-World observation (privileged object and goal poses)"
                if full
                else "end-effector position (m, world frame) and gripper opening in [0, 1]"
            ),
        ),
        action=VectorSpec(
            names=["dx", "dy", "dz", "gripper"],
            units=["cm", "cm", "cm", "effort"],
            kind="delta",
            low=[-1.0, -1.0, -1.0, -1.0],
            high=[1.0, 1.0, 1.0, 1.0],
            gripper_index=3,
            description=(
                "end-effector (mocap) displacement per step, 1.0 = 1 cm; gripper effort "
                "-1 open .. +1 close"
            ),
        ),
        control_hz=CONTROL_HZ,
        description="Rethink Sawyer in Meta-World v3 (MuJoCo), 80 Hz delta end-effector control",
    )


class MetaWorldEnv(VlaEnv):
    """One Meta-World v3 task behind the vlastack observation contract.

    ``state="agent_pos"`` (default) gives the policy the 4-d hand position + gripper opening;
    ``state="full"`` gives the 39-d observation including object and goal poses (privileged).
    The raw 39-d observation is always in ``info["raw_obs"]`` for scripted experts.
    """

    def __init__(
        self,
        task: str,
        *,
        camera: str | None = None,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        seed: int | None = None,
        state: str = "agent_pos",
        max_steps: int = MAX_STEPS,
        terminate_on_success: bool = True,
        clip_actions: bool = False,
        lerobot_camera: bool = True,
    ) -> None:
        if task not in INSTRUCTIONS:
            raise ConfigError(f"unknown Meta-World task '{task}'")
        camera = camera or "corner2"
        if camera not in CAMERAS:
            raise ConfigError(f"Meta-World has no camera '{camera}'; choose one of {list(CAMERAS)}")
        if state not in ("agent_pos", "full"):
            raise ConfigError(f"state='{state}' is unknown; use 'agent_pos' (4-d) or 'full' (39-d)")
        if not (1 <= max_steps <= MAX_STEPS):
            raise ConfigError(f"max_steps={max_steps} must be in 1..{MAX_STEPS} for Meta-World")
        h, w = int(image_size[0]), int(image_size[1])
        if h <= 0 or w <= 0:
            raise ConfigError(f"image_size={image_size} must be two positive integers (H, W)")
        gym = require("gymnasium", "sim", "Meta-World environments")
        require("metaworld", "sim", "Meta-World environments")

        self.task_name = task
        self.instruction = INSTRUCTIONS[task]
        self.camera = camera
        self.max_steps = max_steps
        self.state_mode = state
        self.terminate_on_success = terminate_on_success
        self.clip_actions = clip_actions
        self.image_size = (h, w)
        self.embodiment = embodiment(camera, (h, w), state)
        self._orientation = _RAW_ORIENTATION.get(camera, "upright")

        self._gym_env = gym.make(
            "Meta-World/MT1",
            env_name=task,
            seed=seed,
            render_mode="rgb_array",
            camera_name=camera,
            width=w,
            height=h,
            disable_env_checker=True,
        )
        # Step the bare MuJoCo env: the MT1 wrappers re-sample one of 50 fixed layouts on every
        # reset and add per-step checks; vlastack seeds layouts itself (see ``reset``).
        self._raw = self._gym_env.unwrapped
        model = self._raw.model
        model.vis.quality.shadowsize = 0  # shadows and MSAA dominate CPU render time
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = w
        model.vis.global_.offheight = h
        if camera == "corner2" and lerobot_camera:
            model.cam_pos[model.camera("corner2").id] = LEROBOT_CORNER2_POS
        self._raw.set_task(self._gym_env.get_wrapper_attr("tasks")[0])
        self._seed_rng = np.random.default_rng(seed)
        self._steps = 0
        self.raw_obs = np.zeros(39)

        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        s_dim = self.embodiment.state.dim
        self.observation_space = gym.spaces.Dict(
            {
                self.image_key: gym.spaces.Box(0, 255, (h, w, 3), dtype=np.uint8),
                "observation.state": gym.spaces.Box(-np.inf, np.inf, (s_dim,), dtype=np.float32),
                "task": gym.spaces.Text(max_length=256),
            }
        )

    # ---- gymnasium API -----------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        seed = int(seed)
        raw = self._raw
        raw.seed(seed)
        # A fresh object/goal layout from the task's random-reset space, drawn from np_random.
        raw._freeze_rand_vec = False
        raw.seeded_rand_vec = True
        raw_obs, _ = raw.reset()
        # Meta-World moves the goal marker after its last physics call: without a forward pass
        # the first frame would show the previous episode's goal.
        import mujoco

        mujoco.mj_forward(raw.model, raw.data)
        self._steps = 0
        self.raw_obs = np.asarray(raw_obs, dtype=np.float64)
        info = {"success": False, "seed": seed, "raw_obs": self.raw_obs}
        return self._obs(), info

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        a = check_action(
            action, self.embodiment, clip=self.clip_actions, where=f"metaworld/{self.task_name}"
        )
        if self._steps >= self.max_steps:
            raise ConfigError(
                f"metaworld/{self.task_name}: step() after the episode ended "
                f"({self.max_steps} steps); call reset()"
            )
        raw_obs, reward, _, _, raw_info = self._raw.step(a)
        self._steps += 1
        self.raw_obs = np.asarray(raw_obs, dtype=np.float64)
        success = bool(raw_info.get("success", 0.0) > 0.5)
        terminated = success and self.terminate_on_success
        truncated = (not terminated) and self._steps >= self.max_steps
        info = {k: v for k, v in raw_info.items() if k != "success"}
        info.update(success=success, raw_obs=self.raw_obs)
        return self._obs(), float(reward), terminated, truncated, info

    def close(self) -> None:
        env = getattr(self, "_gym_env", None)
        if env is not None:
            env.close()
            self._gym_env = None

    def __del__(self) -> None:
        try:  # noqa: SIM105 - at interpreter shutdown contextlib and the GL context may be gone
            self.close()
        except Exception:
            pass

    # ---- helpers -----------------------------------------------------------------------
    def make_expert(self, *, noise: float = 0.0, seed: int | None = None) -> ScriptedExpert:
        """The ``metaworld.policies`` scripted policy of this task (reads ``info["raw_obs"]``)."""
        from vlastack.envs.experts.metaworld import MetaWorldExpert

        return MetaWorldExpert(self.task_name, noise=noise, seed=seed)

    def render_raw(self) -> np.ndarray:
        """The simulator's own render, orientation untouched (for tests and benchmarks)."""
        return self._raw.render()

    def _obs(self) -> ObsDict:
        make_context_current(self._raw)  # several envs in one process share the GL state
        img = orient_upright(self._raw.render(), self._orientation)
        self._last_image = img
        o = self.raw_obs
        state = o[:4] if self.state_mode == "agent_pos" else o
        return {
            self.image_key: img,
            "observation.state": state.astype(np.float32),
            "task": self.instruction,
        }
