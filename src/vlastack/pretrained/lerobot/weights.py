"""Loading a LeRobot ``model.safetensors`` into a vlastack module, strictly.

The module is first built on the meta device to list its keys and shapes, which are compared
with the file's header (no tensor read): a key missing from the file, a key the config does not
build, or a shape that differs is a ConfigError naming up to five such keys and saying that the
weights and config.json must come from the same checkpoint. Only then are the tensors read and
loaded with ``load_state_dict(strict=True)``, so every key of the file is consumed (the stats
buffers of a LeRobot < 0.4 file are consumed as stats, ``legacy``). Verified by
the ACT and Diffusion Policy tests (a resized tensor, a dropped key, an extra key, a config
field changed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.legacy import weight_key

M = TypeVar("M", bound=nn.Module)


def check_state_dict(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], where: str
) -> None:
    """Every key of the checkpoint consumed, none missing, shapes equal; else a ConfigError
    naming the first offending keys and what to do."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        parts.append(
            "shape mismatch: "
            + "; ".join(
                f"{k} is {tuple(found[k])} in the file, the config gives {tuple(expected[k])}"
                for k in wrong[:5]
            )
        )
    if missing:
        parts.append(f"missing from the file: {', '.join(missing[:5])}")
    if unexpected:
        parts.append(f"not in the network the config builds: {', '.join(unexpected[:5])}")
    raise ConfigError(
        f"{where} does not fit its config.json ({'; '.join(parts)}). The weights and config.json "
        "must come from the same LeRobot checkpoint: check dim_model, n_heads, dim_feedforward, "
        "the layer counts, vision_backbone, chunk_size and the feature shapes in config.json"
    )


def load_strict(build: Callable[[], M], file: Path, device: str | torch.device = "cpu") -> M:
    """``build()`` loaded from the safetensors ``file`` after ``check_state_dict``; eval mode."""
    from safetensors import safe_open

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    with safe_open(str(file), framework="pt") as f:
        # file key -> module key: LeRobot < 0.4 stats buffers dropped (read as the processors'
        # stats instead), torch.compile's '._orig_mod' removed (legacy.weight_key)
        names = {k: m for k in f.keys() if (m := weight_key(k)) is not None}  # noqa: SIM118
        found = {m: tuple(f.get_slice(k).get_shape()) for k, m in names.items()}
        check_state_dict(shapes, found, str(file))
        weights = {m: f.get_tensor(k) for k, m in names.items()}
    net = build()
    net.load_state_dict(weights, strict=True)
    return net.to(device).eval()
