"""Tiny VLA checkpoints for the export tests: small CNN, no language model, one small head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

HEAD_KWARGS: dict[str, dict[str, Any]] = {
    "flow_matching": {"width": 32, "depth": 2, "num_heads": 2, "num_steps": 4},
    "flower": {"width": 32, "depth": 2, "num_heads": 2, "num_steps": 4},
    "diffusion": {"width": 32, "depth": 2, "num_heads": 2, "num_inference_steps": 4},
    "l1": {"width": 32, "depth": 2, "num_heads": 2, "resnet_blocks": 1},
    "act": {"width": 32, "encoder_depth": 1, "decoder_depth": 2, "num_heads": 2, "latent_dim": 8},
}


def tiny_config(head: str = "flow_matching", **overrides: Any):
    from vlastack.models.vla import VLAConfig

    kw: dict[str, Any] = dict(
        action_dim=4,
        action_horizon=4,
        obs_horizon=1,
        state_dim=4,
        cameras=["front", "wrist"],
        image_size=(16, 16),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head=head,
        head_kwargs=dict(HEAD_KWARGS.get(head, {})),
    )
    kw.update(overrides)
    return VLAConfig(**kw)


def tiny_stats(dim: int = 4) -> dict[str, dict[str, list[float]]]:
    rng = np.random.default_rng(0)
    return {
        key: {
            "mean": rng.normal(0, 1, dim).tolist(),
            "std": rng.uniform(0.5, 2.0, dim).tolist(),
            "min": [-3.0] * dim,
            "max": [3.0] * dim,
        }
        for key in ("observation.state", "action")
    }


def write_tiny_checkpoint(
    root: Path, head: str = "flow_matching", stats: dict | None = None, seed: int = 0, **overrides
) -> Path:
    """A checkpoint folder for a randomly initialised tiny VLA (save_checkpoint + Normalizer)."""
    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import build_vla
    from vlastack.training.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    cfg = tiny_config(head, **overrides)
    model = build_vla(cfg)
    norm = Normalizer(
        stats or tiny_stats(cfg.action_dim), {"observation.state": "mean_std", "action": "mean_std"}
    )
    return save_checkpoint(
        root,
        1,
        weights=model.state_dict(),
        config={"model": cfg.to_dict(), "train": {"val_fraction": 0.34, "seed": 0}},
        normalization=norm.to_dict(),
        embodiment=None,
    )


def tiny_obs(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "observation.images.front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "observation.state": rng.normal(0, 1, 4).astype(np.float32),
        "task": "push the block",
    }
