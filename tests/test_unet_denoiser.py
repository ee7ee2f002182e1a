"""Diffusion Policy's 1-D U-Net denoiser (``diffusion`` head, ``denoiser="unet"``): the module
path trains, and the inference plan (im2col GEMMs, phase-split transposed convolution, cached
FiLM terms) gives the module path's ε̂ and chunks."""

from __future__ import annotations

import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.models.action_heads import build_action_head
from vlastack.models.action_heads.unet1d import ConditionalUnet1d
from vlastack.runners.native import NativeRunner, shallow_copy
from vlastack.runners.native.unet import native_unet_head

D, A = 12, 5


def make(horizon: int = 16, **cfg):
    torch.manual_seed(0)
    cfg = {"denoiser": "unet", "width": 16, "down_dims": (16, 32, 64), "step_embed_dim": 16} | cfg
    return build_action_head("diffusion", cfg, context_dim=D, action_dim=A, action_horizon=horizon)


def test_same_layer_shapes_as_diffusion_policys_unet():
    """At LeRobot's benchmark settings (7-d actions, 2 obs steps × 23-d state = 46-d global
    condition, step embedding 128, down_dims (64, 128, 256), kernel 5) the U-Net and step
    encoder hold 4,583,303 parameters, what LeRobot 0.4.4's DiffusionPolicy reports for the same
    config (benchmarks/bench_lerobot_policies.py prints both)."""
    head = build_action_head(
        "diffusion",
        {"denoiser": "unet", "width": 46},
        context_dim=46,
        action_dim=7,
        action_horizon=16,
    )
    n = sum(p.numel() for m in (head.unet, head.step_encoder) for p in m.parameters())
    assert n == 4_583_303


@pytest.mark.parametrize(
    "horizon,B,cfg",
    [
        (16, 1, {}),
        (8, 3, {}),
        (16, 2, {"film_scale": False}),
        (12, 2, {"down_dims": (16, 32), "kernel_size": 3}),
        (16, 1, {"down_dims": (64, 128, 256), "width": 46}),  # the prepacked-GEMM widths
    ],
)
def test_plan_matches_module_path(horizon, B, cfg, kernels):
    head = make(horizon, **cfg).eval()
    g = torch.Generator().manual_seed(1)
    context = torch.randn(B, 3, D, generator=g)
    mask = torch.ones(B, 3, dtype=torch.bool)
    if B > 1:
        mask[1, 1:] = False
    x = torch.randn(B, horizon, A, generator=g)
    t = torch.full((B,), 41)
    with torch.no_grad():
        kvs, pooled = head._prefix(context, mask)
        fast_head = native_unet_head(head, shallow_copy(head))
        assert fast_head is not None
        fast = fast_head.predict_noise(x, t, kvs, pooled, mask)
        ref = head.predict_noise(x, t, kvs, pooled, mask)
    torch.testing.assert_close(fast, ref, atol=2e-5, rtol=2e-5)
    chunk = NativeRunner().head(head)(context, mask, torch.Generator().manual_seed(0))
    chunk_ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    assert chunk.shape == (B, horizon, A)
    # ten DDIM steps amplify ε̂'s rounding: x̂0 = (x − √(1−ᾱ)·ε̂)/√ᾱ multiplies it by 1/√ᾱ,
    # ~2,000 at t = 99 and ~7 at t = 90 (squared-cosine schedule, 100 train steps; x̂0 is then
    # clipped to ±1); 4.7e-5 was seen on an AVX2-only CPU. The ε̂ check above is the tight one.
    torch.testing.assert_close(chunk, chunk_ref, atol=2e-4, rtol=1e-3)


def test_mixed_timesteps_in_a_batch():
    head = make().eval()
    context, mask = torch.randn(3, 2, D), torch.ones(3, 2, dtype=torch.bool)
    x, t = torch.randn(3, 16, A), torch.tensor([3, 50, 99])
    with torch.no_grad():
        kvs, pooled = head._prefix(context, mask)
        fast = native_unet_head(head, shallow_copy(head)).predict_noise(x, t, kvs, pooled, mask)
        ref = head.predict_noise(x, t, kvs, pooled, mask)
    torch.testing.assert_close(fast, ref, atol=2e-5, rtol=2e-5)


def test_plan_and_film_caches_follow_weight_updates():
    """A runner is built for frozen weights: the one rebuilt after an update sees it."""
    head = make().eval()
    context, mask = torch.randn(1, 2, D), torch.ones(1, 2, dtype=torch.bool)
    before = NativeRunner().head(head)(context, mask, torch.Generator().manual_seed(0))
    with torch.no_grad():  # in place, like an optimizer step: step encoder and FiLM included
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    native = NativeRunner().head(head)
    after = native(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, atol=2e-5, rtol=2e-5)
    # a new context in the same plan: the cached context term must not be reused
    other = native(context + 1.0, mask, torch.Generator().manual_seed(0))
    other_ref = head.sample_actions(context + 1.0, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(other, other_ref, atol=2e-5, rtol=2e-5)


def test_replaced_linear_layers_turn_the_plan_off():
    from vlastack.models.bitlinear import ternarize_

    head = make().eval()
    with torch.no_grad():
        assert native_unet_head(head, shallow_copy(head)) is not None
        assert ternarize_(head) > 0
        assert native_unet_head(head, shallow_copy(head)) is None
    context, mask = torch.randn(1, 2, D), torch.ones(1, 2, dtype=torch.bool)
    fast = NativeRunner().head(head)(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)


def test_trains():
    head = make(8, down_dims=(16, 32))
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    context = torch.randn(32, 2, D, generator=g)
    mask = torch.ones(32, 2, dtype=torch.bool)
    actions = torch.tanh(context[:, :1, :A].repeat(1, 8, 1))  # a function of the context
    pad = torch.zeros(32, 8, dtype=torch.bool)

    def held_out_loss() -> float:  # same timesteps and noise every time
        torch.manual_seed(123)
        with torch.no_grad():
            return head.loss(context, mask, actions, pad).mean().item()

    start = held_out_loss()
    torch.manual_seed(0)
    for _ in range(150):
        loss = head.loss(context, mask, actions, pad).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out_loss() < 0.6 * start


@pytest.mark.parametrize(
    "cfg,words",
    [
        ({"denoiser": "unett"}, "denoiser"),
        ({"down_dims": (12, 24)}, "n_groups"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"step_embed_dim": 15}, "step_embed_dim"),
    ],
)
def test_bad_configs(cfg, words):
    with pytest.raises(ConfigError, match=words):
        make(**cfg)


def test_horizon_must_halve_cleanly():
    with pytest.raises(ConfigError, match="divisible by 4"):
        make(horizon=10)
    ConditionalUnet1d(A, 8, (16, 32)).check_horizon(10)  # two levels halve once: fine
