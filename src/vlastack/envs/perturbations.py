"""Evaluation-time perturbations of Meta-World scenes and instructions (generalization stress).

The survey's proposed "generalization stress test" (lighting, unseen colours, camera shifts,
distractors, rephrased or wrong instructions). Each perturbation wraps a ``VlaEnv`` and changes
only what the policy *sees* (MuJoCo visual model fields: lights, ``mat_rgba``/``geom_rgba``,
``cam_pos``/``cam_fovy``; visual-only scene markers; the instruction string). Physics, the
expert and the success check are untouched, which ``tests/test_perturbations.py`` verifies.
Env names ``stress/<condition>/<env>`` are registered in ``vlastack.envs.ENVS`` by ``register``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlastack.envs.base import ObsDict, VlaEnv, make_context_current
from vlastack.errors import ConfigError

PREFIX = "stress/"

# One hand-written paraphrase per Meta-World task: same meaning, different words (no shared
# verb where English allows it), so a policy that keys on exact strings is exposed.
PARAPHRASES: dict[str, str] = {
    "assembly-v3": "grab the ring and slide it down over the peg",
    "basketball-v3": "grab the ball and drop it through the hoop",
    "bin-picking-v3": "move the puck from the left container to the right container",
    "box-close-v3": "lift the lid and put it on top of the box",
    "button-press-topdown-v3": "push the button down from above",
    "button-press-topdown-wall-v3": "go over the wall and push the button down from above",
    "button-press-v3": "push the button in from the front",
    "button-press-wall-v3": "go around the wall and push the button from the front",
    "coffee-button-v3": "hit the coffee machine's button",
    "coffee-pull-v3": "take the mug out from beneath the coffee maker",
    "coffee-push-v3": "slide the mug beneath the coffee maker",
    "dial-turn-v3": "rotate the knob",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "shut the door",
    "door-lock-v3": "turn the knob down so the door is locked",
    "door-open-v3": "pull the door open",
    "door-unlock-v3": "rotate the knob so the door is unlocked",
    "drawer-close-v3": "push the drawer shut",
    "drawer-open-v3": "pull the drawer out",
    "faucet-close-v3": "rotate the tap handle to shut off the water",
    "faucet-open-v3": "rotate the tap handle to turn on the water",
    "hammer-v3": "grab the hammer and drive the nail into the wall",
    "hand-insert-v3": "put the block into the hole in the table",
    "handle-press-side-v3": "push the handle downwards from the side",
    "handle-press-v3": "push the handle downwards",
    "handle-pull-side-v3": "lift the handle from the side",
    "handle-pull-v3": "lift the handle",
    "lever-pull-v3": "raise the lever",
    "peg-insert-side-v3": "grab the peg and push it sideways into the hole",
    "peg-unplug-side-v3": "pull the peg out of the side of the box",
    "pick-out-of-hole-v3": "take the peg out of the hole and raise it to the target",
    "pick-place-v3": "grab the puck and put it down at the target",
    "pick-place-wall-v3": "grab the puck, carry it over the wall and put it at the target",
    "plate-slide-back-side-v3": "pull the plate out of the cabinet sideways",
    "plate-slide-back-v3": "pull the plate back out of the cabinet",
    "plate-slide-side-v3": "move the plate into the cabinet from the side",
    "plate-slide-v3": "move the plate into the cabinet",
    "push-back-v3": "shove the puck back to the target",
    "push-v3": "shove the puck to the target",
    "push-wall-v3": "shove the puck around the wall to the target",
    "reach-v3": "move the gripper to the target location",
    "reach-wall-v3": "go over the wall to the target location",
    "shelf-place-v3": "grab the puck and put it onto the shelf",
    "soccer-v3": "shoot the ball into the net",
    "stick-pull-v3": "grab the stick and drag the box to the target with it",
    "stick-push-v3": "grab the stick and shove the box to the target with it",
    "sweep-into-v3": "brush the puck into the hole",
    "sweep-v3": "brush the puck off the table",
    "window-close-v3": "push the window shut",
    "window-open-v3": "push the window open",
}


@dataclass(frozen=True)
class Perturbation:
    """One stress condition. ``visual`` ones edit the MuJoCo model or scene; the rest the text."""

    name: str
    kind: str  # "visual" | "language"
    description: str


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in [
        Perturbation("lighting_dark", "visual", "lights and headlight at 35% intensity"),
        Perturbation("lighting_bright", "visual", "lights at 220%, ambient light added, warm tint"),
        Perturbation("table_color", "visual", "table and wall materials recoloured blue-grey"),
        Perturbation(
            "object_color", "visual", "object colours rotated (R,G,B)->(G,B,R); robot unchanged"
        ),
        Perturbation("camera_shift", "visual", "camera moved 5 cm (x, y, z) and fovy +6 deg"),
        Perturbation(
            "distractors",
            "visual",
            "3 visual-only boxes/spheres/cylinders at seeded random table positions",
        ),
        Perturbation("paraphrase", "language", "hand-written paraphrase of the instruction"),
        Perturbation("blank_instruction", "language", "the instruction is the empty string"),
        Perturbation("swapped_instruction", "language", "another task's instruction"),
    ]
}
DEFAULT_CONDITIONS = list(PERTURBATIONS)

# Bodies of the Sawyer arm/gripper and the fixed scene furniture: object_color leaves them alone.
_SCENE_BODIES = {
    "world",
    "tablelink",
    "RetainingWall",
    "controller_box",
    "pedestal_feet",
    "torso",
    "pedestal",
    "head",
    "screen",
    "hand",
    "rightclaw",
    "leftclaw",
    "rightpad",
    "leftpad",
    "mocap",
}
_SCENE_MATERIALS = ("floor", "table", "wall", "xyz")  # materials that are not objects


def swapped_task(task: str, tasks: list[str]) -> str:
    """The task whose instruction replaces ``task``'s (a fixed, different task)."""
    ordered = sorted(tasks)  # half-way round, so neighbours (reach / reach-wall) are not paired
    return ordered[(ordered.index(task) + len(ordered) // 2) % len(ordered)]


class PerturbedEnv(VlaEnv):
    """``env`` with one perturbation applied; everything else delegates to ``env``.

    Visual edits are applied to the MuJoCo model once at construction from stored originals, so
    they persist across resets and are idempotent. Distractors are re-drawn at every reset from
    the episode seed (the same seed gives the same distractors).
    """

    def __init__(self, env: Any, condition: str) -> None:
        if condition not in PERTURBATIONS:
            raise ConfigError(
                f"unknown stress condition {condition!r}; choose from {list(PERTURBATIONS)}"
            )
        self.env = env
        self.condition = condition
        self.embodiment = env.embodiment
        self.max_steps = env.max_steps
        self.task_name = env.task_name
        self.camera = env.camera
        self.action_space = env.action_space
        self.observation_space = env.observation_space
        self.instruction = self._instruction()
        self._markers: list[dict[str, Any]] = []
        self._apply_visual()

    # ---- delegation ----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name == "env":  # not set yet (during __init__ failure): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        if self.condition == "distractors":
            if seed is None:
                seed = int(np.random.default_rng().integers(0, 2**31 - 1))
            self._place_distractors(int(seed))
        self._before_render()
        obs, info = self.env.reset(seed=seed, options=options)
        return self._obs(obs), info

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        self._before_render()
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs(obs), reward, terminated, truncated, info

    def _before_render(self) -> None:
        raw = getattr(self.env, "_raw", None)
        if raw is None:
            return
        viewer = make_context_current(raw)
        if self.condition == "distractors":
            # gymnasium's offscreen viewer draws ``_markers`` (mjv_initGeom: visual-only geoms,
            # absent from the physics model) and clears the list after every frame.
            viewer._markers[:] = [dict(m) for m in self._markers]

    def render(self) -> np.ndarray:  # type: ignore[override]
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def make_expert(self, **kw: Any) -> Any:
        return self.env.make_expert(**kw)

    def _obs(self, obs: ObsDict) -> ObsDict:
        if PERTURBATIONS[self.condition].kind == "language":
            obs = dict(obs)
            obs["task"] = self.instruction
        return obs

    # ---- language --------------------------------------------------------------------------
    def _instruction(self) -> str:
        base = str(self.env.instruction)
        if self.condition == "paraphrase":
            return PARAPHRASES.get(self.task_name, base)
        if self.condition == "blank_instruction":
            return ""
        if self.condition == "swapped_instruction":
            from vlastack.envs.metaworld_tasks import INSTRUCTIONS

            if self.task_name in INSTRUCTIONS:
                return INSTRUCTIONS[swapped_task(self.task_name, list(INSTRUCTIONS))]
            raise ConfigError(f"swapped_instruction needs a Meta-World task, not {self.task_name}")
        return base

    # ---- visual --------------------------------------------------------------------------
    def _model(self) -> Any:
        raw = getattr(self.env, "_raw", None)
        if raw is None:
            raise ConfigError(
                f"visual stress condition {self.condition!r} needs a MuJoCo (Meta-World) env; "
                f"{type(self.env).__name__} has no MuJoCo model. Language conditions work on any env."
            )
        return raw.model

    def _apply_visual(self) -> None:
        if PERTURBATIONS[self.condition].kind != "visual":
            return
        import mujoco

        m = self._model()
        c = self.condition
        if c == "lighting_dark":
            m.light_diffuse[:] = m.light_diffuse * 0.35
            m.light_specular[:] = m.light_specular * 0.35
            m.vis.headlight.diffuse[:] = np.asarray(m.vis.headlight.diffuse) * 0.35
            m.vis.headlight.ambient[:] = np.asarray(m.vis.headlight.ambient) * 0.35
        elif c == "lighting_bright":
            warm = np.array([1.0, 0.85, 0.6])
            m.light_diffuse[:] = np.clip(m.light_diffuse * 2.2 * warm, 0, 1)
            m.light_ambient[:] = np.clip(m.light_ambient + 0.15 * warm, 0, 1)
            m.vis.headlight.diffuse[:] = np.clip(np.asarray(m.vis.headlight.diffuse) * warm, 0, 1)
        elif c == "table_color":
            for i in range(m.nmat):
                name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_MATERIAL, i) or ""
                if "table" in name or "wall" in name:
                    m.mat_rgba[i, :3] = (0.35, 0.45, 0.75)
        elif c == "object_color":
            for i in range(m.nmat):
                name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_MATERIAL, i) or ""
                if not any(s in name for s in _SCENE_MATERIALS):
                    m.mat_rgba[i, :3] = m.mat_rgba[i, [1, 2, 0]]
            for g in range(m.ngeom):
                body = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g]) or ""
                if body in _SCENE_BODIES or body.startswith("right_") or body == "base":
                    continue
                if m.geom_matid[g] < 0:
                    m.geom_rgba[g, :3] = m.geom_rgba[g, [1, 2, 0]]
            # goal markers are sites
            for s in range(m.nsite):
                name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_SITE, s) or ""
                if "goal" in name:
                    m.site_rgba[s, :3] = m.site_rgba[s, [1, 2, 0]]
        elif c == "camera_shift":
            cam_id = m.camera(self.camera).id
            m.cam_pos[cam_id] = m.cam_pos[cam_id] + np.array([0.05, -0.05, 0.05])
            m.cam_fovy[cam_id] = m.cam_fovy[cam_id] + 6.0

    def _place_distractors(self, seed: int) -> None:
        import mujoco

        self._model()
        rng = np.random.default_rng([seed, zlib.crc32(b"distractors")])
        kinds = [
            mujoco.mjtGeom.mjGEOM_BOX,
            mujoco.mjtGeom.mjGEOM_SPHERE,
            mujoco.mjtGeom.mjGEOM_CYLINDER,
        ]
        self._markers.clear()
        for k in range(3):
            size = rng.uniform(0.015, 0.03)
            x, y = rng.uniform(-0.35, 0.35), rng.uniform(0.45, 0.85)
            self._markers.append(
                {
                    "type": kinds[k % 3],
                    "size": np.array([size, size, size]),
                    "pos": np.array([x, y, size]),
                    "rgba": np.append(rng.uniform(0.1, 1.0, 3), 1.0),
                    "mat": np.eye(3).flatten(),
                }
            )


