"""Long-horizon chains: N sequential Meta-World subtasks in one scene, perturbed in between.

The survey's "long-horizon robustness test" reported CALVIN-style (Mees et al. 2022: how many
subtasks succeed in a row). Meta-World scenes are single-task, so a chain stays in one task's
scene (``chain/reach-v3``: the Sawyer reach scene) and, after each success, (1) pushes the hand
to a random pose, (2) nudges the object, (3) moves the goal to a fresh position drawn from the
task's own goal space (at least ``min_goal_move_m`` away) and re-issues the instruction. Success
of a subtask is Meta-World's own check against the new goal (``evaluate_state`` reads
``_target_pos``). Each subtask has ``steps_per_subtask`` steps; the chain ends at the first
failure. ``info`` carries ``subtask``, ``subtasks_completed`` and ``subtasks_total``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vlastack.envs.base import ObsDict, VlaEnv
from vlastack.errors import ConfigError
from vlastack.image_size import DEFAULT_IMAGE_SIZE

PREFIX = "chain/"
# Scenes whose goal is a free 3-d point that Meta-World's success check reads from _target_pos.
CHAIN_TASKS = ("reach-v3",)  # push-v3 was tried: its expert loses the puck after a hand push
HAND_LOW = np.array([-0.25, 0.45, 0.12])  # hand "push" region: inside Meta-World's hand space
HAND_HIGH = np.array([0.25, 0.75, 0.28])


class ChainEnv(VlaEnv):
    """``num_subtasks`` subtasks of one Meta-World task, goals moved and hand/object perturbed."""

    def __init__(
        self,
        task: str = "reach-v3",
        *,
        num_subtasks: int = 10,
        steps_per_subtask: int = 150,
        perturb_hand: bool = True,
        object_nudge_m: float = 0.03,
        min_goal_move_m: float = 0.1,
        camera: str | None = None,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        seed: int | None = None,
    ) -> None:
        from vlastack.envs.metaworld import MAX_STEPS, MetaWorldEnv

        if task not in CHAIN_TASKS:
            raise ConfigError(f"chain/{task}: chains exist for {list(CHAIN_TASKS)}")
        if num_subtasks < 1 or not 1 <= steps_per_subtask <= MAX_STEPS:
            raise ConfigError(
                f"chain/{task}: num_subtasks={num_subtasks} must be >= 1 and "
                f"steps_per_subtask={steps_per_subtask} within 1..{MAX_STEPS}"
            )
        self.env = MetaWorldEnv(
            task,
            camera=camera,
            image_size=image_size,
            seed=seed,
            max_steps=MAX_STEPS,
            terminate_on_success=False,
            clip_actions=True,
        )
        self.task_name = f"chain-{task}"
        self.base_task = task
        self.instruction = self.env.instruction
        self.camera = self.env.camera
        self.embodiment = self.env.embodiment
        self.action_space = self.env.action_space
        self.observation_space = self.env.observation_space
        self.num_subtasks = num_subtasks
        self.steps_per_subtask = steps_per_subtask
        self.max_steps = num_subtasks * steps_per_subtask
        self.perturb_hand = perturb_hand
        self.object_nudge_m = object_nudge_m
        self.min_goal_move_m = min_goal_move_m
        self.subtask = 0
        self.completed = 0
        self._sub_steps = 0
        self._rng = np.random.default_rng(seed)
        # _next_subtask moves Meta-World's hand start; reset restores it so that an episode
        # does not depend on the chains run before it (the suite compares policies per seed)
        self._hand_init_pos = np.array(self.raw.hand_init_pos, dtype=np.float64, copy=True)

    @property
    def raw(self) -> Any:
        return self.env._raw

    @property
    def raw_obs(self) -> np.ndarray:
        return self.env.raw_obs

    @property
    def goal(self) -> np.ndarray:
        return np.asarray(self.raw._target_pos, dtype=np.float64).copy()

    def make_expert(self, **kw: Any) -> Any:
        return self.env.make_expert(**kw)

    def close(self) -> None:
        self.env.close()

    def render(self) -> np.ndarray:  # type: ignore[override]
        return self.env.render()

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        info["subtask_success"] = info.get("success", False)
        info.update(
            success=self.completed >= self.num_subtasks,
            subtask=self.subtask,
            subtasks_completed=self.completed,
            subtasks_total=self.num_subtasks,
            goal=self.goal,
        )
        return info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        from vlastack.envs.base import make_context_current

        if seed is None:
            seed = int(self._rng.integers(0, 2**31 - 1))
        import mujoco

        make_context_current(self.raw)
        self.raw.hand_init_pos = self._hand_init_pos.copy()
        obs, info = self.env.reset(seed=seed)
        # Meta-World moves the goal site after its last physics step, so the first frame would
        # draw the previous episode's goal; a forward pass puts the marker where the goal is.
        mujoco.mj_forward(self.raw.model, self.raw.data)
        obs = self.env._obs()
        self._rng = np.random.default_rng([int(seed), 7919])  # perturbations of this chain
        self.subtask = self.completed = self._sub_steps = 0
        return obs, self._info(info)

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        from vlastack.envs.base import make_context_current

        make_context_current(self.raw)
        obs, reward, _, _, info = self.env.step(action)
        self._sub_steps += 1
        if info["success"]:
            self.completed += 1
            if self.completed >= self.num_subtasks:
                return obs, reward, True, False, self._info(info)
            obs = self._next_subtask()
            info["raw_obs"] = self.env.raw_obs
        elif self._sub_steps >= self.steps_per_subtask:
            return obs, reward, False, True, self._info(info)
        return obs, reward, False, False, self._info(info)

    def _next_subtask(self) -> ObsDict:
        """Perturb hand and object, move the goal, reset Meta-World's step counters."""
        raw, rng = self.raw, self._rng
        self.subtask += 1
        self._sub_steps = 0
        if self.perturb_hand:
            raw.hand_init_pos = rng.uniform(HAND_LOW, HAND_HIGH)
            raw._reset_hand(steps=30)
        if self.object_nudge_m > 0:
            obj = np.asarray(raw._get_pos_objects()[:3], dtype=np.float64)
            nudge = rng.uniform(-1, 1, 2) * self.object_nudge_m
            raw._set_obj_xyz(np.array([obj[0] + nudge[0], obj[1] + nudge[1], obj[2]]))
        low, high = np.asarray(raw.goal_space.low), np.asarray(raw.goal_space.high)
        hand = np.asarray(raw.tcp_center)
        goal = rng.uniform(low, high)
        for _ in range(100):  # a goal far enough from where the hand (or puck) now is
            ref = hand if self.base_task == "reach-v3" else np.asarray(raw._get_pos_objects()[:3])
            if np.linalg.norm(goal[:2] - ref[:2]) >= self.min_goal_move_m:
                break
            goal = rng.uniform(low, high)
        raw._target_pos = goal
        raw.model.site("goal").pos = goal
        # Meta-World refuses more than max_path_length steps per episode; a chain is longer.
        raw.curr_path_length = 0
        self.env._steps = 0
        import mujoco

        mujoco.mj_forward(raw.model, raw.data)
        obs39 = np.asarray(raw._get_obs(), dtype=np.float64)
        self.env.raw_obs = obs39
        return self.env._obs()


def register(names: list[str] | None = None) -> None:
    """Register ``chain/<task>`` names in ``vlastack.envs.ENVS`` (idempotent)."""
    from vlastack.envs import ENVS

    for task in CHAIN_TASKS:
        name = f"{PREFIX}{task}"
        if name not in ENVS:
            ENVS.add(
                name,
                functools.partial(_make_chain, task),
                f"{task} x10 subtasks: new goal, hand pushed, object nudged between subtasks",
            )


def _make_chain(task: str, **kw: Any) -> ChainEnv:
    return ChainEnv(task, **kw)


__all__ = ["CHAIN_TASKS", "ChainEnv", "register"]
