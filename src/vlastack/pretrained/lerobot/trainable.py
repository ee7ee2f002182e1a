"""Imported LeRobot ACT / Diffusion Policy networks as models vlastack's training loop trains
(``vlastack train --init-from FOLDER``): ``loss(batch)``, ``sample_actions(batch)``,
``param_groups()`` (the ``TrainablePolicy`` contract of ``training.parts``), plus the batch
normalizer that turns dataset batches into what LeRobot's training sees.

* State-dict keys stay LeRobot's (``model.*`` for ACT, ``diffusion.*`` for Diffusion), so the
  loop's checkpoint ``model.safetensors`` loads into the inference networks with
  ``weights.load_strict`` and ``vlastack export lerobot`` writes it back unchanged in layout.
* ``loss`` is ``losses.act_loss`` / ``losses.diffusion_loss`` (LeRobot 0.6.1's ``forward``):
  dropout, the VAE latent draw, the random crop (``crop_is_random``) and BatchNorm batch
  statistics are on in train mode, as in LeRobot.
* Freeze groups: ACT ``vision`` (the ResNet), ``vae_encoder``, ``encoder`` (input projections,
  positions, transformer encoder), ``decoder`` (decoder, its positions, action head); Diffusion
  ``vision`` (the RGB encoders) and ``unet``. A BatchNorm whose parameters are all frozen stays
  in eval mode while training, so a frozen encoder's running statistics do not move either.
* ``lora_target``: the ``nn.Linear`` layers LoRA may wrap by default (ACT: the feed-forward
  ``linear1``/``linear2`` of every transformer layer; Diffusion: the FiLM ``cond_encoder.1``
  and step-embedding layers). ``nn.MultiheadAttention``'s ``out_proj`` is never one: the
  attention reads its weight directly, so an adapter there would be ignored.
* ``LeRobotBatchNormalizer.normalize``: dataset keys -> the checkpoint's (cameras renamed by
  the feature map), ACT's single observation step squeezed, then LeRobot's normalizer step
  (``normalize.FeatureNormalizer``: MEAN_STD with std + eps, MIN_MAX, ...) on every input and
  on ``action``; ``unnormalize_actions`` is the postprocessor's unnormalizer; ``to_dict`` is
  what the run's ``normalization.json`` holds (both steps' stats, flat, in stored shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vlastack.pretrained.lerobot import losses
from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec
from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec, RgbEncoder
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer

Batch = dict[str, Any]


def _by_prefix(module: nn.Module, groups: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {g: [] for g in groups}
    for name, _ in module.named_parameters():
        for g, prefixes in groups.items():
            if name.startswith(prefixes):
                out[g].append(name)
                break
    return out


def _frozen_norms_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                m.eval()


class ACTTrainable(nn.Module):
    """LeRobot ACT for training; ``self.model`` is the inference ``ACTModel``."""

    policy_type = "act"
    lora_target = r".*\.(linear1|linear2)"

    def __init__(self, network: ACTNetwork, spec: ACTSpec, kl_weight: float = 10.0) -> None:
        super().__init__()
        self.model = network.model
        self.spec = spec
        self.kl_weight = float(kl_weight)
        self.last_terms: dict[str, float] = {}

    def _inputs(
        self, batch: Batch
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        s = self.spec
        return (
            [batch[k] for k in s.image_keys],
            batch[s.state_key] if s.state_key else None,
            batch[s.env_state_key] if s.env_state_key else None,
        )

    def loss(self, batch: Batch, latent_noise: torch.Tensor | None = None) -> torch.Tensor:
        images, state, env = self._inputs(batch)
        out = losses.act_loss(
            self.model,
            images,
            state,
            env,
            batch[self.spec.action_key],
            batch["action_is_pad"],
            self.kl_weight,
            latent_noise,
        )
        self.last_terms = out.terms
        return out.loss

    def sample_actions(self, batch: Batch) -> torch.Tensor:
        """(B, chunk_size, A) normalized, the zero latent (LeRobot's inference)."""
        images, state, env = self._inputs(batch)
        return self.model(images, state, env)

    def param_groups(self) -> dict[str, list[str]]:
        return _by_prefix(
            self,
            {
                "vision": ("model.backbone.",),
                "vae_encoder": ("model.vae_encoder",),
                "encoder": ("model.encoder",),
                "decoder": ("model.decoder", "model.action_head."),
            },
        )

    def train(self, mode: bool = True) -> ACTTrainable:
        super().train(mode)
        _frozen_norms_eval(self)
        return self


class DiffusionTrainable(nn.Module):
    """LeRobot Diffusion Policy for training; ``self.diffusion`` is the inference model."""

    policy_type = "diffusion"
    lora_target = r".*(cond_encoder\.1|diffusion_step_encoder\.[13])"

    def __init__(
        self,
        network: DiffusionNetwork,
        spec: DiffusionSpec,
        *,
        crop_is_random: bool = True,
        do_mask_loss_for_padding: bool = False,
    ) -> None:
        super().__init__()
        self.diffusion = network.diffusion
        self.spec = spec
        self.do_mask_loss_for_padding = bool(do_mask_loss_for_padding)
        for m in self.diffusion.modules():
            if isinstance(m, RgbEncoder):
                m.random_crop = bool(crop_is_random)
        self.last_terms: dict[str, float] = {}

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        s = self.spec
        env = batch[s.env_state_key] if s.env_state_key else None
        return batch[s.state_key], [batch[k] for k in s.image_keys], env

    def loss(
        self,
        batch: Batch,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        state, images, env = self._inputs(batch)
        out = losses.diffusion_loss(
            self.diffusion,
            state,
            images,
            env,
            batch[self.spec.action_key],
            batch["action_is_pad"],
            do_mask_loss_for_padding=self.do_mask_loss_for_padding,
            noise=noise,
            timesteps=timesteps,
        )
        self.last_terms = out.terms
        return out.loss

    def sample_actions(self, batch: Batch) -> torch.Tensor:
        """(B, horizon, A) normalized: the whole DDPM trajectory, which starts at the first
        observation step, as the training action window does."""
        state, images, env = self._inputs(batch)
        cond = self.diffusion.global_condition(state, images, env)
        s = self.spec
        noise = torch.randn(
            (state.shape[0], s.horizon, s.action_dim), device=state.device, dtype=state.dtype
        )
        return self.diffusion.sample(cond, noise)

    def param_groups(self) -> dict[str, list[str]]:
        return _by_prefix(
            self, {"vision": ("diffusion.rgb_encoder.",), "unet": ("diffusion.unet.",)}
        )

    def train(self, mode: bool = True) -> DiffusionTrainable:
        super().train(mode)
        _frozen_norms_eval(self)
        return self


class LeRobotBatchNormalizer:
    """Dataset batches -> normalized, checkpoint-keyed batches (see the module docstring)."""

    def __init__(
        self,
        normalizer: FeatureNormalizer | None,
        unnormalizer: FeatureNormalizer | None,
        key_map: Mapping[str, str],
        squeeze_obs: bool,
        action_key: str = "action",
        stats_source: str = "checkpoint",
    ) -> None:
        self.normalizer = normalizer
        self.unnormalizer = unnormalizer
        self.key_map = dict(key_map)  # checkpoint key -> dataset key
        self.squeeze_obs = squeeze_obs
        self.action_key = action_key
        self.stats_source = stats_source

    def normalize(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        for ckpt_key, data_key in self.key_map.items():
            x = batch[data_key]
            if self.squeeze_obs:
                x = x[:, -1]
            out[ckpt_key] = self.normalizer.normalize(ckpt_key, x) if self.normalizer else x
        if self.action_key in batch:
            a = batch[self.action_key]
            out[self.action_key] = (
                self.normalizer.normalize(self.action_key, a) if self.normalizer else a
            )
        return out

    def unnormalize_actions(self, x: torch.Tensor, key: str = "action") -> torch.Tensor:
        return self.unnormalizer.unnormalize(self.action_key, x) if self.unnormalizer else x

    def to(self, *_: Any, **__: Any) -> LeRobotBatchNormalizer:
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "lerobot",
            "stats_source": self.stats_source,
            "preprocessor": flat_lists(self.normalizer),
            "postprocessor": flat_lists(self.unnormalizer),
        }


def flat_lists(norm: FeatureNormalizer | None) -> dict[str, Any] | None:
    """A normalizer's flat stats as JSON: ``{'<feature>.<stat>': {shape, values}}``."""
    if norm is None:
        return None
    return {
        k: {"shape": list(t.shape), "values": t.reshape(-1).tolist()}
        for k, t in norm.flat_stats().items()
    }


def stats_from_lists(flat: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """``flat_lists`` back to ``{feature: {stat: float32 tensor}}`` (the state-file shapes)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        feature, _, stat = k.rpartition(".")
        t = torch.tensor(v["values"], dtype=torch.float32).reshape(v["shape"])
        out.setdefault(feature, {})[stat] = t
    return out
