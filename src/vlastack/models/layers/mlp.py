"""The blocks' feed-forward MLP and the activations it takes."""

from __future__ import annotations

from torch import nn

from vlastack.errors import ConfigError

ACTIVATIONS = ("gelu", "relu")  # the names a block's MLP takes


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


def mlp_activation(mlp: nn.Module) -> str | None:
    """The activation of a block's MLP as a name: "gelu" (exact) or "relu", else None (an
    activation the runners' fused products do not carry)."""
    if not isinstance(mlp, nn.Sequential) or len(mlp) != 3:
        return None
    act = mlp[1]
    if type(act) is nn.GELU and act.approximate == "none":
        return "gelu"
    if type(act) is nn.ReLU:
        return "relu"
    return None
