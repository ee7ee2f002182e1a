"""The one training loop: ``train(cfg) -> TrainResult``, readable top to bottom.

It seeds everything, builds data + normalizer + model (from a recipe, or from a ``build``
function given by the caller), checks the recipe fits the data, prints parameter counts and a
memory estimate, then runs AdamW with warmup + cosine, gradient clipping and accumulation, EMA,
bf16 autocast, DDP/FSDP, open-loop validation, a language probe, atomic checkpoints, and exact
resume (data order and RNG restored). The model only needs ``loss(batch) -> (B,)`` and, for
validation, ``sample_actions(batch) -> (B, H, A)`` (``parts.TrainablePolicy``); with
``--init-from`` it is an imported LeRobot policy (``training.init_from``).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlastack.errors import ConfigError, VlastackError
from vlastack.models.common import cpu_bf16_kernels
from vlastack.training import adapters, checkpoint, distributed, host_memory, probes
from vlastack.training.batches import batch_stream, episode_indices, first_batch, per_rank_batch
from vlastack.training.build import build_parts
from vlastack.training.config import LoraSettings, TrainConfig
from vlastack.training.fit_checks import check_fits
from vlastack.training.init_from import build_init_from
from vlastack.training.logging import RunLogger
from vlastack.training.optim import build_optimizer, build_scheduler
from vlastack.training.parts import Batch, TrainingParts
from vlastack.training.stopping import install_stop_handlers, restore_handlers
from vlastack.training.threads import pick_threads, pick_workers
from vlastack.training.validation import validate


class TrainingDivergedError(VlastackError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float]  # one per optimizer step (mean over micro-batches and ranks)
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    val_metrics: dict[str, float]
    language_probe: probes.LanguageProbe | None
    stopped_by: str | None  # None (finished) | 'SIGTERM' | 'SIGINT' | 'max_minutes'
    samples_per_s: float
    param_counts: dict[str, tuple[int, int]]
    memory: probes.MemoryEstimate | None
    step_s: list[float] = field(default_factory=list)  # wall time of each step, data included


class _LossModule(nn.Module):
    """Routes ``forward`` to ``loss`` or ``sample_actions`` so DDP/FSDP hooks see every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model

    def forward(self, batch: Batch, sample: bool = False) -> torch.Tensor:
        return self.model.sample_actions(batch) if sample else self.model.loss(batch)


def train(
    cfg: TrainConfig, build: Callable[[TrainConfig], TrainingParts] | None = None
) -> TrainResult:
    """Train ``build(cfg)`` (default: the recipe on the dataset) and return what happened.

    SIGTERM / Ctrl-C at any point set a flag; the loop finishes its step, writes a checkpoint
    and returns with ``stopped_by`` set (a second Ctrl-C interrupts at once).
    """
    stop_signal: list[str] = []
    previous = install_stop_handlers(stop_signal)
    threads_before = torch.get_num_threads()
    try:
        return _train(cfg, build, stop_signal)
    finally:
        restore_handlers(previous)
        torch.set_num_threads(threads_before)


