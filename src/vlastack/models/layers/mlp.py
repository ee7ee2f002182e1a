"""The blocks' feed-forward MLP and the activations it takes."""

from __future__ import annotations

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.models.layers.inference import fast_inference
from vlastack.models.layers.linear import _ACT_FNS, fast_linear

ACTIVATIONS = tuple(_ACT_FNS)  # the names a block's MLP takes


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation: unknown value {activation!r}; expected one of {list(ACTIVATIONS)}"
        )
    return activation


class MLP(nn.Sequential):
    """Linear → GELU (exact, the default) or ReLU (ACT/DETR's choice) → Linear."""

    def __init__(
        self, dim: int, hidden: int, out: int | None = None, activation: str = "gelu"
    ) -> None:
        act = nn.ReLU() if check_activation(activation) == "relu" else nn.GELU()
        super().__init__(nn.Linear(dim, hidden), act, nn.Linear(hidden, out or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc1, act, fc2 = self[0], self[1], self[2]
        if fast_inference():
            fused = _mlp_activation(self)
            if fused is not None:
                return fast_linear(fc2, fast_linear(fc1, x, fused))
        return fc2(act(fc1(x)))


def _mlp_activation(mlp: nn.Module) -> str | None:
    """The activation of a block's MLP a plan can run: "gelu" (exact) or "relu", else None."""
    if not isinstance(mlp, nn.Sequential) or len(mlp) != 3:
        return None
    act = mlp[1]
    if type(act) is nn.GELU and act.approximate == "none":
        return "gelu"
    if type(act) is nn.ReLU:
        return "relu"
    return None
