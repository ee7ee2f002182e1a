"""A geometric push planner for PushT, written for vlastack (PushT ships no scripted expert).

Greedy and quasi-static: among points sampled on the T's outline, push the material point whose
desired displacement (goal pose minus current pose, for that point of the body) has the largest
component along the inward normal. The agent first travels to a point just outside that contact
(going around the block on a circle about its centre when the straight path would hit it), then
pushes inwards by a depth proportional to the remaining error, and re-plans. It reads the block
and goal poses (privileged state from ``info["raw_obs"]``). Success rate: see BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np

AGENT_RADIUS_PX = 15.0
# T outline in the block's body frame (pixels): bar 120x30 on top of a 30x90 stem (gym-pusht).
_OUTLINE = np.array(
    [[-60, 0], [60, 0], [60, 30], [15, 30], [15, 120], [-15, 120], [-15, 30], [-60, 30]],
    dtype=np.float64,
)
_CENTRE = np.array([0.0, 45.0])  # rough centre of the T (body frame), for going around it


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _contacts(step_px: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Points on the outline (body frame) and their outward unit normals, every ``step_px``."""
    pts, normals = [], []
    n = len(_OUTLINE)
    # the outline is listed counter-clockwise in a y-down frame; outward normal = (dy, -dx)
    signed = sum(
        _OUTLINE[i, 0] * _OUTLINE[(i + 1) % n, 1] - _OUTLINE[(i + 1) % n, 0] * _OUTLINE[i, 1]
        for i in range(n)
    )
    orient = 1.0 if signed > 0 else -1.0
    for i in range(n):
        a, b = _OUTLINE[i], _OUTLINE[(i + 1) % n]
        edge = b - a
        length = float(np.linalg.norm(edge))
        normal = orient * np.array([edge[1], -edge[0]]) / length
        k = max(1, int(length // step_px))
        for j in range(k):
            t = (j + 0.5) / k
            pts.append(a + t * edge)
            normals.append(normal)
    return np.array(pts), np.array(normals)


_PTS, _NORMALS = _contacts()


def _segment_hits_block(
    p0: np.ndarray, p1: np.ndarray, to_body: np.ndarray, pos: np.ndarray
) -> bool:
    """Does the agent's straight path p0->p1 (world) pass through the inflated T?"""
    margin = AGENT_RADIUS_PX - 2.0
    for t in np.linspace(0.0, 1.0, 12):
        q = to_body @ (p0 + t * (p1 - p0) - pos)
        in_bar = -60 - margin < q[0] < 60 + margin and -margin < q[1] < 30 + margin
        in_stem = -15 - margin < q[0] < 15 + margin and 30 - margin < q[1] < 120 + margin
        if in_bar or in_stem:
            return True
    return False


class PushTExpert:
    """``act(raw_obs) -> (2,)`` absolute target in [0, 512]; raw_obs from ``info["raw_obs"]``."""

    def __init__(self, *, noise: float = 0.0, seed: int | None = None, max_step_px: float = 30.0):
        self.noise = float(noise)  # std in pixels x 10 (noise=0.1 -> 1 px)
        self.max_step_px = max_step_px
        self.pushes_per_plan = 5
        self._rng = np.random.default_rng(seed)
        self._plan: tuple[int, int] | None = None  # (contact index, steps left pushing)

    def reset(self, seed: int | None = None) -> None:
        self._plan = None
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def _choose_contact(self, pos: np.ndarray, theta: float, goal: np.ndarray) -> tuple[int, float]:
        rot, rot_goal = _rot(theta), _rot(goal[2])
        world = pos + _PTS @ rot.T
        desired = goal[:2] + _PTS @ rot_goal.T - world  # (K, 2) displacement each point needs
        inward = -(_NORMALS @ rot.T)
        score = np.einsum("kd,kd->k", desired, inward)
        k = int(np.argmax(score))
        return k, float(score[k])

    def act(self, raw_obs: dict[str, np.ndarray]) -> np.ndarray:
        agent = np.asarray(raw_obs["agent_pos"], dtype=np.float64)
        bx, by, theta = (float(v) for v in raw_obs["block_pose"])
        pos = np.array([bx, by])
        goal = np.asarray(raw_obs["goal_pose"], dtype=np.float64)
        rot = _rot(theta)
        if self._plan is None or self._plan[1] <= 0:
            self._plan = (self._choose_contact(pos, theta, goal)[0], self.pushes_per_plan)
        k, left = self._plan
        contact = pos + rot @ _PTS[k]  # the chosen material point, moving with the block
        normal = rot @ _NORMALS[k]
        rel = agent - contact
        lateral = float(np.linalg.norm(rel - np.dot(rel, normal) * normal))
        outside = float(np.dot(rel, normal))
        pushing = left < self.pushes_per_plan
        aligned = lateral < 8.0 and -5.0 < outside < AGENT_RADIUS_PX + 12.0
        if aligned or (pushing and lateral < 14.0):
            desired = goal[:2] + _rot(goal[2]) @ _PTS[k] - contact
            # agent centre at R - depth from the surface pushes that point ~depth pixels
            depth = float(np.clip(np.dot(desired, -normal), 1.0, 20.0))
            target = contact + normal * (AGENT_RADIUS_PX - depth)
            self._plan = (k, left - 1)
        else:
            if pushing:  # slid off the contact: choose again next step
                self._plan = None
            target = self._travel(agent, contact + normal * (AGENT_RADIUS_PX + 5.0), pos, rot)
        if self.noise > 0:
            target = target + self._rng.normal(0.0, 10.0 * self.noise, size=2)
        return np.clip(target, 0.0, 512.0).astype(np.float32)

    def _travel(
        self, agent: np.ndarray, goal_pt: np.ndarray, pos: np.ndarray, rot: np.ndarray
    ) -> np.ndarray:
        """Next target towards ``goal_pt``, circling the block when the straight path hits it."""
        to_body = rot.T
        if not _segment_hits_block(agent, goal_pt, to_body, pos):
            step = goal_pt - agent
        else:
            centre = pos + rot @ _CENTRE
            r_agent = agent - centre
            radius = max(float(np.linalg.norm(r_agent)), 95.0)
            a0 = np.arctan2(r_agent[1], r_agent[0])
            g = goal_pt - centre
            a1 = np.arctan2(g[1], g[0])
            delta = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
            a_next = a0 + np.clip(delta, -0.5, 0.5)
            step = centre + radius * np.array([np.cos(a_next), np.sin(a_next)]) - agent
        dist = float(np.linalg.norm(step))
        if dist > self.max_step_px:
            step = step * (self.max_step_px / dist)
        return agent + step
