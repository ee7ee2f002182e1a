"""Flow-matching math (openpi convention t=1 noise) and π0's blockwise-causal masks."""

from __future__ import annotations

import math

import pytest
import torch

from vlastack.functional.attention_masks import make_attn_mask, positions_from_mask
from vlastack.functional.flow_matching import (
    euler_integrate,
    interpolate,
    sample_time,
    sincos_time_embedding,
    target_velocity,
)


def test_interpolation_endpoints_and_velocity():
    g = torch.Generator().manual_seed(0)
    A, eps = torch.randn(3, 5, 2, generator=g), torch.randn(3, 5, 2, generator=g)
    torch.testing.assert_close(interpolate(A, eps, torch.ones(3)), eps)
    torch.testing.assert_close(interpolate(A, eps, torch.zeros(3)), A)
    # d x_t / dt along the straight path equals the target ε − A
    t, h = torch.full((3,), 0.4), 1e-3
    fd = (interpolate(A, eps, t + h) - interpolate(A, eps, t - h)) / (2 * h)
    torch.testing.assert_close(fd, target_velocity(A, eps), atol=1e-3, rtol=1e-3)


def test_time_distribution_is_beta_1p5_1_scaled():
    t = sample_time(200_000, torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0.001 and float(t.max()) <= 1.0
    u = (t - 0.001) / 0.999
    # Beta(1.5, 1): mean 1.5/2.5 = 0.6, CDF x^1.5
    assert float(u.mean()) == pytest.approx(0.6, abs=3e-3)
    assert float((u <= 0.5).float().mean()) == pytest.approx(0.5**1.5, abs=3e-3)


def test_time_sampling_seeded():
    a = sample_time(8, torch.Generator().manual_seed(3))
    b = sample_time(8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_sincos_embedding_matches_formula():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = sincos_time_embedding(t, 8, 4e-3, 4.0)
    assert emb.shape == (3, 8)
    periods = [4e-3 * (4.0 / 4e-3) ** (k / 3) for k in range(4)]
    for i, tv in enumerate(t.tolist()):
        exp = [math.sin(2 * math.pi * tv / p) for p in periods] + [
            math.cos(2 * math.pi * tv / p) for p in periods
        ]
        torch.testing.assert_close(emb[i], torch.tensor(exp), atol=1e-6, rtol=1e-5)


def test_euler_linear_field_matches_discrete_closed_form():
    # dx/dt = λx integrated from t=1 to 0 with N steps of dt=−1/N gives x0 = (1 − λ/N)^N x1
    lam, N = 0.7, 10
    x1 = torch.tensor([[1.0, -2.0]])
    out = euler_integrate(lambda x, t: lam * x, x1, N)
    torch.testing.assert_close(out, (1 - lam / N) ** N * x1)
    # and converges to the ODE solution e^{−λ} x1 as N grows
    fine = euler_integrate(lambda x, t: lam * x, x1, 2000)
    torch.testing.assert_close(fine, math.exp(-lam) * x1, atol=1e-3, rtol=1e-3)


def test_euler_on_true_straight_field_recovers_data():
    g = torch.Generator().manual_seed(0)
    A, eps = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    ts = []

    def v(x, t):
        ts.append(float(t[0]))
        return eps - A

    torch.testing.assert_close(euler_integrate(v, eps, 10), A, atol=1e-5, rtol=1e-5)
    assert ts == pytest.approx([1.0 - k / 10 for k in range(10)])


def _rows(m):
    return m[0].to(torch.int).tolist()


def test_make_attn_mask_causal():
    m = make_attn_mask(torch.ones(1, 4, dtype=torch.bool), torch.tensor([1, 1, 1, 1]))
    assert _rows(m) == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_make_attn_mask_prefix_lm():
    m = make_attn_mask(torch.ones(1, 4, dtype=torch.bool), torch.tensor([0, 0, 1, 1]))
    assert _rows(m) == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_make_attn_mask_pi0_blocks_and_padding():
    # prefix (2 tokens, second padded) | state (ar=1) | 3 actions (ar 1,0,0)
    valid = torch.tensor([[True, False, True, True, True, True]])
    ar = torch.tensor([[0, 0, 1, 1, 0, 0]])
    m = make_attn_mask(valid, ar)
    assert _rows(m) == [
        [1, 0, 0, 0, 0, 0],  # prefix sees prefix only (and never the padded token)
        [0, 0, 0, 0, 0, 0],  # padded token attends nothing
        [1, 0, 1, 0, 0, 0],  # state sees prefix + itself
        [1, 0, 1, 1, 1, 1],  # actions see prefix, state and all actions
        [1, 0, 1, 1, 1, 1],
        [1, 0, 1, 1, 1, 1],
    ]
    assert positions_from_mask(valid).tolist() == [[0, 0, 1, 2, 3, 4]]
