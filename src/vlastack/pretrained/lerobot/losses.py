"""LeRobot 0.6.1's training losses for ACT and Diffusion Policy, on vlastack's modules.

Both take tensors already normalized as LeRobot's preprocessor leaves them and return the
scalar ``forward`` returns in LeRobot (``ACTPolicy.forward`` / ``DiffusionPolicy.forward``).

ACT (``modeling_act.py``: ``ACT.forward`` in train mode with ``use_vae``, then
``ACTPolicy.forward``): the VAE encoder reads ``[cls, state?, actions]`` with the fixed
sinusoid positions and a key padding mask (cls and state never padded, then
``action_is_pad``); its cls output gives ``mu`` and ``log_sigma_x2`` (= 2 log sigma); the latent
is ``mu + exp(log_sigma_x2 / 2) * eps`` with ``eps ~ N(0, 1)`` (``randn_like``, or
``latent_noise`` given); the decoder predicts the chunk from it. Loss: L1 over non-padded
action entries (sum / (valid steps * A), the count clamped to >= 1) plus
``kl_weight * mean_B(sum_L(-0.5 * (1 + log_sigma_x2 - mu^2 - exp(log_sigma_x2))))``. Without
the VAE (or in eval mode) the latent is zero and the loss is the L1 term alone.

Diffusion (``DiffusionModel.compute_loss``): global condition as at inference (the RGB encoder
crops at random in train mode when ``crop_is_random``), ``eps = randn(actions.shape)`` then
``t = randint(0, num_train_timesteps, (B,))`` (in that order, from the global RNG, or given),
diffusers' ``add_noise``: ``sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps``; the UNet predicts
``eps`` (``prediction_type`` epsilon) or ``x0`` (sample); MSE per entry, then the mean, or with
``do_mask_loss_for_padding`` the sum over non-padded steps / (valid steps * A).

Verified against LeRobot 0.6.1's own ``forward`` on the fixture checkpoints, with the same batch
and the same noise: loss and gradients (tests/test_pretrained_lerobot_finetune.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlastack.pretrained.lerobot.act import ACTModel
from vlastack.pretrained.lerobot.diffusion import DiffusionModel


@dataclass
class LossParts:
    """The loss and its named terms (detached floats, for logging)."""

    loss: torch.Tensor
    terms: dict[str, float]


def masked_mean(err: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """LeRobot's padding mask: ``sum(err * valid) / clamp_min(valid steps * A, 1)``."""
    valid = ~is_pad.unsqueeze(-1)
    num_valid = valid.sum() * err.shape[-1]
    return (err * valid).sum() / num_valid.clamp_min(1)


def act_latent(
    model: ACTModel,
    state: torch.Tensor | None,
    actions: torch.Tensor,
    action_is_pad: torch.Tensor,
    latent_noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latent sample, mu, log_sigma_x2), each (B, latent_dim), from the VAE encoder."""
    spec = model.spec
    b = actions.shape[0]
    cls = model.vae_encoder_cls_embed.weight.unsqueeze(0).expand(b, -1, -1)  # (B, 1, D)
    tokens = [cls]
    if spec.state_dim:
        assert state is not None
        tokens.append(model.vae_encoder_robot_state_input_proj(state).unsqueeze(1))
    tokens.append(model.vae_encoder_action_input_proj(actions))
    x = torch.cat(tokens, dim=1)
    pos_enc: torch.Tensor = model.get_buffer("vae_encoder_pos_enc")
    pos = pos_enc.clone().detach()  # (1, S, D)
    head = torch.zeros((b, 2 if spec.state_dim else 1), dtype=torch.bool, device=x.device)
    mask = torch.cat([head, action_is_pad.to(torch.bool)], dim=1)
    cls_out = model.vae_encoder(x.permute(1, 0, 2), pos.permute(1, 0, 2), key_padding_mask=mask)[0]
    params = model.vae_encoder_latent_output_proj(cls_out)
    mu, log_sigma_x2 = params[:, : spec.latent_dim], params[:, spec.latent_dim :]
    eps = torch.randn_like(mu) if latent_noise is None else latent_noise.to(mu)
    return mu + log_sigma_x2.div(2).exp() * eps, mu, log_sigma_x2


def act_loss(
    model: ACTModel,
    images: list[torch.Tensor],
    state: torch.Tensor | None,
    env_state: torch.Tensor | None,
    actions: torch.Tensor,
    action_is_pad: torch.Tensor,
    kl_weight: float,
    latent_noise: torch.Tensor | None = None,
) -> LossParts:
    """ACTPolicy.forward's loss: inputs (B, ...) normalized, actions (B, chunk_size, A)."""
    mu = log_sigma_x2 = latent = None
    if model.spec.use_vae and model.training:
        latent, mu, log_sigma_x2 = act_latent(model, state, actions, action_is_pad, latent_noise)
    pred = model(images, state, env_state, latent=latent)
    l1 = masked_mean(F.l1_loss(actions, pred, reduction="none"), action_is_pad)
    terms = {"l1_loss": float(l1.detach())}
    if mu is None or log_sigma_x2 is None:
        return LossParts(l1, terms)
    kld = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1).mean()
    terms["kld_loss"] = float(kld.detach())
    return LossParts(l1 + kld * kl_weight, terms)


def add_noise(
    alphas_cumprod: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """diffusers ``DDPMScheduler.add_noise``."""
    abar = alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t.to(x0.device)]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return (abar**0.5).reshape(shape) * x0 + ((1 - abar) ** 0.5).reshape(shape) * eps


def diffusion_loss(
    model: DiffusionModel,
    state: torch.Tensor,
    images: list[torch.Tensor],
    env_state: torch.Tensor | None,
    actions: torch.Tensor,
    action_is_pad: torch.Tensor,
    *,
    do_mask_loss_for_padding: bool = False,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
) -> LossParts:
    """DiffusionModel.compute_loss: state (B, T, S), images per camera (B, T, 3, H, W),
    actions (B, horizon, A), all normalized; ``noise``/``timesteps`` replace the draws."""
    spec = model.spec
    cond = model.global_condition(state, images, env_state)
    eps = torch.randn(actions.shape, device=actions.device) if noise is None else noise
    eps = eps.to(actions)
    if timesteps is None:
        n = spec.num_train_timesteps
        timesteps = torch.randint(0, n, (actions.shape[0],), device=actions.device).long()
    t = timesteps.to(actions.device).long()
    noisy = add_noise(model.sampler.alphas_cumprod, actions, eps, t)
    pred = model.unet(noisy, t, cond)
    target = eps if spec.prediction_type == "epsilon" else actions
    err = F.mse_loss(pred, target, reduction="none")
    loss = masked_mean(err, action_is_pad) if do_mask_loss_for_padding else err.mean()
    return LossParts(loss, {"mse_loss": float(loss.detach())})
