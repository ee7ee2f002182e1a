"""The trunk's native-runner plan (``runners.native.trunk``) must give the module's outputs,
follow weight updates once the runner is rebuilt, and stand aside for layers it does not run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlastack.models.trunk import encoder_forward
from vlastack.runners.native import trunk as trunk_mod
from vlastack.runners.native.trunk import EncoderPlan, native_trunk


def trunk(width=64, layers=2, norm_first=True, activation="relu", final_norm=False):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        width,
        4,
        4 * width,
        dropout=0.0,
        batch_first=True,
        norm_first=norm_first,
        activation=activation,
    )
    norm = nn.LayerNorm(width) if final_norm else None
    return nn.TransformerEncoder(layer, layers, norm=norm, enable_nested_tensor=False).eval()


def inputs(B, N, width, padded):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, N, width, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    if padded:
        mask[1, 2:] = False
    return x, mask


# width 256: the in-projection and FFN weights go through oneDNN's prepacked kernel (ReLU fused)
@pytest.mark.parametrize("width", [64, 256])
@pytest.mark.parametrize("norm_first,activation", [(True, "relu"), (False, "gelu")])
@pytest.mark.parametrize("B,padded", [(1, False), (3, True)])
def test_plan_matches_the_module(width, norm_first, activation, B, padded, kernels):
    enc = trunk(width, norm_first=norm_first, activation=activation, final_norm=not norm_first)
    assert EncoderPlan.supports(enc)
    x, mask = inputs(B, 5, width, padded)
    with torch.no_grad():
        fast = native_trunk(enc)(x, mask)
        ref = enc(x, src_key_padding_mask=~mask)
        assert torch.equal(encoder_forward(enc, x, mask), ref)  # the module itself
    rows = mask[:, :, None].expand_as(ref)  # padded rows are never read downstream
    torch.testing.assert_close(fast[rows], ref[rows], atol=1e-5, rtol=1e-5)


def test_plan_follows_weight_updates():
    """A runner is built for frozen weights: the rebuilt one sees the update, the old one not."""
    enc = trunk()
    x, mask = inputs(2, 4, 64, False)
    with torch.no_grad():
        old = native_trunk(enc)
        before = old(x, mask)
        enc.layers[0].linear1.weight.mul_(0.5)
        after = native_trunk(enc)(x, mask)
        torch.testing.assert_close(old(x, mask), before, atol=0, rtol=0)
        torch.testing.assert_close(after, enc(x, src_key_padding_mask=~mask), atol=1e-5, rtol=0)
    assert not torch.allclose(before, after)


def test_unsupported_layers_run_the_module(monkeypatch):
    """An int8 / BitLinear-style swap of an FFN layer, or a tanh-GELU, is not the plan's math."""

    class Swapped(nn.Linear):
        def forward(self, x):
            return super().forward(x) + 1.0

    enc = trunk()
    old = enc.layers[1].linear2
    enc.layers[1].linear2 = Swapped(old.in_features, old.out_features)
    assert not EncoderPlan.supports(enc)
    tanh = trunk(activation=nn.GELU(approximate="tanh"))
    assert not EncoderPlan.supports(tanh)
    x, mask = inputs(2, 4, 64, False)
    built = []
    monkeypatch.setattr(trunk_mod, "EncoderPlan", type("Never", (EncoderPlan,), {}))
    monkeypatch.setattr(trunk_mod.EncoderPlan, "__init__", lambda self, t: built.append(t))
    with torch.no_grad():
        torch.testing.assert_close(
            native_trunk(enc)(x, mask), enc(x, src_key_padding_mask=~mask), atol=0, rtol=0
        )
    assert built == []


def test_autograd_runs_the_module():
    enc = trunk()
    x, mask = inputs(2, 4, 64, False)
    x.requires_grad_(True)
    y = encoder_forward(enc, x, mask)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
