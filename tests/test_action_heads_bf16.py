"""A head cast to bf16 runs in eager, close to float32 (issue #25's bug: the diffusion head drew
its noise in float32 and failed in its first Linear; flow heads' times rounded to bf16 scrambled
π0's time embedding; the diffusion schedule was rounded to bf16).

Every registered head is asked (``ActionHead.bf16_atol``, the tolerance it documents, or
``bf16_blocker``, why it does not claim bf16); a head that claims it is cast with
``.to(torch.bfloat16)``, given the same context in bf16 and the same seed, and its chunk must be
bf16, finite and within ``bf16_atol`` (max |Δ|, normalized action units) of the float32 head's,
over three seeds. A head that does not claim it must name its reason (checked, not skipped).
Sizes: width 64, depth 2, 4 heads, H 8, A 7 (the U-Net: down_dims (16, 32)), batch 2; measured
max |Δ| here: act 0.010, l1 0.023, flower 0.009, flow_matching 0.029, diffusion 0.071, U-Net
0.060; at bench_heads' size (width 256, depth 4, H 16, U-Net (64, 128, 256)) over 8 seeds:
l1 0.029, act 0.023, flower 0.013, flow_matching 0.037, diffusion 0.092, U-Net 0.059. One thread
(the bf16 U-Net's convolutions oversubscribe badly on a loaded 2-core machine).
"""

from __future__ import annotations

import os

import pytest
import torch

from vlastack.functional.flow_matching import euler_integrate
from vlastack.models.action_heads import ACTION_HEADS, build_action_head

D, A, H = 32, 7, 8
SIZE = {"width": 64, "num_heads": 4}
CONFIGS = {
    "act": {**SIZE, "encoder_depth": 2, "decoder_depth": 2},
    "fast": {"width": 32, "depth": 1, "num_heads": 2},
    "diffusion_unet": {**SIZE, "denoiser": "unet", "down_dims": (16, 32)},
}
CASES = [*ACTION_HEADS, "diffusion_unet"]


def make(case: str, seed: int):
    torch.manual_seed(seed)
    name = "diffusion" if case == "diffusion_unet" else case
    cfg = CONFIGS.get(case, {**SIZE, "depth": 2})
    return build_action_head(name, cfg, context_dim=D, action_dim=A, action_horizon=H).eval()


def test_the_continuous_heads_claim_bf16():
    """Every head that ONNX-exports a continuous sampler claims bf16 (no head drops out of the
    test below by losing its claim)."""
    for case in CASES:
        head = make(case, 0)
        if type(head).export_kind is not None:
            assert type(head).bf16_atol is not None, case
        else:
            assert type(head).bf16_blocker, case


def test_the_heads_without_bf16_say_why():
    """The token heads do not claim bf16; each names its reason (the record of 'not applicable'
    for the test below, which runs only the heads that claim it: a skip would fail under CI)."""
    blocked = {
        c: type(make(c, 0)).bf16_blocker for c in CASES if type(make(c, 0)).bf16_atol is None
    }
    assert set(blocked) == {"bins", "bins_ar", "fast"}, blocked
    for case, reason in blocked.items():
        assert isinstance(reason, str) and len(reason) > 20, (case, reason)


CLAIMING = [c for c in CASES if type(make(c, 0)).bf16_atol is not None]


@pytest.mark.parametrize("case", CLAIMING)
def test_a_bf16_cast_runs_in_eager_close_to_float32(case):
    cls = type(make(case, 0))
    torch.set_num_threads(1)  # the conftest puts the count back
    worst = 0.0
    for seed in range(3):
        head = make(case, seed)
        g = torch.Generator().manual_seed(100 + seed)
        context = torch.randn(2, 5, D, generator=g)
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[0, 3:] = False
        with torch.no_grad():
            ref = head.sample_actions(context, mask, torch.Generator().manual_seed(seed))
            head = head.to(torch.bfloat16)
            out = head.sample_actions(context.bfloat16(), mask, torch.Generator().manual_seed(seed))
        assert out.dtype == torch.bfloat16 and out.shape == ref.shape
        assert bool(torch.isfinite(out).all())
        worst = max(worst, (out.float() - ref).abs().max().item())
        if hasattr(head, "alphas_cumprod"):  # the schedule is arithmetic: it stays float32
            assert head.alphas_cumprod.dtype == torch.float32
            assert float(head.alphas_cumprod[0]) < 1.0  # bf16 would round it to 1.0
    if os.environ.get("VLASTACK_SHOW_BF16"):
        print(f"{case}: max |bf16 - fp32| = {worst:.4f} (atol {cls.bf16_atol})")
    assert worst <= cls.bf16_atol, f"{case}: max |bf16 - fp32| {worst:.4f} > {cls.bf16_atol}"


def test_noise_is_the_same_draw_in_every_dtype_and_times_stay_float32():
    head = make("flow_matching", 0)
    context = torch.randn(3, 5, D)
    z32 = head.initial_noise(context, torch.Generator().manual_seed(7))
    z16 = head.initial_noise(context.bfloat16(), torch.Generator().manual_seed(7))
    assert z32.dtype == torch.float32 and z16.dtype == torch.bfloat16
    assert torch.equal(z16, z32.bfloat16())  # torch's own bf16 randn would differ here (56 values)
    seen = []

    def velocity(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    euler_integrate(velocity, z16, num_steps=10)
    assert all(t.dtype == torch.float32 for t in seen)
    assert float(seen[1][0]) == pytest.approx(0.9, abs=1e-7)  # bf16 would give 0.8984
