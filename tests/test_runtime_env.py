"""``simulate_env``: the delay harness on an env (here a 1-D point robot, no MuJoCo): missed ticks
hold the robot, success ends the episode, boundary jumps are measured where chunks switch."""

from __future__ import annotations

import numpy as np

from vlastack.serving.runtime import make_runtime
from vlastack.serving.simulate import SimClock, SimExecutor, simulate_env


class PointEnv:
    """x += action[0] per step; success when x ≥ goal. State is (x, last gripper command)."""

    def __init__(self, goal: float = 0.999) -> None:
        self.goal = goal
        self.x = 0.0
        self.steps: list[np.ndarray] = []

    def _obs(self, grip: float = 0.0) -> dict:
        return {"observation.state": np.array([self.x, grip], dtype=np.float32)}

    def reset(self, seed: int | None = None):
        self.x = 0.0
        self.steps.clear()
        return self._obs(), {}

    def step(self, action):
        self.steps.append(np.array(action))
        self.x += float(action[0])
        return self._obs(float(action[1])), 0.0, False, False, {"success": self.x >= self.goal}


class StepPolicy:
    """Chunk k moves by ``speeds[k % len(speeds)]`` per action, gripper 1: chunk switches jump."""

    def __init__(self, horizon: int = 8, speeds=(0.02,)) -> None:
        self.horizon, self.speeds, self.calls = horizon, speeds, 0

    def reset(self) -> None:
        self.calls = 0

    def infer(self, obs: dict) -> dict:
        v = self.speeds[self.calls % len(self.speeds)]
        self.calls += 1
        return {"actions": np.tile([v, 1.0], (self.horizon, 1))}


def hold(last):
    return np.array([0.0, 0.0 if last is None else last[1]])


def run(strategy: str, policy, delay_s: float, hz: float = 20.0, max_ticks: int = 400, **kw):
    clock = SimClock()
    env = PointEnv()
    rt = make_runtime(strategy, policy, executor=SimExecutor(clock, delay_s), clock=clock, **kw)
    res = simulate_env(rt, env, hz, max_ticks, clock, hold_action=hold)
    return res, env


def test_sync_misses_delay_ticks_per_chunk_and_holds_the_robot():
    # A command is due by the end of its tick, so a blocking call of 0.1 s = 2 ticks at 20 Hz
    # costs one missed tick. 50 steps of 0.02 reach the goal (0.999: no float edge).
    res, env = run("sync", StepPolicy(), 0.1, execute_horizon=4)
    assert res.success and res.ticks_to_success == res.ticks
    chunks = res.inferences
    assert chunks == int(np.ceil(50 / 4))
    assert res.missed_ticks == chunks - 1  # the first wait is warm-up, not counted
    assert res.ticks == 50 + chunks
    pattern = "".join("h" if a[0] == 0.0 else "." for a in env.steps)
    assert pattern.startswith("h....h....h") and pattern.count("h") == chunks
    assert all(a[1] == 1.0 for a in env.steps[1:])  # holds keep the last gripper command
    slower, _ = run("sync", StepPolicy(), 0.2, execute_horizon=4)  # 4 ticks -> 3 missed
    assert slower.missed_ticks == 3 * (chunks - 1)


def test_async_with_lead_time_misses_nothing():
    res, _ = run("async", StepPolicy(), 0.1, threshold=0.5, control_hz=20.0)
    assert res.success and res.missed_ticks == 0
    res_slow, _ = run("async", StepPolicy(), 0.3, threshold=0.5, control_hz=20.0)
    assert res_slow.missed_ticks > 0  # 6 ticks of delay > 4 actions of lead


def test_boundary_jump_is_measured_at_chunk_switches():
    res, _ = run("sync", StepPolicy(speeds=(0.02, 0.05)), 0.0, execute_horizon=4)
    assert res.missed_ticks == 0
    assert res.within_chunk_jump == 0.0
    np.testing.assert_allclose(res.boundary_jump, 0.03, atol=1e-9)
    # a constant policy has no jumps and no jerk once moving
    flat, _ = run("sync", StepPolicy(), 0.0, execute_horizon=4)
    assert flat.boundary_jump == 0.0 and flat.mean_sq_jerk_action == 0.0


def test_episode_stops_at_max_ticks():
    res, env = run("sync", StepPolicy(speeds=(0.0,)), 0.0, max_ticks=30, execute_horizon=4)
    assert not res.success and res.ticks == 30 and len(env.steps) == 30
