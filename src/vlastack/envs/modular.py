"""A modular perception → planning → control baseline for Meta-World (the survey's comparison).

Perception: colour segmentation of one RGB-D frame from the policy's own camera (the goal marker
and the object are saturated red; the Sawyer's red is darker) and back-projection of the masked
pixels to world coordinates with the camera's intrinsics (``cam_fovy``) and extrinsics
(``cam_xpos``/``cam_xmat``), i.e. a calibrated RGB-D camera. Points near table height are the
object, points above it the goal; when nothing is seen the last estimate is kept (tracking).
Planning: the instruction selects a skill (Meta-World's instruction table -> task). Control:
Meta-World's scripted policy for that skill, fed a 39-d observation whose object and goal come
from perception, never from the simulator's privileged state. Hand position and gripper opening
come from proprioception (``observation.state``), as on a real robot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlastack.errors import ConfigError

TABLE_OBJECT_MAX_Z_M = 0.045  # back-projected points below this are on the table (the object)
# saturated-red threshold on [0, 1] RGB: goal site (0.8, 0, 0) and block_red have G = B = 0 when
# shaded; the Sawyer's
# (0.5, 0.1, 0.1) links stay below it (measured on corner2 renders at 64-128 px).
RED_MIN, OTHER_MAX = 0.2, 0.02


GATE_M = 0.08  # a new goal estimate must lie this close to the tracked one
CLUSTER_M = 0.04  # points farther than this from the median are not the ~2 cm goal sphere


def depth_to_metres(depth: np.ndarray, model: Any) -> np.ndarray:
    """MuJoCo's [0, 1] depth buffer -> distance along the optical axis (m)."""
    extent = float(model.stat.extent)
    near = float(model.vis.map.znear) * extent
    far = float(model.vis.map.zfar) * extent
    return near / (1.0 - depth * (1.0 - near / far))


def backproject(
    pixels_vu: np.ndarray,
    depth_m: np.ndarray,
    cam_pos: np.ndarray,
    cam_mat: np.ndarray,
    fovy_deg: float,
    hw: tuple[int, int],
) -> np.ndarray:
    """(N, 2) row/col pixels with depth (N,) -> (N, 3) world points (pinhole, MuJoCo camera).

    MuJoCo cameras look along -z with +y up; the image rows run top to bottom.
    """
    h, w = hw
    f = 0.5 * h / np.tan(np.deg2rad(fovy_deg) / 2)
    v, u = pixels_vu[:, 0] + 0.5, pixels_vu[:, 1] + 0.5
    x = (u - w / 2) / f * depth_m
    y = -(v - h / 2) / f * depth_m
    cam = np.stack([x, y, -depth_m], axis=1)
    return cam_pos[None] + cam @ cam_mat.reshape(3, 3).T


@dataclass
class Estimate:
    goal: np.ndarray | None = None
    obj: np.ndarray | None = None
    goal_pixels: int = 0
    obj_pixels: int = 0


