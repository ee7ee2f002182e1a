"""LeRobot's Diffusion Policy network and its DDPM sampler as plain modules, keyed like
LeRobot's ``DiffusionPolicy`` state dict (every key under ``diffusion.``).

Keys mapped (LeRobot 0.6.1 ``policies/diffusion/modeling_diffusion.py``):

* ``diffusion.rgb_encoder.<camera>.`` (one encoder per camera with
  ``use_separate_rgb_encoder_per_camera``, else ``diffusion.rgb_encoder.``): ``backbone.<i>``
  the ResNet as ``Sequential(conv1, bn1, relu, maxpool, layer1..4)`` (``resnet.py``; BatchNorm2d
  with ``num_batches_tracked``, or GroupNorm(C // 16) with ``use_group_norm``), ``pool.nets`` (1x1
  conv to the keypoint maps) and buffer ``pool.pos_grid``, ``out`` (Linear, then ReLU);
* ``diffusion.unet.diffusion_step_encoder.{1,3}`` (sinusoid -> Linear -> Mish -> Linear),
  ``down_modules.<i>.{0,1}`` residual blocks and ``.2`` the stride-2 Conv1d (absent on the last
  level), ``mid_modules.{0,1}``, ``up_modules.<i>.{0,1}`` and ``.2`` the ConvTranspose1d,
  ``final_conv.{0,1}``; a residual block is ``conv1.block.{0 Conv1d, 1 GroupNorm}`` + Mish, FiLM
  ``cond_encoder.1`` (scale and bias from Mish(cond)), ``conv2.block``, ``residual_conv`` (1x1
  Conv1d where the width changes).

Inference (``DiffusionModel.generate_actions``): per camera, the image (B*T, 3, H, W) is
center-cropped to ``crop_shape`` at eval (torchvision rounding: top = round((H - h) / 2)),
run through the backbone, spatial soft-argmax (softmax over the H*W cells of each keypoint map,
expected (x, y) on a [-1, 1] grid), Linear and ReLU. The global condition is
``cat(state, camera features in config order)`` per observation step, flattened over the
``n_obs_steps`` steps; the UNet's FiLM input is ``cat(step embedding, global condition)``.
With ``resize_shape`` set, each image is first resized (torchvision ``Resize``: bilinear,
antialiased) and the crop is derived from ``crop_ratio`` as LeRobot's config does
(``derived_crop``). The sampler is ``schedulers.DiffusionSampler``: diffusers' DDPM or DDIM
schedule as LeRobot configures it (any ``beta_schedule``, ``prediction_type`` epsilon or sample,
``clip_sample`` on or off, ``num_inference_steps`` with leading spacing); a DDPM step with t > 0
takes one Gaussian draw.
The chunk is steps ``n_obs_steps - 1 .. n_obs_steps - 2 + n_action_steps`` of the horizon.

Verified: the fixture checkpoint (``diffusion/pretrained_model``) gives LeRobot's golden chunks
for 3 observations with the recorded start noise and the 99 recorded DDPM step draws
(tests/test_pretrained_lerobot_diffusion.py); every file key is consumed with its shape; the
default full-size config built on the meta device has the keys and shapes of
``diffusion/full_keys.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.act import _one
from vlastack.pretrained.lerobot.folder import read_features
from vlastack.pretrained.lerobot.resnet import BACKBONES, Norm, build_backbone
from vlastack.pretrained.lerobot.schedulers import DiffusionSampler


@dataclass(frozen=True)
class DiffusionSpec:
    """The fields of LeRobot's DiffusionConfig that shape the network and sampler."""

    n_obs_steps: int = 2
    horizon: int = 64
    n_action_steps: int = 32
    vision_backbone: str = "resnet18"
    resize_shape: tuple[int, int] | None = None
    crop_ratio: float = 1.0
    crop_shape: tuple[int, int] | None = None
    use_group_norm: bool = True
    spatial_softmax_num_keypoints: int = 32
    use_separate_rgb_encoder_per_camera: bool = False
    down_dims: tuple[int, ...] = (512, 1024, 2048)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    use_film_scale_modulation: bool = True
    noise_scheduler_type: str = "DDPM"
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    num_inference_steps: int | None = None
    image_keys: tuple[str, ...] = ()
    image_shape: tuple[int, ...] | None = None
    state_key: str = "observation.state"
    state_dim: int = 0
    env_state_key: str | None = None
    env_state_dim: int | None = None
    action_key: str = "action"
    action_dim: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DiffusionSpec:
        derived = {
            "image_keys",
            "image_shape",
            "state_key",
            "state_dim",
            "env_state_key",
            "env_state_dim",
            "action_key",
            "action_dim",
        }
        kw: dict[str, Any] = {
            k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg and k not in derived
        }
        for k in ("resize_shape", "crop_shape", "down_dims"):
            if kw.get(k) is not None:
                kw[k] = tuple(int(v) for v in kw[k])
        kw.update(derived_crop(kw.get("resize_shape"), float(kw.get("crop_ratio", 1.0))) or {})
        inputs = read_features(dict(cfg), "input_features")
        outputs = read_features(dict(cfg), "output_features")
        images = [f for f in inputs if f.type == "VISUAL"]
        state, env, action = _one(inputs, "STATE"), _one(inputs, "ENV"), _one(outputs, "ACTION")
        if state is None or action is None:
            raise ConfigError(
                "config.json needs a STATE input and an ACTION output for Diffusion Policy"
            )
        if len({f.shape for f in images}) > 1:
            raise ConfigError("Diffusion Policy cameras must share one shape")
        spec = cls(
            **kw,
            image_keys=tuple(f.key for f in images),
            image_shape=images[0].shape if images else None,
            state_key=state.key,
            state_dim=state.shape[0],
            env_state_key=env.key if env else None,
            env_state_dim=env.shape[0] if env else None,
            action_key=action.key,
            action_dim=action.shape[0],
        )
        return spec


