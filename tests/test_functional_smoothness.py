"""Smoothness metrics: jerk of a cubic is constant; chunk-boundary jumps."""

from __future__ import annotations

import pytest
import torch

from vlastack.functional.smoothness import chunk_boundary_jumps, jerk, mean_squared_jerk, step_sizes


def test_jerk_of_cubic_is_constant():
    dt = 0.05
    t = torch.arange(40, dtype=torch.float64) * dt
    a = torch.stack([2.0 * t**3 - t, -0.5 * t**3 + 3 * t**2], -1)  # d³/dt³ = 12, −3
    j = jerk(a, dt)
    torch.testing.assert_close(j[:, 0], torch.full((37,), 12.0, dtype=torch.float64))
    torch.testing.assert_close(j[:, 1], torch.full((37,), -3.0, dtype=torch.float64))
    assert float(mean_squared_jerk(a, dt)) == pytest.approx((144 + 9) / 2)


def test_jerk_of_quadratic_is_zero_and_units_scale_with_dt():
    t = torch.arange(10, dtype=torch.float64)
    a = (t**2)[:, None]
    assert float(mean_squared_jerk(a, 1.0)) == pytest.approx(0.0, abs=1e-20)
    c = (t**3)[:, None]
    assert float(mean_squared_jerk(c, 0.5)) == pytest.approx(
        float(mean_squared_jerk(c, 1.0)) * 2**6
    )


def test_chunk_boundary_jumps():
    a = torch.zeros(8, 2, dtype=torch.float64)
    a[4:, 0] = 3.0
    a[4:, 1] = 4.0
    assert chunk_boundary_jumps(a, [4]).tolist() == [5.0]
    assert chunk_boundary_jumps(a, [2]).tolist() == [0.0]
    assert float(step_sizes(a).max()) == 5.0
    with pytest.raises(ValueError):
        chunk_boundary_jumps(a, [0])
    with pytest.raises(ValueError):
        jerk(a[:3], 0.1)