@dataclass
class ColorPerception:
    """Estimates the red goal marker and the red object from an RGB-D frame of ``camera``."""

    camera: str
    last: Estimate = field(default_factory=Estimate)

    def reset(self) -> None:
        self.last = Estimate()

    def render_rgbd(self, raw: Any, camera: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        from vlastack.envs.base import make_context_current

        viewer = make_context_current(raw)
        cam_id = raw.model.camera(camera or self.camera).id
        rgb, depth = viewer.render("rgbd_tuple", camera_id=cam_id)
        return np.asarray(rgb), np.asarray(depth)

    def _calib(self, raw: Any, camera: str) -> tuple[np.ndarray, np.ndarray, float]:
        cam_id = raw.model.camera(camera).id
        return (
            np.asarray(raw.data.cam_xpos[cam_id]),
            np.asarray(raw.data.cam_xmat[cam_id]),
            float(raw.model.cam_fovy[cam_id]),
        )

    def estimate(self, raw: Any) -> Estimate:
        est = Estimate(goal=self.last.goal, obj=self.last.obj)
        rgb, depth = self.render_rgbd(raw)
        x = rgb.astype(np.float32) / 255.0
        mask = (x[..., 0] > RED_MIN) & (x[..., 1] < OTHER_MAX) & (x[..., 2] < OTHER_MAX)
        if mask.any():
            pos, mat, fovy = self._calib(raw, self.camera)
            pts = backproject(
                np.argwhere(mask).astype(np.float64),
                depth_to_metres(depth[mask].astype(np.float64), raw.model),
                pos,
                mat,
                fovy,
                rgb.shape[:2],
            )
            low = pts[:, 2] < TABLE_OBJECT_MAX_Z_M
            if low.any():
                est.obj, est.obj_pixels = np.median(pts[low], axis=0), int(low.sum())
            goal_pts = pts[~low]
            if self.last.goal is not None:  # tracking gate: the goal does not jump mid-subtask
                goal_pts = goal_pts[np.linalg.norm(goal_pts - self.last.goal, axis=1) < GATE_M]
            if len(goal_pts):
                centre = np.median(goal_pts, axis=0)  # then drop outliers (arm highlights)
                near = goal_pts[np.linalg.norm(goal_pts - centre, axis=1) < CLUSTER_M]
                goal_pts = near if len(near) else goal_pts
                est.goal, est.goal_pixels = np.median(goal_pts, axis=0), len(goal_pts)
        self.last = est
        return est


def skill_for_instruction(instruction: str) -> str:
    """Planning: the Meta-World task whose instruction this is (exact, then by first verb)."""
    from vlastack.envs.metaworld_tasks import INSTRUCTIONS

    for task, text in INSTRUCTIONS.items():
        if text == instruction:
            return task
    raise ConfigError(
        f"modular planner: no skill for the instruction {instruction!r}; it knows the 50 "
        "Meta-World instructions (vlastack.envs.metaworld_tasks.INSTRUCTIONS)"
    )


class ModularPolicy:
    """Perception + planning + scripted control for one Meta-World env (needs its ``raw`` sim).

    ``act(env, obs) -> action (4,)``; ``errors_m`` collects ‖estimated − true goal‖ per step
    (the true goal is read only for this report, never for acting).
    """

    def __init__(self, camera: str, *, perceive_every: int = 1) -> None:
        self.perception = ColorPerception(camera)
        self.perceive_every = max(1, perceive_every)
        self.errors_m: list[float] = []
        self.misses = 0
        self._skill: str | None = None
        self._policy: Any = None
        self._t = 0

    def reset(self) -> None:
        self.perception.reset()
        self.errors_m.clear()
        self.misses = 0
        self._t = 0

    def new_subtask(self) -> None:
        """A new instruction was issued (the goal may have moved): drop the tracked estimate."""
        self.perception.reset()

    def _controller(self, instruction: str) -> Any:
        skill = skill_for_instruction(instruction)
        if skill != self._skill:
            from vlastack.envs.experts.metaworld import MetaWorldExpert

            self._skill, self._policy = skill, MetaWorldExpert(skill)
        return self._policy

    def act(self, raw: Any, obs: dict[str, Any], true_goal: np.ndarray | None = None) -> np.ndarray:
        controller = self._controller(str(obs["task"]))
        if self._t % self.perceive_every == 0 or self.perception.last.goal is None:
            est = self.perception.estimate(raw)
        else:
            est = self.perception.last
        self._t += 1
        state = np.asarray(obs["observation.state"], dtype=np.float64)
        hand, grip = state[:3], state[3]
        goal = est.goal if est.goal is not None else hand  # nothing seen yet: hold still
        obj = est.obj if est.obj is not None else hand
        if est.goal is None:
            self.misses += 1
        elif true_goal is not None:
            self.errors_m.append(float(np.linalg.norm(est.goal - true_goal)))
        obs39 = np.zeros(39)
        obs39[:3], obs39[3], obs39[4:7], obs39[36:39] = hand, grip, obj, goal
        obs39[7] = 1.0  # identity quaternion for the object (not estimated; unused by reach)
        obs39[18:36] = obs39[:18]  # previous frame = current (the policies read only positions)
        return controller.act(obs39)


__all__ = [
    "ColorPerception",
    "Estimate",
    "ModularPolicy",
    "backproject",
    "depth_to_metres",
    "skill_for_instruction",
]
