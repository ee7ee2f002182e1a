"""Open-loop validation during training: action error on held-out episodes (one ``ValSet`` per
dataset, each in its robot's units), the language probe, the open-loop plots, and the headline
``val/action_mse`` that picks the best checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from vlastack.errors import ConfigError
from vlastack.models.vla import VLA
from vlastack.runners import clear_runners, use_runner
from vlastack.training import distributed, probes
from vlastack.training.config import TrainConfig
from vlastack.training.logging import RunLogger
from vlastack.training.parts import Batch, TrainingParts, ValSet


def validate(
    cfg: TrainConfig,
    parts: TrainingParts,
    net: nn.Module,
    ema: Any,
    model: nn.Module,
    dist: distributed.DistInfo,
    autocast: Callable[[], AbstractContextManager],
    step: int,
    logger: RunLogger,
) -> tuple[dict[str, float], probes.LanguageProbe | None]:
    """Open-loop action error on held-out episodes, the plot, and the language probe.

    A mixture validates each member on its own held-out episodes, in that robot's units
    (``val/<name>/...``); ``val/action_mse`` / ``val/action_l1`` are then the members' mean
    errors in normalized units.
    """
    sets = validation_sets(parts)
    if not sets:
        return {}, None
    # FSDP needs every rank in the forward; DDP/single-process validate on rank 0 only.
    if dist.mode != "fsdp" and not dist.is_main:
        return {}, None
    eval_model: Any = ema.module if ema is not None else model
    sample_fn: Callable[[Batch], torch.Tensor]
    if dist.mode == "fsdp":

        def sample_fn(b: Batch) -> torch.Tensor:
            return net(b, sample=True)
    else:
        sample_fn = eval_model.sample_actions
    was_training = net.training
    net.eval()
    eval_model.eval()
    plugged = dist.mode != "fsdp" and _plug_runner(eval_model, cfg)
    metrics: dict[str, float] = {}
    outcomes: list[tuple[ValSet, probes.OpenLoopResult, probes.LanguageProbe | None]] = []
    for vs in sets:
        loader = DataLoader(
            vs.dataset,
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=0,
            collate_fn=vs.collate_fn,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        result = probes.open_loop_eval(
            sample_fn,
            vs.normalizer,
            loader,
            dist.device,
            cfg.val_batches,
            seed=cfg.seed,
            autocast=autocast,
            trace_episodes=cfg.val_episodes,
        )
        metrics.update(result.metrics(f"val/{vs.name}/" if vs.name else "val/"))
        if dist.mode != "fsdp":  # CoT-VLA: generated subgoal vs the real future frame
            foresight = probes.subgoal_eval(
                eval_model, vs.normalizer, loader, dist.device, cfg.val_batches
            )
            for k, v in foresight.items():
                metrics[(f"val/{vs.name}/" if vs.name else "val/") + k] = v
        probe = None
        if parts.uses_language:
            first = next(iter(loader))
            probe = probes.language_sensitivity(
                sample_fn, vs.normalizer, first, dist.device, vs.tasks, cfg.seed, autocast
            )
            if probe is not None:
                metrics.update(probe.metrics(f"probe/{vs.name}/" if vs.name else "probe/"))
        outcomes.append((vs, result, probe))
    probe = outcomes[0][2]
    if len(outcomes) > 1:
        # A mixture: robots' units differ (metres vs radians vs pixels), so the headline numbers
        # (and best-checkpoint choice) are the members' mean errors in normalized units.
        mse, l1 = [], []
        for vs, r, _ in outcomes:
            if r.num_samples:
                scale = np.asarray(vs.normalizer.action_scale(), dtype=np.float64)
                mse.append(float(np.mean(r.mse_per_dim / scale**2)))
                l1.append(float(np.mean(r.l1_per_dim / scale)))
        metrics["val/action_mse"] = float(np.mean(mse)) if mse else math.nan
        metrics["val/action_l1"] = float(np.mean(l1)) if l1 else math.nan
        probe = mean_probe([p for _, _, p in outcomes if p is not None])
        if probe is not None:
            metrics.update(probe.metrics())
    if plugged:  # training goes on with the plain modules (a runner holds this round's weights)
        clear_runners(eval_model)
    net.train(was_training)
    eval_model.train(was_training)
    if not dist.is_main:
        return metrics, probe
    logger.scalars(metrics, step)
    for vs, result, member_probe in outcomes:
        tag = f"_{vs.name}" if vs.name else ""
        plot_path = Path(cfg.out_dir) / "val" / f"open_loop{tag}_step{step}.png"
        fig = probes.plot_open_loop(result, plot_path, vs.action_names)
        if fig is not None:
            logger.figure(f"val/open_loop/{vs.name}" if vs.name else "val/open_loop", fig, step)
            import matplotlib.pyplot as plt

            plt.close(fig)
        prefix = f"val/{vs.name}/" if vs.name else "val/"
        dims = " ".join(f"{v:.4g}" for v in result.mse_per_dim[:8])
        print(
            f"\nstep {step} open-loop val{f' [{vs.name}]' if vs.name else ''}: action MSE "
            f"{metrics.get(prefix + 'action_mse', math.nan):.5g} (per dim: {dims}), "
            f"L1 {metrics.get(prefix + 'action_l1', math.nan):.5g}; plot {plot_path}"
        )
        if prefix + "subgoal_cos" in metrics:
            m = {k: metrics[prefix + k] for k in probes.SUBGOAL_KEYS}
            print(
                f"subgoal vs the real frame t+k (latent): cosine {m['subgoal_cos']:.3f} (current "
                f"frame {m['subgoal_cos_copy']:.3f}), nearest-frame top-1 "
                f"{m['subgoal_nn_top1']:.2f} (current frame {m['subgoal_nn_top1_copy']:.2f}, "
                f"chance {m['subgoal_nn_chance']:.2f})"
            )
        if member_probe is not None:
            swap = (
                f", swapped {member_probe.swap_delta:.4f}"
                if member_probe.swap_delta is not None
                else ""
            )
            print(f"language probe: |Δaction| blanked {member_probe.blank_delta:.4f}{swap}")
            if member_probe.min_delta < cfg.language_probe_threshold:
                print(
                    f"WARNING: policy may ignore language{f' on {vs.name}' if vs.name else ''}: "
                    f"predicted actions change by {member_probe.min_delta:.4f} < "
                    f"{cfg.language_probe_threshold} (normalized units) when the instruction is "
                    "blanked or swapped"
                )
    return metrics, probe


def _plug_runner(model: nn.Module, cfg: TrainConfig) -> bool:
    """Sample this validation round through the device's default runner (``native`` on a CPU),
    built for the weights as they are now, as a ``Policy`` would; float32 only (the runner's
    products do not follow autocast). True when one was plugged into the model's slots."""
    if cfg.precision != "fp32" or not isinstance(model, VLA) or model.head is None:
        return False
    try:
        use_runner(model, "auto")
    except ConfigError:
        return False
    return True


def validation_sets(parts: TrainingParts) -> list[ValSet]:
    """``parts.val_sets`` (one per mixture member), else the one held-out dataset, else none."""
    if parts.val_sets:
        return [vs for vs in parts.val_sets if len(vs.dataset)]  # type: ignore[arg-type]
    if parts.val_dataset is None or len(parts.val_dataset) == 0:  # type: ignore[arg-type]
        return []
    return [
        ValSet(
            "",
            parts.val_dataset,
            parts.normalizer,
            parts.collate_fn,
            parts.action_names,
            parts.tasks,
        )
    ]


def mean_probe(found: list[probes.LanguageProbe]) -> probes.LanguageProbe | None:
    """The members' language probes averaged (a swap delta only over members that have one)."""
    if not found:
        return None
    swaps = [p.swap_delta for p in found if p.swap_delta is not None]
    return probes.LanguageProbe(
        blank_delta=float(np.mean([p.blank_delta for p in found])),
        swap_delta=float(np.mean(swaps)) if swaps else None,
        scale=float(np.mean([p.scale for p in found])),
    )
