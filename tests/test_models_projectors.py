"""Contract tests over every projector, plus closed-form checks of TokenLearner and the resampler."""

from __future__ import annotations

import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.models.projectors import PROJECTORS, build_projector

EXPECTED_TOKENS = {"mlp": 10, "perceiver": 16, "token_learner": 8}


@pytest.mark.parametrize("name", list(PROJECTORS))
def test_projector_contract(name):
    torch.manual_seed(0)
    proj = build_projector(name, None, in_dim=24, out_dim=32)
    x = torch.randn(3, 10, 24, requires_grad=True)
    y = proj(x)
    assert y.shape == (3, EXPECTED_TOKENS.get(name, y.shape[1]), 32) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in proj.parameters() if p.requires_grad)
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(proj(x[1:2]), y[1:2].detach(), rtol=1e-4, atol=1e-5)


def test_token_learner_weights_are_a_convex_combination():
    tl = build_projector("token_learner", {"num_tokens": 8}, in_dim=16, out_dim=16)
    same = torch.randn(1, 1, 16).expand(2, 12, 16)
    # Softmax weights over N sum to 1, so identical inputs give exactly value(norm(x)).
    expected = tl.value(tl.norm(same[:, :1]))
    torch.testing.assert_close(tl(same), expected.expand(2, 8, 16), rtol=1e-5, atol=1e-5)


def test_perceiver_output_count_is_independent_of_input_length():
    p = build_projector("perceiver", {"num_latents": 5, "depth": 2}, in_dim=8, out_dim=16)
    assert p(torch.randn(2, 3, 8)).shape == p(torch.randn(2, 40, 8)).shape == (2, 5, 16)


def test_unknown_projector_and_field():
    with pytest.raises(ConfigError, match="Did you mean 'perceiver'"):
        build_projector("perciever", None, 4, 4)
    with pytest.raises(ConfigError, match="num_tokens"):
        build_projector("token_learner", {"num_token": 4}, 4, 4)