def _train(
    cfg: TrainConfig,
    build: Callable[[TrainConfig], TrainingParts] | None,
    stop_signal: list[str],
) -> TrainResult:
    cfg.validate()
    dist = distributed.init_distributed(cfg.distributed, cfg.device)
    main = dist.is_main
    say = print if main else (lambda *a, **k: None)
    run_dir = Path(cfg.out_dir)
    ckpt_root = run_dir / "checkpoints"

    # ---- build: seed, data, model, adapters ------------------------------------------------
    # Other processes' load, read before this run's own build work raises the load average.
    other_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    torch.set_num_threads(pick_threads(cfg, other_load, num_workers=0))
    seed_everything(cfg.seed)
    parts = (build or (build_init_from if cfg.init_from else build_parts))(cfg)
    check_fits(parts, cfg)
    num_workers = pick_workers(cfg, parts, dist.device.type)
    torch.set_num_threads(pick_threads(cfg, other_load, num_workers))
    say(f"CPU: {torch.get_num_threads()} intra-op threads, {num_workers} data workers")
    if cfg.retain_host_memory and dist.device.type == "cpu":
        host_memory.retain_freed_memory()
    model: Any = parts.model
    frozen = adapters.apply_freeze(model, cfg.freeze)
    if cfg.lora is not None:
        if dist.mode == "fsdp":
            raise ConfigError("LoRA with --distributed=fsdp is not supported yet; use ddp")
        target = cfg.lora.target
        if target == LoraSettings().target and getattr(model, "lora_target", None):
            target = model.lora_target  # the model's own default (TrainablePolicy)
        wrapped_lora = adapters.apply_lora(
            model, cfg.lora.rank, cfg.lora.alpha, target, cfg.lora.dropout
        )
        say(f"LoRA rank {cfg.lora.rank} on {len(wrapped_lora)} linear layers ({target})")
    if frozen:
        say(f"frozen: {len(frozen)} parameter tensors ({', '.join(cfg.freeze)})")
    model.to(dist.device)
    if parts.normalizer is not None and isinstance(parts.normalizer, nn.Module):
        parts.normalizer.to(dist.device)
    seed_everything(cfg.seed + 1000 * dist.rank)  # distinct noise per rank from here on

    # ---- parameter counts and memory estimate, before the first step -----------------------
    counts = adapters.count_parameters(model)
    micro_bs = per_rank_batch(cfg, dist)
    autocast = make_autocast(cfg.precision, dist.device, say)
    probe_batch = first_batch(parts, micro_bs)
    probe_in = probes.normalize_batch(parts.normalizer, probes.to_device(probe_batch, dist.device))

    def probe_loss() -> torch.Tensor:
        with autocast():
            return model.loss(probe_in).float().mean()

    memory = probes.estimate_memory(model, probe_loss)
    say(format_param_counts(counts))
    say(f"memory estimate per rank (micro-batch {micro_bs}):\n{memory.table()}")

    # ---- distributed wrapper, optimizer, schedule, EMA --------------------------------------
    lookup = adapters.group_lookup(model)
    # FSDP replaces parameters with sharded ones, so the optimizer is built after wrapping.
    net = distributed.wrap_model(_LossModule(model), dist)
    optimizer = build_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.betas, lambda n: lookup.get(n, "other")
    )
    scheduler = build_scheduler(
        optimizer, cfg.schedule, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio
    )
    ema = None
    if cfg.ema_decay is not None:
        if dist.mode == "fsdp":
            raise ConfigError("EMA with --distributed=fsdp is not supported yet; use ddp")
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))

    # ---- resume or start fresh --------------------------------------------------------------
    start_step, epoch, batch_in_epoch = 0, 0, 0
    best_metric, best_path = math.inf, None
    resume_rng = None
    # A run killed inside a checkpoint save or prune is repaired before anything is read.
    if cfg.resume and main:
        checkpoint.recover_checkpoints(ckpt_root)
    if cfg.resume:
        distributed.barrier(dist)
    existing = checkpoint.list_step_dirs(ckpt_root)
    if existing and not cfg.resume:
        raise ConfigError(
            f"{run_dir} already holds checkpoints ({existing[-1].name}); pass --resume to "
            "continue that run, or choose another --out_dir"
        )
    if cfg.resume and existing:
        st = checkpoint.load_resume_state(ckpt_root / "last")
        ck = checkpoint.load_checkpoint(ckpt_root / "last")
        weights = st.train_weights if st.train_weights is not None else ck.weights
        distributed.load_full_model_state(net, model, weights, dist)
        distributed.load_full_optimizer_state(net, optimizer, st.optimizer, dist)
        scheduler.load_state_dict(st.scheduler)
        if ema is not None and st.ema is not None:
            ema.load_state_dict(st.ema)
        start_step = st.step
        epoch, batch_in_epoch = st.sampler["epoch"], st.sampler["batch_in_epoch"]
        saved_best = st.extra.get("best_metric")
        best_metric = math.inf if saved_best is None else float(saved_best)
        if (ckpt_root / "best").exists():
            best_path = checkpoint.resolve_checkpoint(ckpt_root / "best")
        resume_rng = st.rng
        say(f"resumed from {ck.path} at step {start_step}")
    elif cfg.resume:
        say(f"--resume: no checkpoint in {ckpt_root}; starting fresh")

    logger = RunLogger(
        run_dir,
        cfg.log,
        enabled=main,
        config=cfg.to_dict(),
        resume_step=start_step if cfg.resume else None,
    )
    if resume_rng is not None:
        checkpoint.restore_rng(
            resume_rng[dist.rank] if isinstance(resume_rng, list) else resume_rng
        )

    def save(step: int, best: bool = False) -> Path | None:
        weights_raw = distributed.full_model_state(net, dist)
        weights_raw = {k.removeprefix("model."): v for k, v in weights_raw.items()}
        rng = gather_rng(dist)
        opt_state = distributed.full_optimizer_state(net, optimizer, dist)
        if not main:
            return None
        deploy_src = ema.module if ema is not None else model
        deploy = adapters.deploy_state_dict(deploy_src) if dist.mode != "fsdp" else weights_raw
        differs = ema is not None or cfg.lora is not None
        state = checkpoint.ResumeState(
            step=step,
            optimizer=opt_state,
            scheduler=scheduler.state_dict(),
            rng=rng,
            sampler={"epoch": epoch, "batch_in_epoch": batch_in_epoch},
            train_weights=weights_raw if differs else None,
            ema=ema.state_dict() if ema is not None else None,
            extra={"best_metric": best_metric if math.isfinite(best_metric) else None},
        )
        path = checkpoint.save_checkpoint(
            ckpt_root,
            step,
            weights=deploy,
            config=full_config(cfg, parts),
            normalization=parts.normalizer.to_dict() if parts.normalizer is not None else {},
            embodiment=parts.embodiment,
            resume=state,
        )
        if best:
            checkpoint.set_pointer(ckpt_root, "best", path.name)
        checkpoint.prune_checkpoints(ckpt_root, cfg.keep_last)
        return path

    # ---- the loop ---------------------------------------------------------------------------
    stream = batch_stream(parts, cfg, dist, micro_bs, epoch, batch_in_epoch, num_workers)
    bar = make_progress(cfg, start_step, main)
    losses: list[float] = []
    step_s: list[float] = []
    val_metrics: dict[str, float] = {}
    probe: probes.LanguageProbe | None = None
    last_path: Path | None = None
    t_start = time.monotonic()
    samples_seen = 0
    train_s = 0.0
    stopped_by: str | None = None
    step = start_step
    net.train()
    try:
        while step < cfg.steps:
            t_step = time.monotonic()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            nonfinite = False
            bad_episodes: list[int] = []
            for micro in range(cfg.grad_accum):
                epoch, batch_in_epoch, raw = next(stream)
                batch = probes.normalize_batch(parts.normalizer, probes.to_device(raw, dist.device))
                sync = micro == cfg.grad_accum - 1 or dist.mode != "ddp"
                with nullcontext() if sync else net.no_sync(), autocast():  # type: ignore[operator]
                    loss = net(batch).float().mean()
                if not torch.isfinite(loss):
                    nonfinite = True
                    bad_episodes += episode_indices(raw)
                (loss / cfg.grad_accum).backward()
                loss_sum += float(loss.detach())
                samples_seen += micro_bs * dist.world_size
            time_up = cfg.max_minutes is not None and (
                time.monotonic() - t_start > 60 * cfg.max_minutes
            )
            nonfinite, stop_now = distributed.any_flag(
                [nonfinite, bool(stop_signal) or time_up], dist
            )
            if nonfinite:
                raise TrainingDivergedError(
                    f"non-finite loss at step {step + 1} (batch episodes {sorted(set(bad_episodes))}"
                    f"{' on this rank' if dist.enabled else ''}); stopped without updating. Last "
                    f"good checkpoint: {last_path or 'none yet'}. Lower --lr, set --grad_clip, "
                    "or inspect those episodes with `vlastack data doctor`"
                )
            grad_norm = float("nan")
            if cfg.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            loss_mean = distributed.mean_scalar(loss_sum / cfg.grad_accum, dist)
            losses.append(loss_mean)
            step_s.append(time.monotonic() - t_step)
            train_s += step_s[-1]  # excludes validation and checkpoint time
            sps = samples_seen / max(train_s, 1e-9)
            lr = float(scheduler.get_last_lr()[0])
            if bar is not None:
                bar.set_postfix(loss=f"{loss_mean:.4f}", lr=f"{lr:.2e}", sps=f"{sps:.1f}")
                bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                logger.scalars(
                    {
                        "train/loss": loss_mean,
                        "train/lr": lr,
                        "train/grad_norm": grad_norm,
                        "train/samples_per_s": sps,
                        "train/epoch": float(epoch),
                    },
                    step,
                )

            is_last = step == cfg.steps
            improved = False
            if (cfg.val_every and step % cfg.val_every == 0) or is_last:
                val_metrics, probe = validate(
                    cfg, parts, net, ema, model, dist, autocast, step, logger
                )
                metric = val_metrics.get("val/action_mse", math.nan)
                if math.isfinite(metric) and metric < best_metric:
                    best_metric, improved = metric, True
            if stop_now:
                stopped_by = stop_signal[0] if stop_signal else "max_minutes"
            if (cfg.save_every and step % cfg.save_every == 0) or is_last or improved or stop_now:
                last_path = save(step, best=improved) or last_path
                if improved and main:
                    best_path = last_path
            if stop_now:
                say(f"\nstopped by {stopped_by} at step {step}; checkpoint {last_path}")
                break
    finally:
        stream.close()  # shuts the data workers down now rather than at garbage collection
        if bar is not None:
            bar.close()
        logger.close()
    distributed.barrier(dist)
    distributed.cleanup(dist)
    return TrainResult(
        run_dir=run_dir,
        step=step,
        losses=losses,
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        val_metrics=val_metrics,
        language_probe=probe,
        stopped_by=stopped_by,
        samples_per_s=samples_seen / max(train_s, 1e-9),
        param_counts=counts,
        memory=memory,
        step_s=step_s,
    )


