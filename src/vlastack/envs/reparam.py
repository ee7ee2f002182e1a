"""A second embodiment of the Meta-World Sawyer with a different action space (transfer suite).

``sawyer7/<task>``: the same arm and scene, but a 7-d action ``[u, v, w, droll, dpitch, dyaw,
gripper]`` whose translation is expressed in a frame rotated 90 degrees about z (u = -y, v = +x
of Meta-World's frame; as a robot mounted at another angle would see it), three orientation
deltas that this position-controlled mocap arm ignores, and the gripper at index 6. A policy
trained on the native 4-d action and zero-padded into this space (``action_remap="pad"``)
moves the wrong way, which is the embodiment gap the survey asks to measure.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec, VectorSpec
from vlastack.envs.base import ObsDict, VlaEnv, check_action

PREFIX = "sawyer7/"
ROBOT_TYPE = "sawyer_rot90_7d"
# native xyz = ROT @ [u, v, w]
ROT = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def to_native(action7: np.ndarray) -> np.ndarray:
    a = np.asarray(action7, dtype=np.float64)
    return np.concatenate([ROT @ a[:3], a[6:7]]).astype(np.float32)


def from_native(action4: np.ndarray) -> np.ndarray:
    a = np.asarray(action4, dtype=np.float64)
    return np.concatenate([ROT.T @ a[:3], np.zeros(3), a[3:4]]).astype(np.float32)


def embodiment(native: EmbodimentSpec) -> EmbodimentSpec:
    action = VectorSpec(
        names=["u", "v", "w", "droll", "dpitch", "dyaw", "gripper"],
        units=["cm", "cm", "cm", "rad", "rad", "rad", "effort"],
        kind="delta",
        low=[-1.0] * 7,
        high=[1.0] * 7,
        gripper_index=6,
        description="end-effector delta in a frame rotated 90 deg about z; orientation ignored",
    )
    return dataclasses.replace(
        native,
        robot_type=ROBOT_TYPE,
        action=action,
        description="Meta-World Sawyer with a re-parametrized 7-d action space (vlastack)",
    )


class _Expert:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)

    def act(self, raw_obs: np.ndarray) -> np.ndarray:
        return from_native(self.inner.act(raw_obs))


class ReparamSawyerEnv(VlaEnv):
    """A ``MetaWorldEnv`` behind the 7-d rotated action space (observations unchanged)."""

    def __init__(self, task: str, **kw: Any) -> None:
        import gymnasium as gym

        from vlastack.envs.metaworld import MetaWorldEnv

        self.env = MetaWorldEnv(task, **kw)
        self.task_name = task
        self.instruction = self.env.instruction
        self.camera = self.env.camera
        self.max_steps = self.env.max_steps
        self.clip_actions = self.env.clip_actions
        self.embodiment = embodiment(self.env.embodiment)
        self.observation_space = self.env.observation_space
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), dtype=np.float32)

    @property
    def raw_obs(self) -> np.ndarray:
        return self.env.raw_obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        from vlastack.envs.base import make_context_current

        make_context_current(self.env._raw)
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        from vlastack.envs.base import make_context_current

        a = check_action(
            action, self.embodiment, clip=self.clip_actions, where=f"{PREFIX}{self.task_name}"
        )
        make_context_current(self.env._raw)
        return self.env.step(np.clip(to_native(a), -1.0, 1.0))

    def render(self) -> np.ndarray:  # type: ignore[override]
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def make_expert(self, *, noise: float = 0.0, seed: int | None = None) -> Any:
        return _Expert(self.env.make_expert(noise=noise, seed=seed))


def register(names: list[str] | None = None) -> None:
    """Register ``sawyer7/<task>`` for the Meta-World tasks (idempotent)."""
    from vlastack.envs import ENVS
    from vlastack.envs.metaworld_tasks import TASKS

    for task in TASKS:
        name = f"{PREFIX}{task}"
        if name not in ENVS:
            ENVS.add(
                name, functools.partial(ReparamSawyerEnv, task), f"{task}, 7-d rotated actions"
            )


__all__ = ["ROBOT_TYPE", "ReparamSawyerEnv", "from_native", "register", "to_native"]
