"""Noise schedules and DDPM/DDIM steps: closed forms and parity with diffusers' schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.functional.diffusion_sampling import (
    ddim_step,
    ddpm_step,
    inference_timesteps,
    q_sample,
    sample_loop,
)
from vlastack.functional.noise_schedules import (
    cosine_alpha_bar,
    make_alphas_cumprod,
    make_betas,
)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "cosine"])
def test_schedule_endpoints_and_monotone(schedule):
    betas = make_betas(schedule, 100)
    abar = make_alphas_cumprod(schedule, 100)
    assert betas.shape == abar.shape == (100,)
    assert bool((betas > 0).all()) and bool((betas <= 0.999).all())
    assert bool((abar[1:] < abar[:-1]).all())  # strictly more noise at every step
    assert abar[0] > 0.99  # nearly clean at t=0
    if "cos" in schedule:
        assert abar[-1] < 1e-4  # the cosine schedules end at pure noise (ᾱ(1) = 0, β capped)
    else:  # linear schedules at T=100 stop short of pure noise: ᾱ_T = Π(1 − β_t)
        ref = np.prod(1 - betas.double().numpy())
        assert float(abar[-1]) == pytest.approx(ref, rel=1e-4) and ref < 0.6


def test_linear_endpoints_exact():
    betas = make_betas("linear", 100, beta_start=1e-4, beta_end=0.02)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)


def test_cosine_alpha_bar_closed_form():
    # ᾱ(t) = cos²(((t/T)+s)/(1+s)·π/2)/cos²(s/(1+s)·π/2); for T=100 the product of (1−β) must match it
    T, s = 100, 0.008
    abar = make_alphas_cumprod("cosine", T).double()
    t = torch.arange(1, T + 1, dtype=torch.float64)
    f = (
        torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
        / math.cos(s / (1 + s) * math.pi / 2) ** 2
    )
    # the last β is capped at 0.999, so compare all but the final step
    torch.testing.assert_close(abar[:-1], f[:-1], rtol=1e-5, atol=1e-6)
    assert cosine_alpha_bar(torch.tensor(0.0)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_parity_with_diffusers_alphas_cumprod(schedule):
    diffusers = pytest.importorskip("diffusers", reason="diffusers (extra 'hf') not installed")
    sch = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule=schedule)
    torch.testing.assert_close(
        make_alphas_cumprod(schedule, 100), sch.alphas_cumprod, rtol=1e-6, atol=1e-7
    )


def test_unknown_schedule_names_field():
    with pytest.raises(ConfigError, match="beta_schedule"):
        make_betas("sigmoidish", 10)


def test_inference_timesteps_leading():
    assert inference_timesteps(100, 10) == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert inference_timesteps(100, 100)[:3] == [99, 98, 97]


def test_ddim_perfect_eps_reconstructs_x0():
    """With ε̂ = the exact noise direction of x_t w.r.t. x0, deterministic DDIM lands on x0."""
    g = torch.Generator().manual_seed(0)
    abar = make_alphas_cumprod("squaredcos_cap_v2", 100)
    x0 = torch.rand(4, 16, 3, generator=g) * 2 - 1
    noise = torch.randn(4, 16, 3, generator=g)
    xT = q_sample(x0, noise, torch.full((4,), 90), abar)

    def perfect_eps(x, t):
        return (x - abar[t].sqrt() * x0) / (1 - abar[t]).sqrt()

    out = sample_loop(perfect_eps, xT, abar, 10, "ddim", clip_sample=False)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_ddim_and_ddpm_steps_match_diffusers():
    diffusers = pytest.importorskip("diffusers", reason="diffusers (extra 'hf') not installed")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 3, generator=g)
    eps = torch.randn(2, 8, 3, generator=g)
    ddim = diffusers.DDIMScheduler(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True
    )
    ddim.set_timesteps(10)
    abar = make_alphas_cumprod("squaredcos_cap_v2", 100)
    for t in (90, 40, 0):
        ref = ddim.step(eps, t, x).prev_sample
        torch.testing.assert_close(
            ddim_step(x, eps, t, t - 10, abar, clip_sample=True), ref, atol=1e-5, rtol=1e-5
        )
    ddpm = diffusers.DDPMScheduler(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True
    )
    ddpm.set_timesteps(100)
    for t in (99, 50, 1, 0):
        ref = ddpm.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        ours = ddpm_step(x, eps, t, t - 1, abar, True, torch.Generator().manual_seed(7))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_q_sample_endpoints():
    abar = torch.tensor([1.0, 0.0])
    x0, n = torch.ones(1, 2, 2), torch.full((1, 2, 2), 3.0)
    assert torch.equal(q_sample(x0, n, torch.tensor([0]), abar), x0)
    assert torch.equal(q_sample(x0, n, torch.tensor([1]), abar), n)


def test_noise_from_a_cpu_generator_lands_on_the_model_device():
    # A Policy keeps one CPU generator on every device; samples must not depend on where the
    # model runs ("meta" stands in for a GPU here: any device other than the generator's).
    from vlastack.functional.noise import randn

    a = randn((2, 4, 3), torch.Generator().manual_seed(7), "cpu")
    b = torch.randn((2, 4, 3), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    m = randn((2, 4, 3), torch.Generator().manual_seed(7), "meta")
    assert m.device.type == "meta" and m.shape == (2, 4, 3)
    assert randn((5,), None, "meta").device.type == "meta"
