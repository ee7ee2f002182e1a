"""A small convolutional encoder trained from scratch (GroupNorm, optional spatial softmax).

Follows the from-scratch ResNet of Diffusion Policy (Chi et al. 2023: GroupNorm instead of
BatchNorm, spatial-softmax keypoints) at a CPU-friendly size; the token output suits transformer
policies (Octo's shallow CNN stem). FiLM after every block conditions it on language (RT-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.models.common import FiLM
from vlastack.models.vision.base import VisionEncoder


@dataclass
class SmallCNNConfig:
    width: int = 16
    num_blocks: int = 3
    output: Literal["tokens", "spatial_softmax"] = "tokens"
    out_dim: int = 64
    num_keypoints: int = 32
    num_groups: int = 8


def _gn(channels: int, num_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(num_groups, channels), channels)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, num_groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.norm1 = _gn(cout, num_groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _gn(cout, num_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(h + self.norm2(self.conv2(h)))


class SpatialSoftmax(nn.Module):
    """Keypoints = expected (x, y) in [-1, 1] of a softmax over each feature map (Levine et al. 2016)."""

    def __init__(self, channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.to_maps = nn.Conv2d(channels, num_keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.to_maps(x)  # (M, K, h, w)
        M, K, h, w = maps.shape
        attn = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1)  # (M, K, h*w)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)  # (h*w, 2)
        return attn @ coords  # (M, K, 2)


class SmallCNN(VisionEncoder):
    """From-scratch GroupNorm CNN: tokens (M, h*w, D) or one spatial-softmax token (M, 1, D)."""

    def __init__(
        self,
        width: int = 16,
        num_blocks: int = 3,
        output: str = "tokens",
        out_dim: int = 64,
        num_keypoints: int = 32,
        num_groups: int = 8,
        film_dim: int = 0,
    ) -> None:
        super().__init__()
        if output not in ("tokens", "spatial_softmax"):
            raise ConfigError(
                f"small_cnn output must be 'tokens' or 'spatial_softmax', got '{output}'"
            )
        self.output = output
        self.out_dim = out_dim
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            _gn(width, num_groups),
            nn.ReLU(),
        )
        chans = [width * 2**i for i in range(num_blocks + 1)]
        self.blocks = nn.ModuleList(
            _Block(chans[i], chans[i + 1], num_groups) for i in range(num_blocks)
        )
        self.films = nn.ModuleList(
            FiLM(film_dim, chans[i + 1]) for i in range(num_blocks) if film_dim > 0
        )
        last = chans[-1]
        if output == "tokens":
            self.head: nn.Module = nn.Conv2d(last, out_dim, 1)
        else:
            self.keypoints = SpatialSoftmax(last, num_keypoints)
            self.head = nn.Linear(2 * num_keypoints, out_dim)

    def encode(self, images: torch.Tensor, film_cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(images)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.films) and film_cond is not None:
                x = self.films[i](x, film_cond)
        if self.output == "tokens":
            return self.head(x).flatten(2).transpose(1, 2)  # (M, h*w, D)
        return self.head(self.keypoints(x).flatten(1)).unsqueeze(1)  # (M, 1, D)


def build(cfg: SmallCNNConfig, film_dim: int = 0) -> SmallCNN:
    return SmallCNN(
        cfg.width,
        cfg.num_blocks,
        cfg.output,
        cfg.out_dim,
        cfg.num_keypoints,
        cfg.num_groups,
        film_dim,
    )