# ---- small helpers ------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_autocast(
    precision: str, device: torch.device, say: Callable[..., None]
) -> Callable[[], AbstractContextManager]:
    if precision == "fp32":
        return nullcontext
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        say("bf16 is not supported on this GPU; training in fp32")
        return nullcontext
    if device.type == "cpu" and not cpu_bf16_kernels():
        say(
            "bf16 has no fast kernels on this CPU (oneDNN needs AVX-512 or AVX-NE-CONVERT); "
            "training in fp32"
        )
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def gather_rng(dist: distributed.DistInfo) -> Any:
    """This rank's RNG state, or every rank's (list, rank order) when distributed."""
    mine = checkpoint.capture_rng()
    if not dist.enabled:
        return mine
    import torch.distributed as tdist

    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, mine)
    return out


def full_config(cfg: TrainConfig, parts: TrainingParts) -> dict[str, Any]:
    from vlastack import __version__

    return {
        "vlastack_version": __version__,
        "recipe": cfg.recipe,
        "train": cfg.to_dict(),
        "model": parts.model_config,
        "recipe_extra": parts.recipe_extra,
        **({"mixture": parts.mixture} if parts.mixture else {}),
        **({"format": parts.checkpoint_format} if parts.checkpoint_format else {}),
    }


def format_param_counts(counts: dict[str, tuple[int, int]]) -> str:
    lines = [f"{'group':<18}{'total':>14}{'trainable':>14}"]
    for g, (total, trainable) in counts.items():
        if g == "total":
            continue
        lines.append(f"{g:<18}{total:>14,}{trainable:>14,}")
    total, trainable = counts["total"]
    lines.append(f"{'total':<18}{total:>14,}{trainable:>14,}")
    return "parameters:\n" + "\n".join("  " + ln for ln in lines)


def make_progress(cfg: TrainConfig, start_step: int, main: bool) -> Any:
    if not (cfg.progress and main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
