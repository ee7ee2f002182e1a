"""A tiny policy and an in-memory episodic dataset for the training tests (not a test file).

The policy follows the VLA contract the loop relies on: ``loss(batch) -> (B,)`` and
``sample_actions(batch) -> (B, H, A)``, plus ``param_groups()`` naming 'state', 'language'
and 'head'. Its loss draws a little noise so that resume tests exercise RNG restoration.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vlastack.data.normalization import Normalizer
from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.training.parts import TrainingParts

TASKS = ["push the red block", "open the drawer", "close the drawer"]


def task_code(task: str) -> int:
    return sum(map(ord, task)) % 7 + 1 if task else 0


class ToyPolicy(nn.Module):
    def __init__(
        self,
        state_dim: int = 3,
        action_dim: int = 2,
        action_horizon: int = 4,
        width: int = 32,
        use_language: bool = True,
        loss_noise: float = 0.01,
        nan_after: int | None = None,
    ) -> None:
        super().__init__()
        self.action_dim, self.action_horizon = action_dim, action_horizon
        self.use_language, self.loss_noise = use_language, loss_noise
        self.nan_after = nan_after
        self.calls = 0
        self.state_enc = nn.Linear(state_dim, width)
        self.lang = nn.Embedding(8, width)
        self.head = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.Linear(width, action_horizon * action_dim)
        )

    def param_groups(self) -> dict[str, Any]:
        return {"state": self.state_enc, "language": self.lang, "head": self.head}

    def _pred(self, batch: dict[str, Any]) -> torch.Tensor:
        h = self.state_enc(batch["observation.state"][:, -1])
        if self.use_language:
            codes = torch.tensor([task_code(t) for t in batch["task"]], device=h.device)
            h = h + self.lang(codes)
        return self.head(h).view(-1, self.action_horizon, self.action_dim)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        self.calls += 1
        pred = self._pred(batch)
        target = batch["action"]
        if self.loss_noise:
            target = target + self.loss_noise * torch.randn_like(target)
        err = (pred - target).square().mean(-1)  # (B, H)
        w = (~batch["action_is_pad"]).float()
        out = (err * w).sum(-1) / w.sum(-1).clamp_min(1)
        if self.nan_after is not None and self.calls > self.nan_after:
            out = out * float("nan")
        return out

    def sample_actions(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._pred(batch)


class ToyEpisodes(Dataset):
    """Windows over synthetic episodes: action = f(state) + a task-dependent offset."""

    def __init__(
        self,
        episodes: list[int],
        length: int = 20,
        state_dim: int = 3,
        action_dim: int = 2,
        action_horizon: int = 4,
    ) -> None:
        self.items: list[dict[str, Any]] = []
        for e in episodes:
            task = TASKS[e % len(TASKS)]
            rng = np.random.default_rng(e)
            phase = rng.uniform(0, 2 * math.pi, size=state_dim)
            t = np.arange(length)[:, None]
            state = np.sin(0.3 * t + phase).astype(np.float32) * 2 + 5
            act = np.concatenate([state[:, :1] * 3, state[:, 1:2] - 1], axis=1)[:, :action_dim]
            act = act + 0.5 * task_code(task)
            for f in range(length):
                idx = np.arange(f, f + action_horizon)
                pad = idx >= length
                chunk = act[np.minimum(idx, length - 1)]
                self.items.append(
                    {
                        "observation.state": torch.from_numpy(state[f : f + 1].copy()),
                        "observation.state_is_pad": torch.zeros(1, dtype=torch.bool),
                        "action": torch.from_numpy(chunk.astype(np.float32)),
                        "action_is_pad": torch.from_numpy(pad),
                        "task": task,
                        "episode_index": e,
                        "frame_index": f,
                        "index": e * length + f,
                    }
                )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def stats(self) -> dict[str, dict[str, list[float]]]:
        st = torch.stack([it["observation.state"][0] for it in self.items])
        ac = torch.stack([it["action"][0] for it in self.items])
        return {
            k: {
                "mean": v.mean(0).tolist(),
                "std": v.std(0).tolist(),
                "min": v.min(0).values.tolist(),
                "max": v.max(0).values.tolist(),
            }
            for k, v in (("observation.state", st), ("action", ac))
        }


def toy_embodiment(state_dim: int = 3, action_dim: int = 2) -> EmbodimentSpec:
    return EmbodimentSpec(
        robot_type="toy",
        cameras=[CameraSpec("front", 8, 8)],
        state=VectorSpec([f"s{i}" for i in range(state_dim)]),
        action=VectorSpec([f"a{i}" for i in range(action_dim)]),
        control_hz=10.0,
    )


def toy_parts(
    num_episodes: int = 6, val_episodes: int = 2, length: int = 20, **model_kwargs: Any
) -> TrainingParts:
    train_eps = list(range(num_episodes - val_episodes))
    val_eps = list(range(num_episodes - val_episodes, num_episodes))
    train_ds = ToyEpisodes(train_eps, length)
    val_ds = ToyEpisodes(val_eps, length) if val_eps else None
    normalizer = Normalizer(
        train_ds.stats(), {"observation.state": "mean_std", "action": "mean_std"}
    )
    model = ToyPolicy(**model_kwargs)
    return TrainingParts(
        model=model,
        train_dataset=train_ds,
        val_dataset=val_ds,
        normalizer=normalizer,
        embodiment=toy_embodiment(),
        model_config={"toy": True, **model_kwargs},
        tasks=list(TASKS),
        action_names=["a0", "a1"],
        uses_language=True,
    )


def main(argv: list[str]) -> int:
    """``python tests/training_toy.py [--slow_s=X] [--key=value ...]``: train the toy policy.

    Used by the SIGTERM and torchrun tests; prints one JSON line with the result.
    """
    import json
    import time

    from vlastack.training.config import TrainConfig, apply_overrides
    from vlastack.training.loop import train

    slow_s = 0.0
    rest = []
    for a in argv:
        if a.startswith("--slow_s="):
            slow_s = float(a.split("=", 1)[1])
        else:
            rest.append(a)
    cfg = apply_overrides(TrainConfig(log="none", progress=False, val_batches=1), rest)

    def build(c: TrainConfig) -> TrainingParts:
        parts = toy_parts(loss_noise=0.0)
        if slow_s:
            loss = parts.model.loss

            def slow_loss(batch: dict[str, Any]) -> torch.Tensor:
                time.sleep(slow_s)
                return loss(batch)

            parts.model.loss = slow_loss  # type: ignore[method-assign]
        return parts

    res = train(cfg, build)
    if int(os.environ.get("RANK", "0")) != 0:
        # Only rank 0 reports: the caller reads the last stdout line, and ranks print in any order.
        return {"SIGTERM": 143, "SIGINT": 130}.get(res.stopped_by or "", 0)
    print(
        json.dumps(
            {
                "step": res.step,
                "stopped_by": res.stopped_by,
                "last": str(res.last_checkpoint),
                "losses": res.losses,
            }
        ),
        flush=True,
    )
    return {"SIGTERM": 143, "SIGINT": 130}.get(res.stopped_by or "", 0)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