def derived_crop(
    resize: tuple[int, ...] | None, crop_ratio: float
) -> dict[str, tuple[int, int] | None] | None:
    """LeRobot's ``DiffusionConfig.__post_init__``: with ``resize_shape`` set, ``crop_shape`` is
    ``int(resize * crop_ratio)`` per side when ``crop_ratio < 1``, else no crop (whatever
    config.json says); without it, ``crop_shape`` stands. None when nothing is derived."""
    if not 0 < crop_ratio <= 1.0:
        raise ConfigError(f"config.json crop_ratio {crop_ratio}: must be in (0, 1]")
    if resize is None:
        return None
    if len(resize) != 2 or min(resize) <= 0:
        raise ConfigError(f"config.json resize_shape {list(resize)}: must be two positive ints")
    if crop_ratio < 1.0:
        return {"crop_shape": (int(resize[0] * crop_ratio), int(resize[1] * crop_ratio))}
    return {"crop_shape": None}


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision ``Resize(size)`` on a float tensor: bilinear, antialiased, half-pixel."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


# ---- vision -------------------------------------------------------------------------------
class SpatialSoftmax(nn.Module):
    """Keypoint maps (1x1 conv) -> softmax over cells -> expected (x, y) on a [-1, 1] grid."""

    pos_grid: torch.Tensor

    def __init__(self, channels: int, height: int, width: int, num_kp: int | None) -> None:
        super().__init__()
        self.nets = nn.Conv2d(channels, num_kp, 1) if num_kp is not None else None
        self.out_c = num_kp if num_kp is not None else channels
        self.h, self.w = height, width
        ys, xs = torch.meshgrid(
            torch.linspace(-1.0, 1.0, height, dtype=torch.float64),
            torch.linspace(-1.0, 1.0, width, dtype=torch.float64),
            indexing="ij",
        )
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()
        self.register_buffer("pos_grid", grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nets is not None:
            x = self.nets(x)
        attention = F.softmax(x.reshape(-1, self.h * self.w), dim=-1)
        return (attention @ self.pos_grid).view(-1, self.out_c, 2)


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision ``CenterCrop`` for images at least ``size`` large."""
    h, w = (int(d) for d in x.shape[-2:])  # ints under ONNX tracing too (sizes are fixed)
    th, tw = size
    if th > h or tw > w:
        raise ConfigError(f"crop_shape {size} is larger than the image ({h}, {w})")
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[..., top : top + th, left : left + tw]


def random_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision ``RandomCrop`` (no padding) on a batch: one offset for the whole batch,
    ``top`` then ``left`` each drawn by ``torch.randint`` from the global RNG, as LeRobot's
    training crop (``crop_is_random``) does."""
    h, w = (int(d) for d in x.shape[-2:])
    th, tw = size
    if th > h or tw > w:
        raise ConfigError(f"crop_shape {size} is larger than the image ({h}, {w})")
    if (h, w) == (th, tw):
        return x
    top = int(torch.randint(0, h - th + 1, size=(1,)).item())
    left = int(torch.randint(0, w - tw + 1, size=(1,)).item())
    return x[..., top : top + th, left : left + tw]


def _group_norm(channels: int) -> nn.Module:
    """LeRobot's replacement of each BatchNorm2d with ``use_group_norm``."""
    return nn.GroupNorm(channels // 16, channels)


class RgbEncoder(nn.Module):
    def __init__(self, spec: DiffusionSpec) -> None:
        super().__init__()
        norm: Norm = _group_norm if spec.use_group_norm else nn.BatchNorm2d
        self.crop = spec.crop_shape
        self.resize = spec.resize_shape
        # training only (``trainable``): LeRobot's ``crop_is_random`` crop in train mode
        self.random_crop = False
        self.backbone = build_backbone(spec.vision_backbone, norm=norm).as_sequential()
        assert spec.image_shape is not None
        h, w = spec.crop_shape or spec.resize_shape or spec.image_shape[1:]
        for _ in range(5):  # stem conv, max-pool and three stride-2 stages: ceil halving
            h, w = (h + 1) // 2, (w + 1) // 2
        channels = BACKBONES[spec.vision_backbone].widths[-1]
        k = spec.spatial_softmax_num_keypoints
        self.pool = SpatialSoftmax(channels, h, w, k)
        self.feature_dim = k * 2
        self.out = nn.Linear(k * 2, self.feature_dim)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            x = resize(x, self.resize)
        if self.crop is not None and self.training and self.random_crop:
            x = random_crop(x, self.crop)
        elif self.crop is not None:
            x = center_crop(x, self.crop)  # eval: LeRobot's random crop is for training only
        x = torch.flatten(self.pool(self.backbone(x)), start_dim=1)
        return self.relu(self.out(x))


# ---- the conditional 1-D UNet -----------------------------------------------------------------
class StepEmbedding(nn.Module):
    """sin/cos of ``t * exp(-i * ln(10000) / (half - 1))``, sines first."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        rate = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device) * -rate)
        emb = t.unsqueeze(-1) * freqs.unsqueeze(0)
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class ConvBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish (keys ``block.0``, ``block.1``)."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout), nn.Mish()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResidualBlock(nn.Module):
    """conv1 -> FiLM(cond) -> conv2, plus the (1x1-projected) input."""

    def __init__(self, cin: int, cout: int, cond_dim: int, spec: DiffusionSpec) -> None:
        super().__init__()
        self.film_scale = spec.use_film_scale_modulation
        self.out_channels = cout
        self.conv1 = ConvBlock(cin, cout, spec.kernel_size, spec.n_groups)
        self.cond_encoder = nn.Sequential(
            nn.Mish(), nn.Linear(cond_dim, cout * 2 if self.film_scale else cout)
        )
        self.conv2 = ConvBlock(cout, cout, spec.kernel_size, spec.n_groups)
        self.residual_conv = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        c = self.cond_encoder(cond).unsqueeze(-1)
        if self.film_scale:
            out = c[:, : self.out_channels] * out + c[:, self.out_channels :]
        else:
            out = out + c
        return self.conv2(out) + self.residual_conv(x)


class ConditionalUnet1d(nn.Module):
    def __init__(self, spec: DiffusionSpec, global_cond_dim: int) -> None:
        super().__init__()
        e = spec.diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            StepEmbedding(e), nn.Linear(e, e * 4), nn.Mish(), nn.Linear(e * 4, e)
        )
        cond = e + global_cond_dim
        dims = list(spec.down_dims)
        in_out = [(spec.action_dim, dims[0]), *zip(dims[:-1], dims[1:], strict=True)]
        self.down_modules = nn.ModuleList()
        for i, (cin, cout) in enumerate(in_out):
            last = i >= len(in_out) - 1
            self.down_modules.append(
                nn.ModuleList(
                    [
                        ResidualBlock(cin, cout, cond, spec),
                        ResidualBlock(cout, cout, cond, spec),
                        nn.Conv1d(cout, cout, 3, 2, 1) if not last else nn.Identity(),
                    ]
                )
            )
        self.mid_modules = nn.ModuleList(
            [ResidualBlock(dims[-1], dims[-1], cond, spec) for _ in range(2)]
        )
        self.up_modules = nn.ModuleList()
        for i, (cout, cin) in enumerate(reversed(in_out[1:])):
            # LeRobot compares with len(in_out) - 1 here too, so every up level upsamples
            last = i >= len(in_out) - 1
            self.up_modules.append(
                nn.ModuleList(
                    [
                        ResidualBlock(cin * 2, cout, cond, spec),
                        ResidualBlock(cout, cout, cond, spec),
                        nn.ConvTranspose1d(cout, cout, 4, 2, 1) if not last else nn.Identity(),
                    ]
                )
            )
        self.final_conv = nn.Sequential(
            ConvBlock(dims[0], dims[0], spec.kernel_size), nn.Conv1d(dims[0], spec.action_dim, 1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        """x (B, T, A), t (B,) int64, global_cond (B, G) -> (B, T, A)."""
        x = x.transpose(1, 2)
        feature = torch.cat([self.diffusion_step_encoder(t), global_cond], dim=-1)
        skips = []
        for level in self.down_modules:
            res1, res2, down = level.children()
            x = res2(res1(x, feature), feature)
            skips.append(x)
            x = down(x)
        for mid in self.mid_modules:
            x = mid(x, feature)
        for level in self.up_modules:
            res1, res2, up = level.children()
            x = torch.cat((x, skips.pop()), dim=1)
            x = up(res2(res1(x, feature), feature))
        return self.final_conv(x).transpose(1, 2)


class DiffusionModel(nn.Module):
    """The network under LeRobot's ``DiffusionPolicy.diffusion``."""

    def __init__(self, spec: DiffusionSpec) -> None:
        super().__init__()
        self.spec = spec
        cond = spec.state_dim
        n_cams = len(spec.image_keys)
        if n_cams:
            if spec.use_separate_rgb_encoder_per_camera:
                encoders = [RgbEncoder(spec) for _ in range(n_cams)]
                self.rgb_encoder: nn.Module = nn.ModuleList(encoders)
                cond += encoders[0].feature_dim * n_cams
            else:
                enc = RgbEncoder(spec)
                self.rgb_encoder = enc
                cond += enc.feature_dim * n_cams
        if spec.env_state_dim:
            cond += spec.env_state_dim
        self.unet = ConditionalUnet1d(spec, cond * spec.n_obs_steps)
        self.sampler = DiffusionSampler(spec)

    def global_condition(
        self, state: torch.Tensor, images: list[torch.Tensor], env_state: torch.Tensor | None
    ) -> torch.Tensor:
        """state (B, T, S), images per camera (B, T, 3, H, W) -> (B, T * per-step width)."""
        b, steps = state.shape[:2]
        feats = [state]
        if images:
            if isinstance(self.rgb_encoder, nn.ModuleList):
                per_cam = [
                    enc(img.flatten(0, 1))
                    for enc, img in zip(self.rgb_encoder, images, strict=True)
                ]
            else:
                stacked = torch.stack(images, dim=2).flatten(0, 2)  # (b t n) ...
                out = self.rgb_encoder(stacked).view(b * steps, len(images), -1)
                per_cam = list(out.unbind(1))
            feats.append(torch.cat([f.view(b, steps, -1) for f in per_cam], dim=-1))
        if env_state is not None:
            feats.append(env_state)
        return torch.cat(feats, dim=-1).flatten(start_dim=1)

    def sample(
        self,
        global_cond: torch.Tensor,
        noise: torch.Tensor,
        step_noise: torch.Tensor | None = None,
        generator: torch.Generator | Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """DDPM from ``noise`` (B, horizon, A); step ``i``'s variance draw is ``step_noise[i]``
        when given (the golden test), else ``torch.randn`` from ``generator``, or ``generator()``
        when it is a function (per-client draws: ``diffusion_policy``)."""
        x = noise
        sampler = self.sampler
        for i, t in enumerate(sampler.timesteps):
            t_batch = torch.full(x.shape[:1], t, dtype=torch.long, device=x.device)
            eps = self.unet(x, t_batch, global_cond)
            draw = None
            if t > 0 and sampler.stochastic:
                if step_noise is not None:
                    draw = step_noise[i].to(device=x.device, dtype=x.dtype)
                elif callable(generator):
                    draw = generator()
                else:
                    draw = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = sampler.step(eps, i, x, draw)
        return x

    def chunk(self, trajectory: torch.Tensor) -> torch.Tensor:
        start = self.spec.n_obs_steps - 1
        return trajectory[:, start : start + self.spec.n_action_steps]


class DiffusionNetwork(nn.Module):
    """Holds ``diffusion`` so that the state dict reads ``diffusion.*`` like LeRobot's."""

    def __init__(self, spec: DiffusionSpec) -> None:
        super().__init__()
        self.diffusion = DiffusionModel(spec)
