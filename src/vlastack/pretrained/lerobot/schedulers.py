"""The noise schedulers of LeRobot's Diffusion Policy, built on diffusers' own schedulers as
LeRobot 0.6.1 builds them (``modeling_diffusion._make_noise_scheduler``): ``DDPMScheduler`` or
``DDIMScheduler`` with ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``,
``clip_sample``, ``clip_sample_range`` and ``prediction_type`` from config.json, every other
argument at diffusers' default (``fixed_small`` variance, ``leading`` timestep spacing,
``steps_offset`` 0, DDIM ``set_alpha_to_one``), then ``set_timesteps(num_inference_steps or
num_train_timesteps)``.

The schedule (betas, ``alphas_cumprod``, the timesteps) is diffusers'. DDIM steps are diffusers'
``DDIMScheduler.step`` (LeRobot calls it with ``eta`` 0: deterministic, no draw). The DDPM step
is written out here because its variance draw must be injectable (the golden tests feed
LeRobot's recorded draws; diffusers' ``DDPMScheduler.step`` draws inside): it is diffusers'
``DDPMScheduler.step`` for ``fixed_small`` variance, term for term on float32 0-d tensors in
diffusers' order, so the samples agree to rounding (bit-exactly on the fixture).

Verified against LeRobot 0.6.1 on variants of the diffusion fixture (DDIM, ``sample``
prediction, linear / scaled_linear betas, ``clip_sample`` off, fewer inference steps):
tests/test_pretrained_lerobot_diffusion_options.py.
"""

from __future__ import annotations

from typing import Any

import torch

from vlastack.errors import ConfigError

SCHEDULERS = ("DDPM", "DDIM")
PREDICTIONS = ("epsilon", "sample")


def _diffusers_scheduler(spec: Any) -> Any:
    from diffusers import DDIMScheduler, DDPMScheduler  # heavy import: only when built

    if spec.noise_scheduler_type not in SCHEDULERS:
        raise ConfigError(
            f"config.json noise_scheduler_type {spec.noise_scheduler_type!r}: LeRobot's Diffusion "
            f"Policy supports {list(SCHEDULERS)}; set one of them"
        )
    if spec.prediction_type not in PREDICTIONS:
        raise ConfigError(
            f"config.json prediction_type {spec.prediction_type!r}: LeRobot's Diffusion Policy "
            f"supports {list(PREDICTIONS)}; set one of them"
        )
    cls = DDPMScheduler if spec.noise_scheduler_type == "DDPM" else DDIMScheduler
    try:
        return cls(
            num_train_timesteps=spec.num_train_timesteps,
            beta_start=spec.beta_start,
            beta_end=spec.beta_end,
            beta_schedule=spec.beta_schedule,
            clip_sample=spec.clip_sample,
            clip_sample_range=spec.clip_sample_range,
            prediction_type=spec.prediction_type,
        )
    except NotImplementedError as e:
        raise ConfigError(
            f"config.json beta_schedule {spec.beta_schedule!r} is not one diffusers' "
            f"{cls.__name__} implements ({e}); use linear, scaled_linear or squaredcos_cap_v2"
        ) from None


class DiffusionSampler:
    """One reverse step at a time over ``timesteps`` (``step(model_output, index, sample,
    noise)``); ``stochastic`` says whether a step with t > 0 takes a Gaussian draw (DDPM)."""

    def __init__(self, spec: Any) -> None:
        self.scheduler = _diffusers_scheduler(spec)
        self.kind = spec.noise_scheduler_type
        self.prediction = spec.prediction_type
        self.num_train = spec.num_train_timesteps
        self.steps = spec.num_inference_steps or spec.num_train_timesteps
        if not 0 < self.steps <= self.num_train:
            raise ConfigError(
                f"config.json num_inference_steps {spec.num_inference_steps}: must be between 1 "
                f"and num_train_timesteps ({self.num_train})"
            )
        self.scheduler.set_timesteps(self.steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]
        self.clip = spec.clip_sample_range if spec.clip_sample else None
        self.alphas_cumprod = self.scheduler.alphas_cumprod
        self.one = torch.tensor(1.0)
        self.stochastic = self.kind == "DDPM"

    def step(
        self,
        model_output: torch.Tensor,
        index: int,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        t = self.timesteps[index]
        if not self.stochastic:
            return self.scheduler.step(model_output, t, sample).prev_sample
        prev_t = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else -1
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        b_t = 1 - a_t
        b_prev = 1 - a_prev
        cur_alpha = a_t / a_prev
        cur_beta = 1 - cur_alpha
        if self.prediction == "epsilon":
            x0 = (sample - b_t ** (0.5) * model_output) / a_t ** (0.5)
        else:
            x0 = model_output
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        x0_coeff = (a_prev ** (0.5) * cur_beta) / b_t
        sample_coeff = cur_alpha ** (0.5) * b_prev / b_t
        prev = x0_coeff * x0 + sample_coeff * sample
        if t > 0:
            assert noise is not None
            variance = torch.clamp((1 - a_prev) / (1 - a_t) * cur_beta, min=1e-20)
            prev = prev + (variance**0.5) * noise
        return prev
