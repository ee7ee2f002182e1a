"""Stress perturbations change pixels or text but never physics; chains and the modular baseline."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="needs the sim extra (Meta-World)")

from vlastack.envs import make_env  # noqa: E402
from vlastack.envs.perturbations import (  # noqa: E402
    PARAPHRASES,
    PERTURBATIONS,
    register,
    stress_env_name,
    swapped_task,
)

BASE = "metaworld/reach-v3"
SIZE = (64, 64)


def _rollout(env, seed: int, steps: int = 12):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    frames, raws, succ = [obs[env.image_key]], [info["raw_obs"]], []
    for _ in range(steps):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        frames.append(obs[env.image_key])
        raws.append(info["raw_obs"])
        succ.append(info["success"])
    return frames, np.stack(raws), succ, obs


@pytest.fixture(scope="module")
def baseline():
    env = make_env(BASE, image_size=SIZE)
    out = _rollout(env, seed=5)
    yield out
    env.close()


@pytest.mark.parametrize("condition", list(PERTURBATIONS))
def test_perturbation_keeps_physics_and_changes_what_it_should(baseline, condition):
    frames0, raws0, succ0, obs0 = baseline
    name = stress_env_name(condition, BASE)
    register([name])
    env = make_env(name, image_size=SIZE)
    frames, raws, succ, obs = _rollout(env, seed=5)
    np.testing.assert_array_equal(raws, raws0)  # same simulator state at every step
    assert succ == succ0
    diff = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames0)])
    if PERTURBATIONS[condition].kind == "visual":
        # object_color touches only the small block and goal marker: a few pixels at 64x64
        assert diff > 0.05, f"{condition}: frames barely changed ({diff:.3f})"
        assert obs["task"] == obs0["task"]
    else:
        assert diff == 0.0
        assert obs["task"] != obs0["task"]
    env.close()


def test_language_tables():
    from vlastack.envs.metaworld_tasks import INSTRUCTIONS

    assert set(PARAPHRASES) == set(INSTRUCTIONS)
    assert all(PARAPHRASES[t] != INSTRUCTIONS[t] for t in INSTRUCTIONS)
    tasks = list(INSTRUCTIONS)
    assert all(swapped_task(t, tasks) != t for t in tasks)


def test_unknown_condition_is_a_clear_error():
    from vlastack.errors import ConfigError

    with pytest.raises(ConfigError, match="lighting_dark"):
        register(["stress/lightning/metaworld/reach-v3"])


def test_chain_env_expert_completes_subtasks_and_goal_moves():
    from vlastack.envs.chains import ChainEnv

    env = ChainEnv("reach-v3", image_size=SIZE, num_subtasks=3, steps_per_subtask=120)
    expert = env.make_expert()
    obs, info = env.reset(seed=0)
    first = {k: np.array(v, copy=True) for k, v in obs.items() if k != "task"}
    goals = [info["goal"]]
    for _ in range(env.max_steps):
        obs, _, term, trunc, info = env.step(expert.act(info["raw_obs"]))
        if not np.allclose(info["goal"], goals[-1]):
            goals.append(info["goal"])
        if term or trunc:
            break
    assert info["subtasks_completed"] == 3 and info["success"] and term
    assert len(goals) == 3
    # The next chain on the same seed starts from the same scene: the hand pushes between
    # subtasks do not leak into later episodes (the chain suite compares policies per seed).
    again, _ = env.reset(seed=0)
    for k, v in first.items():
        assert np.array_equal(np.asarray(again[k]), v), k
    env.close()


def test_modular_perception_estimates_goal_from_pixels():
    from vlastack.envs.chains import ChainEnv
    from vlastack.envs.modular import ModularPolicy

    env = ChainEnv("reach-v3", image_size=(128, 128), num_subtasks=2, steps_per_subtask=150)
    pol = ModularPolicy(env.camera)
    obs, info = env.reset(seed=1)
    obs, *_ = env.step(np.zeros(4, dtype=np.float32))  # first frame shows a stale goal marker
    pol.reset()
    for _ in range(env.max_steps - 1):
        obs, _, term, trunc, info = env.step(pol.act(env.raw, obs, true_goal=env.goal))
        if info["subtask_success"]:
            pol.new_subtask()
        if term or trunc:
            break
    assert pol.errors_m, "perception never saw the goal"
    assert float(np.median(pol.errors_m)) < 0.04  # metres; the goal sphere is ~2 cm
    assert info["subtasks_completed"] >= 1
    env.close()
