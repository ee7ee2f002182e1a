"""CoT-VLA rollouts: each generated subgoal against the real frame k steps later.

The subgoal of a ``cot_vla`` policy is a latent of its frozen vision encoder (models/foresight.py),
so it cannot be drawn as an image; what the evaluation shows instead, per episode and in the
report, is how close it came to the frame the robot actually saw k steps after the prediction,
in the same latent space: global latents (standardized pooled tokens averaged), centred on the
mean of the episode's real future latents. ``cos``: their mean cosine; ``cos_copy``: the same for
the frame the subgoal was predicted from (the guess "nothing changes"); ``top1``: nearest-frame
retrieval, the share of subgoals nearer to their own real future than to any other future frame
of the episode (``chance`` = 1/number of pairs); ``top1_copy`` for the current frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlastack.models.foresight import current_features, latent_tokens

KEYS = ("cos", "cos_copy", "top1", "top1_copy", "chance", "pairs")


class SubgoalTracker:
    """Pairs each chunk's generated subgoal (``VLA.last_subgoal``) with the frame k steps on."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.model = policy.model
        self.fs = self.model.foresight
        self.k = int(self.fs.sg_cfg.horizon)
        self.reset()

    @classmethod
    def for_policy(cls, policy: Any) -> SubgoalTracker | None:
        """A tracker for a local policy whose model generates subgoals, else None."""
        fs = getattr(getattr(policy, "model", None), "foresight", None)
        if fs is None or fs.subgoal is None or not hasattr(policy, "batch"):
            return None
        return cls(policy)

    def reset(self) -> None:
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def _latent(self, obs: Any) -> torch.Tensor:
        batch = self.policy.batch([[self.policy.parse(obs)]])
        feats = current_features(self.model.vision, batch, self.fs.cameras)
        return latent_tokens(feats, self.fs.sg_cfg.grid).mean(1)[0].cpu()

    def after_infer(self, frame: int, obs: Any) -> None:
        """The policy just predicted from frame index ``frame`` (observation ``obs``)."""
        goal = getattr(self.model, "last_subgoal", None)
        if goal is not None:
            self.pending[frame + self.k] = (goal[0].mean(0).float().cpu(), self._latent(obs))

    def on_frame(self, frame: int, obs: Any) -> None:
        """The environment is now at frame index ``frame``."""
        hit = self.pending.pop(frame, None)
        if hit is not None:
            self.rows.append((hit[0], hit[1], self._latent(obs)))

    def summary(self) -> dict[str, float] | None:
        if len(self.rows) < 2:
            return None
        goal, now, real = (torch.stack(c) for c in zip(*self.rows))
        centre = real.mean(0, keepdim=True)
        idx = torch.arange(len(self.rows))

        def cos(a: torch.Tensor) -> float:
            return float(torch.cosine_similarity(a - centre, real - centre, dim=-1).mean())

        def top1(a: torch.Tensor) -> float:
            return float((torch.cdist(a, real).argmin(1) == idx).float().mean())

        return {
            "cos": round(cos(goal), 4),
            "cos_copy": round(cos(now), 4),
            "top1": round(top1(goal), 4),
            "top1_copy": round(top1(now), 4),
            "chance": round(1.0 / len(self.rows), 4),
            "pairs": len(self.rows),
        }


def aggregate(episodes: list[dict[str, Any]]) -> dict[str, float] | None:
    """Episode means of the per-episode subgoal summaries (``extra.subgoal``), or None."""
    found = [e["extra"]["subgoal"] for e in episodes if (e.get("extra") or {}).get("subgoal")]
    if not found:
        return None
    out = {k: float(np.mean([f[k] for f in found])) for k in KEYS}
    out["episodes"] = len(found)
    return out
