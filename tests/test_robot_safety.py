"""``SafetyFilter`` alone, tick by tick with explicit times (no threads, no real clock)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vlastack.embodiment import EmbodimentSpec, VectorSpec
from vlastack.errors import ConfigError
from vlastack.robot.safety import SafetyFilter, count_violations, limits_for


def _filter(kind="absolute", **over):
    names = ["a", "b"]
    spec = EmbodimentSpec(
        "r", [], VectorSpec(names), VectorSpec(names, kind=kind, low=[-1, -1], high=[1, 1]), 10
    )
    over.setdefault("max_delta", 0.1)
    return SafetyFilter(limits_for(names, 10, robot=spec, overrides=over))


def test_clean_action_passes_unchanged():
    f = _filter()
    a = np.array([0.05, -0.05])
    np.testing.assert_array_equal(f.command(a, 0.0, hold=np.zeros(2)), a)
    assert f.interventions == 0


def test_first_command_limited_from_the_measured_pose_then_per_tick():
    f = _filter()
    c0 = f.command(np.array([0.9, 0.0]), 0.0, hold=np.array([0.5, 0.0]))
    np.testing.assert_allclose(c0, [0.6, 0.0])  # 0.5 + max_delta
    c1 = f.command(np.array([0.9, 0.0]), 0.1, hold=c0)
    np.testing.assert_allclose(c1, [0.7, 0.0])
    assert f.counts["rate_limit"] == 2 and f.counts["range_clamp"] == 0


def test_velocity_limit_uses_the_time_since_the_last_command():
    f = _filter(max_velocity=0.5)  # 0.05 per 0.1 s: tighter than max_delta 0.1
    f.command(np.zeros(2), 0.0, hold=np.zeros(2))
    np.testing.assert_allclose(f.command(np.ones(2), 0.1, hold=None), [0.05, 0.05])
    np.testing.assert_allclose(f.command(np.ones(2), 0.12, hold=None), [0.06, 0.06])  # 20 ms


def test_range_clamp_then_rate_limit():
    f = _filter(max_delta=5.0)
    np.testing.assert_allclose(f.command(np.array([3.0, -7.0]), 0.0, hold=np.zeros(2)), [1, -1])
    assert f.counts["range_clamp"] == 1 and f.counts["rate_limit"] == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_holds_the_robot_never_the_last_action(bad):
    f = _filter()
    f.command(np.array([0.1, 0.1]), 0.0, hold=np.zeros(2))
    pose = np.array([0.05, 0.02])  # the robot lags its last target
    cmd = f.command(np.array([bad, 0.2]), 0.1, hold=pose)
    np.testing.assert_allclose(cmd, pose)
    assert f.counts["nonfinite"] == 1


def test_hold_reasons_and_wait_counters():
    f = _filter()
    f.command(np.zeros(2), 0.0, hold=np.zeros(2))
    for i, reason in enumerate(["stale", "server_lost", "policy_error", "wait"]):
        np.testing.assert_allclose(f.command(np.ones(2), 0.1 * (i + 1), np.zeros(2), reason), 0)
    assert [f.counts[k] for k in ("stale", "server_lost", "policy_error", "wait")] == [1, 1, 1, 1]
    assert f.interventions == 3  # a wait is not an intervention


def test_generic_holds_by_action_kind():
    delta = _filter(kind="delta")
    delta.command(np.array([0.1, 0.1]), 0.0)
    np.testing.assert_array_equal(delta.command(None, 0.1, None, "stale"), [0, 0])  # no motion
    absolute = _filter()
    assert absolute.command(None, 0.0, None, "wait") is None  # pose unknown: send nothing
    absolute.command(np.array([0.1, 0.1]), 0.1)
    np.testing.assert_allclose(absolute.command(None, 0.2, None, "stale"), [0.1, 0.1])
    safe = _filter(safe_action=[0.2, -0.2], max_delta=1.0)
    np.testing.assert_allclose(safe.command(None, 0.0, np.zeros(2), "stale"), [0.2, -0.2])


def test_clock_backwards_is_counted_and_moves_nothing():
    f = _filter()
    f.command(np.zeros(2), 10.0, hold=np.zeros(2))
    np.testing.assert_array_equal(f.command(np.full(2, 0.05), 3.0, hold=None), [0, 0])
    assert f.counts["clock_jump"] == 1
    np.testing.assert_allclose(f.command(np.full(2, 0.05), 3.1, hold=None), 0.05)  # re-based


def test_wrong_action_size_is_a_config_error():
    with pytest.raises(ConfigError, match="3 values for a robot with 2 action dimensions"):
        _filter().command(np.zeros(3), 0.0)


def test_one_log_line_per_run_of_ticks(caplog):
    f = _filter()
    with caplog.at_level(logging.INFO, logger="vlastack.robot.safety"):
        for i in range(5):
            f.command(np.array([np.nan, 0.0]), 0.1 * i, hold=np.zeros(2))
        f.command(np.zeros(2), 0.6, hold=np.zeros(2))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "safety: nonfinite (tick 1 of this kind)",
        "safety: nonfinite ended after 5 consecutive ticks",
    ]


def test_count_violations():
    lim = _filter().limits
    ok = np.array([[0, 0], [0.1, -0.1], [0.2, -0.2]])
    assert count_violations(ok, lim) == 0
    bad = np.array([[0, 0], [0.5, 0], [1.5, 0], [np.nan, 0]])
    assert count_violations(bad, lim) == 3
