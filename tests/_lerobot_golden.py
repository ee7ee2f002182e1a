"""The LeRobot policy fixtures (../shared/fixtures/lerobot_policies/<kind>/): where each lives,
its golden tensors, its recorded tolerance and its raw observations, for the tests of imported
LeRobot policies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

OBS = (0, 1, 2)  # the three golden observations of every fixture


def policy_dir(fixtures_dir: Path, kind: str) -> Path:
    """``lerobot_policies/<kind>`` (holding golden.* and pretrained_model/)."""
    d = fixtures_dir / "lerobot_policies" / kind
    if not (d / "pretrained_model").exists():
        pytest.skip(f"LeRobot {kind} fixture not found at {d}")
    return d


def golden(kind_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(kind_dir / "golden.safetensors"))


def tolerance(kind_dir: Path) -> dict[str, float]:
    """LeRobot's own fresh-process (2 threads) max abs differences per tensor kind."""
    return json.loads((kind_dir / "golden.json").read_text())["tolerance"][
        "fresh_process_reload_2_threads_max_abs_diff"
    ]


def raw_obs(tensors: dict[str, torch.Tensor], i: int) -> dict[str, np.ndarray]:
    """Observation ``i`` as the client sent it (uint8 HWC frames, float32 state)."""
    prefix = f"obs{i}.raw."
    return {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()
