"""Contract, golden, overfit and head-specific tests for every registered action head."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.functional.fast_tokenizer import FastTokenizer
from vlastack.models.action_heads import (
    ACTION_HEADS,
    FastHead,
    FlowMatchingHead,
    build_action_head,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("golden_regenerate", GOLDEN / "regenerate.py")
assert _spec is not None and _spec.loader is not None
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)

HEADS = list(ACTION_HEADS)
D, A, H = regen.CONTEXT_DIM, regen.ACTION_DIM, regen.ACTION_HORIZON


def make_head(name: str, seed: int = 0, **over):
    torch.manual_seed(seed)
    cfg = {**regen.TINY_CONFIGS[name], **over}
    return build_action_head(name, cfg, context_dim=D, action_dim=A, action_horizon=H)


def batch(B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(B, 7, D, generator=g)
    mask = torch.ones(B, 7, dtype=torch.bool)
    mask[0, 5:] = False
    actions = torch.rand(B, H, A, generator=g) * 1.6 - 0.8
    is_pad = torch.zeros(B, H, dtype=torch.bool)
    is_pad[-1, H - 2 :] = True
    return context, mask, actions, is_pad


def seeded_loss(head, *args, seed=5, **kw):
    torch.manual_seed(seed)
    return head.loss(*args, **kw)


def test_every_head_has_a_tiny_config():
    assert set(HEADS) == set(regen.TINY_CONFIGS), "add the new head to tests/golden/regenerate.py"


# ---------------------------------------------------------------- contract (every head)
@pytest.mark.parametrize("name", HEADS)
def test_loss_shape_finite_and_gradients_reach_every_parameter(name):
    head = make_head(name)
    loss = head.loss(*batch())
    assert loss.shape == (3,) and bool(torch.isfinite(loss).all())
    loss.mean().backward()
    missing = [
        n
        for n, p in head.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"{name}: no gradient reaches {missing}"


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("B", [1, 4])
def test_sample_shape_and_seeded_determinism(name, B):
    head = make_head(name).eval()
    context, mask, _, _ = batch(B)
    a = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    b = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    assert a.shape == (B, H, A) and bool(torch.isfinite(a).all())
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", HEADS)
def test_loss_seeded_determinism_and_batch_one(name):
    head = make_head(name)
    args = batch(1)
    assert torch.equal(seeded_loss(head, *args), seeded_loss(head, *args))
    assert seeded_loss(head, *args).shape == (1,)


@pytest.mark.parametrize("name", HEADS)
def test_padded_actions_do_not_change_the_loss(name):
    head = make_head(name)
    context, mask, actions, is_pad = batch()
    changed = actions.clone()
    changed[is_pad] = torch.rand_like(changed[is_pad]) * 2 - 1
    assert not torch.equal(changed, actions)
    torch.testing.assert_close(
        seeded_loss(head, context, mask, actions, is_pad),
        seeded_loss(head, context, mask, changed, is_pad),
    )
    # and the valid steps do matter
    other = actions.clone()
    other[~is_pad] = -other[~is_pad]
    assert not torch.allclose(
        seeded_loss(head, context, mask, actions, is_pad),
        seeded_loss(head, context, mask, other, is_pad),
    )


@pytest.mark.parametrize("name", HEADS)
def test_masked_context_tokens_are_ignored_and_valid_ones_used(name):
    head = make_head(name).eval()
    context, mask, _, _ = batch()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ref = head.sample_actions(context, mask, gen())
    noisy = context.clone()
    noisy[~mask] = 100.0
    torch.testing.assert_close(head.sample_actions(noisy, mask, gen()), ref)
    if name != "fast":  # an untrained FAST decoder may emit an invalid sequence → zeros for both
        moved = context.clone()
        moved[mask] = moved[mask] + 3.0
        assert not torch.allclose(head.sample_actions(moved, mask, gen()), ref)


@pytest.mark.parametrize("name", HEADS)
def test_all_true_action_dim_mask_equals_none(name):
    head = make_head(name)
    args = batch()
    torch.testing.assert_close(
        seeded_loss(head, *args),
        seeded_loss(head, *args, action_dim_mask=torch.ones(3, A, dtype=torch.bool)),
    )


@pytest.mark.parametrize("name", HEADS)
def test_golden_outputs(name):
    from safetensors.torch import load_file

    path = GOLDEN / f"{name}.safetensors"
    assert path.exists(), f"missing {path}; run tests/golden/regenerate.py"
    ref = load_file(str(path))
    got = regen.golden_outputs(name)
    torch.testing.assert_close(got["loss"], ref["loss"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["samples"], ref["samples"], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- overfit
@pytest.mark.parametrize("name", HEADS)
def test_overfits_a_tiny_fixed_dataset(name):
    """Loss falls a lot in 100 Adam steps on 8 fixed samples, for every head."""
    head = make_head(name)
    context, mask, actions, is_pad = batch(8, seed=3)
    t = torch.linspace(0, 1, H)[None, :, None]
    actions = 0.6 * torch.sin(
        2.5 * t + torch.randn(8, 1, A, generator=torch.Generator().manual_seed(1))
    )
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    losses = []
    for _ in range(100):
        loss = head.loss(context, mask, actions, is_pad).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    stochastic = name in ("diffusion", "flow_matching", "flower")
    assert last < (0.5 if stochastic else 0.2) * first, f"{name}: {first:.3f} → {last:.3f}"


# ---------------------------------------------------------------- registry / config errors
def test_unknown_head_and_field_errors():
    with pytest.raises(ConfigError, match="Did you mean 'diffusion'"):
        build_action_head("difusion", context_dim=D, action_dim=A, action_horizon=H)
    with pytest.raises(ConfigError, match="num_stepz"):
        build_action_head(
            "flow_matching", {"num_stepz": 3}, context_dim=D, action_dim=A, action_horizon=H
        )
    with pytest.raises(ConfigError, match="time_conditioning"):
        make_head("flow_matching", time_conditioning="film")
    head = make_head("l1")
    ctx, mask, acts, pad = batch()
    with pytest.raises(ConfigError, match="at least one valid context token"):
        head.sample_actions(ctx, torch.zeros_like(mask))
    with pytest.raises(ConfigError, match="action_horizon"):
        head.loss(*batch()[:2], torch.zeros(3, H + 1, A), torch.zeros(3, H + 1, dtype=torch.bool))


def test_config_dataclass_and_dict_are_equivalent():
    from vlastack.models.action_heads import DiffusionHeadConfig

    cfg = DiffusionHeadConfig(**regen.TINY_CONFIGS["diffusion"])
    torch.manual_seed(0)
    a = build_action_head("diffusion", cfg, context_dim=D, action_dim=A, action_horizon=H)
    b = make_head("diffusion")
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na
    assert dataclasses.asdict(cfg)["num_inference_steps"] == 5


# ---------------------------------------------------------------- flow matching specifics
@pytest.mark.parametrize("time_conditioning", ["concat", "adarms"])
def test_flow_prefix_is_projected_once_per_chunk(time_conditioning, monkeypatch):
    head = make_head("flow_matching", time_conditioning=time_conditioning, depth=2, num_steps=7)
    assert isinstance(head, FlowMatchingHead)
    calls = {"prefix": 0, "velocity": 0}
    for layer in head.layers:
        orig = layer.project_prefix

        def counted(x, orig=orig):
            calls["prefix"] += 1
            return orig(x)

        monkeypatch.setattr(layer, "project_prefix", counted)
    orig_v = head.velocity

    def counted_v(*a, **k):
        calls["velocity"] += 1
        return orig_v(*a, **k)

    monkeypatch.setattr(head, "velocity", counted_v)
    context, mask, _, _ = batch()
    head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    assert calls == {"prefix": 2, "velocity": 7}


def test_flow_cached_velocity_equals_dense_joint_attention():
    """The cached expert equals running one transformer over [prefix; suffix] with the §3.2 mask
    where the prefix rows keep their cached values (the prefix never attends to the suffix)."""
    from vlastack.functional.attention_masks import make_attn_mask

    head = make_head("flow_matching", depth=1)
    context, mask, actions, _ = batch()
    cache = head.prefix_cache(context, mask)
    N = context.shape[1]
    ar = torch.tensor([0] * N + [1] + [0] * (H - 1))
    full = make_attn_mask(torch.cat([mask, torch.ones(3, H, dtype=torch.bool)], 1), ar)
    assert torch.equal(cache.mask[:, 0], full[:, N:])
    # actions are bidirectional among themselves: the first action changes when the last does
    t = torch.full((3,), 0.5)
    v1 = head.velocity(actions, t, cache)
    a2 = actions.clone()
    a2[:, -1] += 1.0
    assert not torch.allclose(head.velocity(a2, t, cache)[:, 0], v1[:, 0])


def test_flow_state_token():
    head = make_head("flow_matching", state_dim=5)
    context, mask, actions, is_pad = batch()
    state = torch.randn(3, 5)
    loss = head.loss(context, mask, actions, is_pad, state=state)
    assert loss.shape == (3,)
    s1 = head.sample_actions(context, mask, torch.Generator().manual_seed(0), state=state)
    s2 = head.sample_actions(context, mask, torch.Generator().manual_seed(0), state=state + 1)
    assert s1.shape == (3, H, A) and not torch.allclose(s1, s2)
    with pytest.raises(ConfigError, match="state"):
        head.sample_actions(context, mask)


def test_flow_guided_sampling_rtc():
    head = make_head("flow_matching")
    context, mask, _, _ = batch()
    noise = torch.randn(3, H, A, generator=torch.Generator().manual_seed(1))
    plain = head.sample_actions(context, mask, noise=noise)
    prev = torch.full((3, H, A), 0.9)
    zero_w = head.sample_actions_guided(context, mask, prev, torch.zeros(H), noise=noise)
    torch.testing.assert_close(zero_w, plain, atol=1e-5, rtol=1e-5)
    w = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    guided = head.sample_actions_guided(
        context, mask, prev, w, max_guidance_weight=5.0, noise=noise
    )
    err_plain = (plain[:, :2] - prev[:, :2]).abs().mean()
    err_guided = (guided[:, :2] - prev[:, :2]).abs().mean()
    assert err_guided < 0.5 * err_plain


# ---------------------------------------------------------------- FAST / bins specifics
def test_fast_head_with_fitted_tokenizer(tmp_path):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, H)[None, :, None]
    chunks = 0.7 * np.sin(
        2 * np.pi * (t * rng.uniform(0.2, 1, (200, 1, A)) + rng.uniform(0, 1, (200, 1, A)))
    )
    FastTokenizer.fit(chunks, vocab_size=300).save(tmp_path / "tok")
    head = build_action_head(
        "fast",
        {**regen.TINY_CONFIGS["fast"], "tokenizer_path": str(tmp_path / "tok")},
        context_dim=D,
        action_dim=A,
        action_horizon=H,
    )
    assert isinstance(head, FastHead) and head.tokenizer.vocab_size == 300
    context, mask, actions, is_pad = batch()
    assert head.loss(context, mask, actions, is_pad).shape == (3,)
    out = head.sample_actions(context, mask)
    assert out.shape == (3, H, A) and head.last_decode_valid is not None
    # an untrained decoder's invalid sequences must come back as exact zeros
    assert all(bool((o == 0).all()) for o, v in zip(out, head.last_decode_valid) if not v)
    with pytest.raises(ConfigError, match="fast fit"):
        build_action_head(
            "fast",
            {"tokenizer_path": str(tmp_path / "tok")},
            context_dim=D,
            action_dim=A,
            action_horizon=H + 1,
        )


def test_bins_heads_sample_bin_centers():
    from vlastack.functional.action_tokenization import bin_centers

    centers = bin_centers()
    for name in ("bins", "bins_ar"):
        out = make_head(name).sample_actions(*batch()[:2])
        assert bool(torch.isin(out, centers).all())


def test_fill_padded_actions_repeats_last_valid_step():
    from vlastack.models.layers.masking import fill_padded_actions

    a = torch.arange(1.0, 6.0).view(1, 5, 1).repeat(2, 1, 1)
    pad = torch.tensor([[False, False, True, True, False], [True, False, True, False, True]])
    out = fill_padded_actions(a, pad)[..., 0]
    assert out.tolist() == [[1, 2, 2, 2, 5], [0, 2, 2, 4, 4]]


def test_diffusion_ddpm_sampler_and_cosine_schedule():
    head = make_head("diffusion", sampler="ddpm", beta_schedule="cosine", num_inference_steps=20)
    context, mask, _, _ = batch()
    a = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    b = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    c = head.sample_actions(context, mask, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ConfigError, match="num_inference_steps"):
        make_head("diffusion", num_inference_steps=500)


def test_bf16_attention_under_autograd_runs_in_float32_on_the_cpu() -> None:
    """CPU bf16 flash-attention backward is several times slower than float32's; the heads' sdpa
    runs it in float32 there and returns bf16, with gradients to q, k and v."""
    import torch.nn.functional as F

    from vlastack.models.layers.attention import sdpa

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 20, 16, dtype=torch.bfloat16, requires_grad=True) for _ in "qkv")
    mask = torch.rand(2, 1, 20, 20) > 0.2
    mask[..., 0] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    torch.testing.assert_close(out.double(), ref, rtol=0.02, atol=0.02)
    out.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
    with torch.no_grad():  # inference keeps the stock bf16 kernel
        torch.testing.assert_close(
            sdpa(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        )
