"""A custom action head in one file: the class, its builder and one registry line.

The head maps the VLA's prefix tokens ``context`` (B, N, D) with ``context_mask`` (B, N) to a
(B, H, A) chunk of normalized actions (ARCHITECTURE.md, "Action head"). It describes itself, so
the rest of vlastack needs no edit for it: ``export_kind = "single_pass"`` makes ONNX export build
``<name>_sampler.onnx`` (one pass, no sampling loop), ``cuda_graph_blocker = None`` lets
``Policy.enable_cuda_graphs`` record its sampler, and ``suite_kwargs`` /
``suite_action_normalization`` are what the ``heads`` suite trains it with.

    python examples/custom_action_head.py --out /tmp/mean_pool

registers the head as ``mean_pool``, trains a tiny VLA with it for a few steps, samples a chunk and
exports the head to ONNX, checked against PyTorch with onnxruntime (``pip install
vlastack[export]``). In a plugin (``VLASTACK_PLUGINS=my_pkg``), the registry line runs at import.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlastack.models.action_heads import ACTION_HEADS
from vlastack.models.action_heads.base import ActionHead

NAME = "mean_pool"


@dataclass
class MeanPoolHeadConfig:
    width: int = 128
    hidden: int = 256


class MeanPoolHead(ActionHead):
    """Masked mean of the projected context → MLP → the whole chunk; L1 loss, deterministic."""

    export_kind = "single_pass"  # one pass is the whole sampler: export/onnx.py's DirectSampler
    cuda_graph_blocker = None  # fixed shapes, no host synchronization: CUDA graphs may record it

    def __init__(
        self, context_dim: int, action_dim: int, action_horizon: int, width: int, hidden: int
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)  # + self.context_proj
        self.mlp = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Linear(hidden, action_horizon * action_dim),
        )

    @classmethod
    def suite_kwargs(cls, size: dict[str, object], depth: int) -> dict[str, object]:
        # the ``heads`` suite passes the recipe head's width / num_heads / depth; this head has no
        # depth or attention heads, only a width
        return {k: v for k, v in size.items() if k == "width"}

    def predict(self, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        w = context_mask.to(context.dtype).unsqueeze(-1)  # (B, N, 1): padded tokens weigh 0
        pooled = (self.context_proj(context) * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.mlp(pooled).view(-1, self.action_horizon, self.action_dim)

    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None):
        self._check(context, context_mask, actions)
        err = (self.predict(context, context_mask) - actions).abs()  # (B, H, A)
        w = (~action_is_pad).to(err.dtype).unsqueeze(-1).expand_as(err)  # padded steps: 0
        if action_dim_mask is not None:  # padded action dims (mixtures of robots): 0
            w = w * action_dim_mask.to(err.dtype).unsqueeze(1)
        return (err * w).sum((1, 2)) / w.sum((1, 2)).clamp_min(1.0)  # (B,)

    @torch.no_grad()
    def sample_actions(self, context, context_mask, generator=None):
        """Deterministic; ``generator`` is unused."""
        self._check(context, context_mask)
        return self.predict(context, context_mask)


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> MeanPoolHead:
    """``cfg``: a ``MeanPoolHeadConfig``, a dict of its fields (``head_kwargs``) or None."""
    c = cfg if isinstance(cfg, MeanPoolHeadConfig) else MeanPoolHeadConfig(**(cfg or {}))
    return MeanPoolHead(context_dim, action_dim, action_horizon, c.width, c.hidden)


def register() -> None:
    """The one registry line (a plugin module runs it at import)."""
    ACTION_HEADS.add(NAME, build, "mean-pooled context → MLP, L1 (examples/custom_action_head.py)")


# ---- a tiny VLA with the head: train a few steps, sample, export --------------------------------


def tiny_vla_config(head: str = NAME) -> Any:
    from vlastack.models.vla import VLAConfig

    return VLAConfig(
        action_dim=4,
        action_horizon=4,
        obs_horizon=1,
        state_dim=4,
        cameras=["front"],
        image_size=(16, 16),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head=head,
        head_kwargs={"width": 32, "hidden": 64},
    )


def random_batch(cfg: Any, B: int = 4, seed: int = 0) -> dict[str, Any]:
    """A normalized batch shaped like the training loop's (ARCHITECTURE.md)."""
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.image_size
    batch: dict[str, Any] = {
        f"observation.images.{c}": torch.rand(B, cfg.obs_horizon, 3, H, W, generator=g)
        for c in cfg.cameras
    }
    batch["observation.state"] = torch.randn(B, cfg.obs_horizon, cfg.state_dim, generator=g)
    batch["action"] = torch.rand(B, cfg.action_horizon, cfg.action_dim, generator=g) * 2 - 1
    batch["action_is_pad"] = torch.zeros(B, cfg.action_horizon, dtype=torch.bool)
    batch["task"] = ["push the block"] * B
    return batch


def run(out_dir: str, steps: int = 20, head: str = NAME) -> dict[str, Any]:
    """Train a tiny VLA whose head is ``head`` for ``steps`` Adam steps, sample a chunk and export
    the head to ``out_dir`` (onnxruntime parity checked). Returns losses, chunk shape, manifest."""
    from vlastack.export.onnx import export_model_heads
    from vlastack.models.vla import build_vla

    torch.manual_seed(0)
    cfg = tiny_vla_config(head)
    model = build_vla(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = random_batch(cfg)
    losses = []
    for _ in range(steps):
        loss = model.loss(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    chunk = model.sample_actions(batch)
    manifest = export_model_heads(model, out_dir)  # checks onnxruntime against PyTorch
    return {"losses": losses, "chunk_shape": list(chunk.shape), "manifest": manifest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="ONNX folder (default: a temporary one)")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    register()
    with tempfile.TemporaryDirectory() as tmp:
        res = run(args.out or tmp, args.steps)
    graphs = {k: v["max_abs_error"] for k, v in res["manifest"]["graphs"].items()}
    print(
        json.dumps(
            {
                "head": NAME,
                "loss_first": res["losses"][0],
                "loss_last": res["losses"][-1],
                "chunk_shape": res["chunk_shape"],
                "onnx_max_abs_error": graphs,
            }
        )
    )


if __name__ == "__main__":
    main()