def stress_env_name(condition: str, env_name: str) -> str:
    return f"{PREFIX}{condition}/{env_name}"


def parse_stress_name(name: str) -> tuple[str, str]:
    """``stress/lighting_dark/metaworld/reach-v3`` -> (``lighting_dark``, ``metaworld/reach-v3``)."""
    if not name.startswith(PREFIX) or name.count("/") < 2:
        raise ConfigError(f"{name!r} is not a stress env name (stress/<condition>/<env>)")
    condition, base = name[len(PREFIX) :].split("/", 1)
    return condition, base


def make_perturbed(condition: str, base: str, **kw: Any) -> PerturbedEnv:
    from vlastack.envs import make_env

    return PerturbedEnv(make_env(base, **kw), condition)


def register(names: list[str]) -> None:
    """Add ``stress/<condition>/<env>`` names to ``vlastack.envs.ENVS`` (idempotent).

    Names are registered on demand, not all 9 x 50 up front, so ``vlastack list`` stays short.
    Worker processes call this again when they unpickle the suite's policy factory.
    """
    import functools

    from vlastack.envs import ENVS

    for name in names:
        if name in ENVS:
            continue
        condition, base = parse_stress_name(name)
        if condition not in PERTURBATIONS:
            raise ConfigError(
                f"unknown stress condition {condition!r} in {name!r}; choose from "
                f"{list(PERTURBATIONS)}"
            )
        builder: Callable[..., Any] = functools.partial(make_perturbed, condition, base)
        ENVS.add(name, builder, f"{base} under '{condition}'")


__all__ = [
    "DEFAULT_CONDITIONS",
    "PARAPHRASES",
    "PERTURBATIONS",
    "PerturbedEnv",
    "Perturbation",
    "make_perturbed",
    "parse_stress_name",
    "register",
    "stress_env_name",
    "swapped_task",
]
