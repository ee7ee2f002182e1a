"""Evaluation metrics: Wilson interval against closed forms and tables, jerk, jumps, aggregates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlastack.evaluation.metrics import (
    Z_95,
    EpisodeRecord,
    aggregate,
    chunk_boundary_jump,
    latency_stats,
    mean_squared_jerk,
    peak_memory_mb,
    summarize,
    wilson_interval,
)


def test_wilson_closed_forms_at_the_extremes():
    z2 = Z_95**2
    for n in (1, 10, 50):
        lo, hi = wilson_interval(0, n)
        assert lo == 0.0
        assert hi == pytest.approx(z2 / (n + z2), abs=1e-12)
        lo, hi = wilson_interval(n, n)
        assert lo == pytest.approx(n / (n + z2), abs=1e-12)
        assert hi == 1.0


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [  # published Wilson 95% values (e.g. Newcombe 1998 table I; Brown, Cai & DasGupta 2001)
        (5, 10, 0.2366, 0.7634),
        (1, 10, 0.0179, 0.4042),
        (50, 100, 0.4038, 0.5962),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-4)
    assert got[1] == pytest.approx(hi, abs=5e-4)


def test_wilson_contains_rate_and_rejects_bad_counts():
    for k in range(11):
        lo, hi = wilson_interval(k, 10)
        assert lo <= k / 10 <= hi
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_jerk_of_a_cubic_is_its_constant_third_derivative():
    t = np.arange(12, dtype=np.float64)
    actions = np.stack([t**3, 2 * t**3], axis=1)  # third differences 6 and 12 per step³
    assert mean_squared_jerk(actions) == pytest.approx((36 + 144) / 2)
    dt = 0.5  # jerk = Δ³a / dt³
    assert mean_squared_jerk(actions, dt_s=dt) == pytest.approx((36 + 144) / 2 / dt**6)
    assert mean_squared_jerk(np.ones((10, 3))) == 0.0
    assert math.isnan(mean_squared_jerk(np.ones((3, 2))))


def test_chunk_boundary_jump_is_mean_norm_at_chunk_starts():
    a = np.zeros((9, 2))
    a[3:6] = [3.0, 4.0]  # chunk 2 starts at step 3 (jump 5), chunk 3 at 6 (jump 5 back to 0)
    assert chunk_boundary_jump(a, [0, 3, 6]) == pytest.approx(5.0)
    a[6:] = [3.0, 4.0]  # no jump at 6
    assert chunk_boundary_jump(a, [0, 3, 6]) == pytest.approx(2.5)
    assert math.isnan(chunk_boundary_jump(a, [0]))


def test_latency_percentiles():
    s = latency_stats(range(1, 101))
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == 100
    assert math.isnan(latency_stats([])["p50_ms"])


def test_peak_memory_reports_rss():
    mem = peak_memory_mb()
    assert mem["peak_rss_mb"] > 10  # a Python interpreter with numpy is tens of MB


def _rec(task, ep, status, diff="easy", cond="default", steps=None, chain=None):
    return EpisodeRecord(
        task=task,
        episode=ep,
        seed=ep,
        status=status,
        steps_to_success=steps,
        difficulty=diff,
        condition=cond,
        latencies_ms=[1.0, 3.0],
        num_chunks=2,
        subtasks_completed=chain,
        subtasks_total=5 if chain is not None else None,
    )


def test_errors_are_excluded_from_the_rate_and_counted_apart():
    recs = [_rec("a", 0, "success", steps=10), _rec("a", 1, "failure"), _rec("a", 2, "error")]
    agg = aggregate(recs)
    assert agg["episodes"] == 3 and agg["completed"] == 2 and agg["errors"] == 1
    assert agg["success_rate"] == 0.5
    assert (agg["ci95_low"], agg["ci95_high"]) == pytest.approx(wilson_interval(1, 2))
    assert agg["steps_to_success_mean"] == 10
    assert aggregate([_rec("a", 0, "error")])["success_rate"] is None


def test_summary_groups_by_task_difficulty_condition_and_chain():
    recs = [
        _rec("a", 0, "success", "easy", steps=5, chain=5),
        _rec("a", 1, "failure", "easy", chain=2),
        _rec("b", 0, "success", "hard", steps=7, chain=0),
        _rec("b", 1, "failure", "hard", cond="blank_instruction", chain=1),
    ]
    s = summarize(recs)
    assert set(s["per_task"]) == {"a", "b"}
    assert s["per_difficulty"]["hard"]["successes"] == 1
    conds = s["per_condition"]
    assert conds["default"]["success_rate"] == pytest.approx(2 / 3)
    assert conds["blank_instruction"]["drop"] == pytest.approx(2 / 3)
    assert s["overall"]["chain_length_mean"] == pytest.approx(2.0)
    assert s["overall"]["chain_success_at"]["1"] == pytest.approx(0.75)
    assert s["overall"]["chain_success_at"]["5"] == pytest.approx(0.25)


def test_record_round_trip_turns_nan_into_null():
    r = _rec("a", 0, "failure")
    r.mean_squared_jerk = float("nan")
    d = r.to_dict()
    assert d["mean_squared_jerk"] is None
    assert EpisodeRecord.from_dict({**d, "unknown_field": 1}).task == "a"
