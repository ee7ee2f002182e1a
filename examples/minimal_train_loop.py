"""A minimal, hackable training loop for a vlastack recipe (~100 lines).

``vlastack train`` (training/loop.py) adds validation, EMA, exact resume, LoRA, DDP and logging;
this file keeps only the essentials so you can change any line: data -> normalize -> loss ->
AdamW step -> checkpoint that ``Policy.from_checkpoint`` can load.

    python examples/minimal_train_loop.py PATH/TO/DATASET --recipe cpu_default --steps 200
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from vlastack.data.dataset import WindowedDataset, collate, split_episodes
from vlastack.data.format import DatasetReader
from vlastack.data.normalization import Normalizer
from vlastack.models.vla import build_vla
from vlastack.recipes import get_recipe
from vlastack.training.build import embodiment_from_features, fit_model_config
from vlastack.training.checkpoint import save_checkpoint
from vlastack.training.optim import warmup_cosine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="a vlastack / LeRobot v3 dataset folder")
    ap.add_argument("--recipe", default="cpu_default")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out", default="runs/minimal")
    args = ap.parse_args()
    torch.manual_seed(0)

    # 1. Data: windows of (obs history, action chunk) over the training episodes.
    reader = DatasetReader(args.data)
    emb = reader.embodiment or embodiment_from_features(reader)
    recipe = get_recipe(args.recipe)
    cfg = fit_model_config(recipe.model, emb)  # action/state sizes, cameras from the data
    train_eps, _ = split_episodes(reader.num_episodes, val_fraction=0.1, seed=0)
    dataset = WindowedDataset(
        reader,
        obs_horizon=cfg.obs_horizon,
        action_horizon=cfg.action_horizon,
        episodes=train_eps,
        image_keys=[f"observation.images.{c}" for c in cfg.cameras],
        image_size=tuple(cfg.image_size) if cfg.cameras else None,
    )
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, collate_fn=collate
    )
    normalizer = Normalizer(reader.stats, recipe.normalization)

    # 2. Model and optimizer. Any nn.Module with loss(batch) -> (B,) works here.
    model = build_vla(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, warmup_steps=20, total_steps=args.steps)
    )
    print(f"{sum(p.numel() for p in params):,} trainable parameters, {len(dataset)} samples")

    # 3. The loop.
    step, t0 = 0, time.monotonic()
    while step < args.steps:
        for batch in loader:
            loss = model.loss(normalizer.normalize(batch)).mean()  # (B,) -> scalar
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {step}: {batch['episode_index']}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 10 == 0:
                sps = step * args.batch_size / (time.monotonic() - t0)
                print(f"step {step:5d}  loss {loss.item():.4f}  {sps:.1f} samples/s")
            if step >= args.steps:
                break

    # 4. A checkpoint folder that Policy.from_checkpoint(...) and `vlastack eval` can load.
    path = save_checkpoint(
        f"{args.out}/checkpoints",
        step,
        weights=model.state_dict(),
        config={"recipe": args.recipe, "model": cfg.to_dict(), "train": vars(args)},
        normalization=normalizer.to_dict(),
        embodiment=emb,
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
