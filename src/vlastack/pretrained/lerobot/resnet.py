"""The ResNet image backbone of LeRobot's ACT and Diffusion Policy, with torchvision's
state-dict layout and without torchvision.

LeRobot builds ``torchvision.models.<vision_backbone>(norm_layer=FrozenBatchNorm2d)`` and keeps
the modules up to ``layer4`` (``IntermediateLayerGetter``, so ``avgpool``/``fc`` are dropped).
This file builds the same network for the BasicBlock ResNets: ``conv1`` (7x7, stride 2, pad 3,
no bias), ``bn1``, ReLU, max-pool (3, stride 2, pad 1), then ``layer1..layer4`` with strides
1/2/2/2, each block ``conv1 3x3 -> bn1 -> relu -> conv2 3x3 -> bn2 (+ downsample) -> relu`` and
``downsample = (1x1 conv, bn)`` where the stride or width changes. The keys are therefore
``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var}``,
``layer<i>.<j>.{conv1,bn1,conv2,bn2}.*``, ``layer<i>.0.downsample.{0,1}.*``.

Frozen batch norm (torchvision ``FrozenBatchNorm2d``, eps 1e-5): the four tensors are buffers,
``scale = weight * rsqrt(running_var + eps)``, ``y = x * scale + (bias - running_mean *
scale)``; computed in that order so that the outputs equal torchvision's.

Variants (``BACKBONES``): ``resnet18`` (widths 64/128/256/512, blocks 2/2/2/2), ``resnet34``
(3/4/6/3), and ``resnet18_width8`` (widths 8/16/32/64), the reduced ResNet-18 the LeRobot
fixtures register under that name. torchvision's BasicBlock has no dilation, so LeRobot's
``replace_final_stride_with_dilation`` fails there for these backbones; here too (a clear
ConfigError). Verified via the ACT golden chunks (every backbone tensor is perturbed in the
fixture, so a wrong key, order or eps changes the actions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vlastack.errors import ConfigError


@dataclass(frozen=True)
class ResNetShape:
    widths: tuple[int, int, int, int]
    blocks: tuple[int, int, int, int]
    stem_width: int


BACKBONES: dict[str, ResNetShape] = {
    "resnet18": ResNetShape((64, 128, 256, 512), (2, 2, 2, 2), 64),
    "resnet34": ResNetShape((64, 128, 256, 512), (3, 4, 6, 3), 64),
    "resnet18_width8": ResNetShape((8, 16, 32, 64), (2, 2, 2, 2), 8),
}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (all four are buffers)."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        return x * scale + (b - rm * scale)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


Norm = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: Norm = FrozenBatchNorm2d) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = norm(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetTrunk(nn.Module):
    """ResNet up to ``layer4``: (B, 3, H, W) -> (B, widths[-1], H/32, W/32)."""

    def __init__(self, shape: ResNetShape, norm: Norm = FrozenBatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, shape.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(shape.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = shape.stem_width
        stages = []
        for i, (width, n) in enumerate(zip(shape.widths, shape.blocks, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(cin, width, stride, norm)]
            blocks += [BasicBlock(width, width, 1, norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = shape.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def as_sequential(self) -> nn.Sequential:
        """The same modules as ``nn.Sequential(conv1, bn1, relu, maxpool, layer1..4)``: the
        layout (keys ``0.*``, ``1.*``, ``4.<j>.*``..``7.<j>.*``) of LeRobot's Diffusion Policy,
        which keeps ``list(resnet.children())[:-2]``."""
        return nn.Sequential(
            self.conv1,
            self.bn1,
            self.relu,
            self.maxpool,
            self.layer1,
            self.layer2,
            self.layer3,
            self.layer4,
        )


def build_backbone(
    name: str, *, dilate_last: bool = False, norm: Norm = FrozenBatchNorm2d
) -> ResNetTrunk:
    """The trunk named by LeRobot's ``vision_backbone`` (``norm``: ACT's frozen batch norm by
    default; Diffusion Policy uses ``nn.BatchNorm2d`` or ``GroupNorm``)."""
    shape = BACKBONES.get(name)
    if shape is None:
        raise ConfigError(
            f"config.json vision_backbone {name!r} is not supported (supported: "
            f"{', '.join(BACKBONES)}); add its widths and block counts to "
            "vlastack.pretrained.lerobot.resnet.BACKBONES"
        )
    if dilate_last:
        raise ConfigError(
            f"config.json replace_final_stride_with_dilation is true, but {name} uses BasicBlocks, "
            "which have no dilation (torchvision raises for it too); set it to false"
        )
    return ResNetTrunk(shape, norm)
