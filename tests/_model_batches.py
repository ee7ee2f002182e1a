"""Random normalized batches shaped like ARCHITECTURE.md's training batch, for model tests."""

from __future__ import annotations

import torch

TASKS = ["pick up the red cup", "open the top drawer", "push the block left", "close the gripper"]


def make_batch(cfg, B: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.image_size
    b: dict = {
        f"observation.images.{c}": torch.rand(B, cfg.obs_horizon, 3, H, W, generator=g)
        for c in cfg.cameras
    }
    if cfg.state_dim:
        b["observation.state"] = torch.randn(B, cfg.obs_horizon, cfg.state_dim, generator=g)
    b["action"] = torch.rand(B, cfg.action_horizon, cfg.action_dim, generator=g) * 2 - 1
    b["action_is_pad"] = torch.zeros(B, cfg.action_horizon, dtype=torch.bool)
    b["task"] = [TASKS[i % len(TASKS)] for i in range(B)]
    if getattr(cfg, "subgoal", None) or (getattr(cfg, "world_model", None) or {}).get("weight"):
        for c in cfg.cameras:  # the frame t+k the foresight losses predict (models/foresight.py)
            b[f"future.images.{c}"] = torch.rand(B, 3, H, W, generator=g)
    return b
