"""The one training loop: ``train(cfg) -> TrainResult``, readable top to bottom.

It seeds everything, builds data + normalizer + model (from a recipe, or from a ``build``
function given by the caller), checks the recipe fits the data, prints parameter counts and a
memory estimate, then runs AdamW with warmup + cosine, gradient clipping and accumulation, EMA,
bf16 autocast, DDP/FSDP, open-loop validation, a language probe, atomic checkpoints, and exact
resume (data order and RNG restored). The model only needs ``loss(batch) -> (B,)`` and, for
validation, ``sample_actions(batch) -> (B, H, A)``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import random
import signal
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, DataError, VlastackError
from vlastack.models.common import cpu_bf16_kernels
from vlastack.training import adapters, checkpoint, distributed, host_memory, probes
from vlastack.training.config import DataSpec, TrainConfig, parse_data
from vlastack.training.logging import RunLogger
from vlastack.training.optim import build_optimizer, build_scheduler

Batch = dict[str, Any]


class TrainingDivergedError(VlastackError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainingParts:
    """What the loop trains on. ``build_parts`` makes these from a recipe and a dataset."""

    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None = None
    normalizer: Any = None  # data.normalization.Normalizer (or None = batches already normalized)
    embodiment: EmbodimentSpec | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    collate_fn: Callable[[list[Batch]], Batch] | None = None
    tasks: list[str] = field(default_factory=list)  # distinct instructions, for the probe
    action_names: list[str] | None = None
    uses_language: bool = True
    recipe_extra: dict[str, Any] = field(default_factory=dict)  # e.g. execute_horizon
    # Mixtures (build_mixture_parts): held-out data per member, the epoch's sample order when
    # members have explicit weights (default: a seeded shuffle), and what the checkpoint records.
    val_sets: list[ValSet] = field(default_factory=list)
    epoch_indices: Callable[[int], Sequence[int]] | None = None
    mixture: dict[str, Any] | None = None


@dataclass
class ValSet:
    """Held-out windows validated on their own: one per mixture member, in that robot's units."""

    name: str  # "" for a single dataset (metric keys stay val/action_mse)
    dataset: Dataset
    normalizer: Any
    collate_fn: Callable[[list[Batch]], Batch] | None = None
    action_names: list[str] | None = None
    tasks: list[str] = field(default_factory=list)


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
    parts = (build or build_parts)(cfg)
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
        wrapped_lora = adapters.apply_lora(
            model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target, cfg.lora.dropout
        )
        say(f"LoRA rank {cfg.lora.rank} on {len(wrapped_lora)} linear layers")
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

    logger = RunLogger(run_dir, cfg.log, enabled=main, config=cfg.to_dict())
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


# ---- validation ---------------------------------------------------------------------------


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


# ---- data ---------------------------------------------------------------------------------


def per_rank_batch(cfg: TrainConfig, dist: distributed.DistInfo) -> int:
    if cfg.batch_size % dist.world_size:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is not divisible by the {dist.world_size} processes; "
            "batch_size is the global batch per micro-step"
        )
    return cfg.batch_size // dist.world_size


def first_batch(parts: TrainingParts, batch_size: int) -> Batch:
    n = min(batch_size, len(parts.train_dataset))  # type: ignore[arg-type]
    collate = parts.collate_fn or torch.utils.data.default_collate
    return collate([parts.train_dataset[i] for i in range(n)])


def batch_stream(
    parts: TrainingParts,
    cfg: TrainConfig,
    dist: distributed.DistInfo,
    micro_bs: int,
    epoch: int,
    batch_in_epoch: int,
    num_workers: int = 0,
) -> Generator[tuple[int, int, Batch], None, None]:
    """Yield (epoch, batches consumed in this epoch, batch) forever, resumable mid-epoch.

    The order is a pure function of (seed, epoch): ``DistributedSampler`` shards one shuffled
    permutation across ranks, and the first ``batch_in_epoch`` batches are skipped on resume.
    One DataLoader serves every epoch (``EpochBatches`` runs on), so data workers start once
    instead of once per epoch (a small dataset has only a few batches per epoch).
    """
    from vlastack.data.dataset import worker_init

    num_samples = len(parts.train_dataset)  # type: ignore[arg-type]
    batches = EpochBatches(
        num_samples, dist, cfg.seed, micro_bs, epoch, batch_in_epoch, order=parts.epoch_indices
    )
    if batches.per_epoch == 0:
        raise DataError(
            f"the training split has {num_samples} samples, fewer than one batch of "
            f"{cfg.batch_size}; lower --batch_size or add episodes"
        )
    extra: dict[str, Any] = {}
    if num_workers > 0:
        # forkserver, not fork: a worker forked after a multi-threaded torch op inherits a broken
        # OpenMP pool; each worker decodes on one thread (data/dataset.py make_dataloader).
        extra = dict(
            multiprocessing_context="forkserver", worker_init_fn=worker_init, prefetch_factor=4
        )
    loader = DataLoader(
        parts.train_dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=parts.collate_fn,
        # Worker seeds come from this generator, not the global RNG, so resume is exact.
        generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch),
        pin_memory=dist.device.type == "cuda",
        **extra,
    )
    # Without workers the batches are read on a thread one step ahead, so decoding overlaps the
    # step (the decoders and torch ops release the GIL). Same batches in the same order.
    it = iter(loader) if num_workers > 0 or not _decodes(parts) else ReadAhead(iter(loader))
    try:
        while True:
            batch = next(it)
            batch_in_epoch += 1
            yield epoch, batch_in_epoch, batch
            if batch_in_epoch == batches.per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
    finally:
        if isinstance(it, ReadAhead):
            it.close()
        del it


class ReadAhead:
    """An iterator that computes its source's next item on a background thread while the caller
    works on the current one (one item ahead). Items come in the source's order; an exception
    raised by the source is raised by ``next`` for the item that raised it."""

    def __init__(self, source: Iterator[Any]) -> None:
        self._source = source
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vlastack-read")
        self._ahead: concurrent.futures.Future | None = None

    def _read(self) -> Any:
        return next(self._source)

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> Any:
        ahead = self._ahead or self._pool.submit(self._read)
        item = ahead.result()  # StopIteration and errors re-raise here
        self._ahead = self._pool.submit(self._read)
        return item

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


class EpochBatches(torch.utils.data.Sampler):
    """Index lists of ``micro_bs`` for epoch after epoch, starting at (epoch, batch_in_epoch).

    Each epoch is ``DistributedSampler(shuffle=True, seed, drop_last=True)`` at that epoch, cut
    into whole batches (the ragged tail is dropped), exactly as a fresh DataLoader per epoch.
    With ``order`` (a weighted mixture) epoch e is ``order(e)``, a pure function of the seed and
    e, dealt round-robin to the ranks; resume stays exact either way.
    """

    def __init__(
        self,
        num_samples: int,
        dist: distributed.DistInfo,
        seed: int,
        micro_bs: int,
        epoch: int = 0,
        batch_in_epoch: int = 0,
        order: Callable[[int], Sequence[int]] | None = None,
    ) -> None:
        self.num_samples, self.dist, self.seed, self.micro_bs = num_samples, dist, seed, micro_bs
        self.epoch, self.batch_in_epoch = epoch, batch_in_epoch
        self.order = order
        self.per_epoch = len(self._epoch_indices(0)) // micro_bs

    def _epoch_indices(self, epoch: int) -> list[int]:
        if self.order is not None:
            idx = [int(i) for i in self.order(epoch)]
            world = self.dist.world_size
            return idx[self.dist.rank : len(idx) - len(idx) % world : world]
        sampler: DistributedSampler = DistributedSampler(
            range(self.num_samples),  # type: ignore[arg-type]
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.epoch, self.batch_in_epoch
        while True:
            idx = self._epoch_indices(epoch)
            for b in range(skip, self.per_epoch):
                yield idx[b * self.micro_bs : (b + 1) * self.micro_bs]
            epoch, skip = epoch + 1, 0


def cores_per_rank() -> int:
    """CPU cores this process may use, shared evenly by the ranks on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // local_ranks())


def local_ranks() -> int:
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def pick_workers(cfg: TrainConfig, parts: TrainingParts, device_type: str = "cpu") -> int:
    """``cfg.num_workers``, or for -1: one worker per two cores when samples decode images and the
    run is long enough (> 50 steps) to repay starting them (~2-5 s each); else 0. At most 4 on a
    CPU, where workers take cores from the step itself; at most 8 on a GPU, where the step leaves
    the cores idle and decoding is what a small policy waits on.

    Samples from the frozen-feature cache or without cameras are in memory: workers only add IPC.
    """
    if cfg.num_workers >= 0:
        return cfg.num_workers
    if not _decodes(parts) or cfg.steps * cfg.grad_accum <= 50:
        return 0
    return min(4 if device_type == "cpu" else 8, max(1, cores_per_rank() // 2))


def _decodes(parts: TrainingParts) -> bool:
    """Samples decode camera frames (not in memory: no frozen-feature cache, cameras present)."""
    return bool(getattr(parts.train_dataset, "image_keys", None))


def pick_threads(cfg: TrainConfig, other_load: float, num_workers: int) -> int:
    """``cfg.num_threads``, or for 0: the cores this rank can have to itself, at least 1.

    That is (cores / local ranks) - data workers - other processes' load (1-min load average
    ``other_load``, read at the start of the run, shared by the local ranks).
    Measured on the 2-core CI box under load 8-10: a cpu_default step takes 2.5 s with torch's
    default 2 threads (OpenMP threads spin-waiting for a core) and 0.1 s with 1 thread.
    """
    if cfg.num_threads > 0:
        return cfg.num_threads
    per_rank = cores_per_rank()
    return max(1, min(per_rank - num_workers, round(per_rank - other_load / local_ranks())))


def episode_indices(batch: Batch) -> list[int]:
    e = batch.get("episode_index")
    return [int(x) for x in torch.as_tensor(e).reshape(-1).tolist()] if e is not None else []


# ---- building from a recipe ---------------------------------------------------------------


def build_parts(cfg: TrainConfig) -> TrainingParts:
    """Dataset, normalizer and model from ``cfg.recipe`` and ``cfg.data``, checked to fit."""
    if not cfg.recipe:
        raise ConfigError("no recipe given; run `vlastack list recipes` and pass one by name")
    if not cfg.data:
        raise ConfigError("no dataset given; pass --data PATH (a vlastack / LeRobot v3 dataset)")
    specs = parse_data(cfg.data)
    if len(specs) > 1:
        return build_mixture_parts(cfg, specs)
    from vlastack.data.dataset import WindowedDataset, collate, split_episodes
    from vlastack.data.format import DatasetReader
    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe

    root = Path(specs[0].path)
    reader = DatasetReader(root)
    emb = reader.embodiment or embodiment_from_features(reader)
    recipe = get_recipe(cfg.recipe, **cfg.model)
    vla_cfg = fit_model_config(recipe.model, emb)
    check_recipe_fits(cfg.recipe, vla_cfg, reader, emb)
    train_eps, val_eps = split_episodes(reader.num_episodes, cfg.val_fraction, cfg.seed)
    image_keys = [f"observation.images.{c}" for c in vla_cfg.cameras]
    windows = dict(
        obs_horizon=vla_cfg.obs_horizon,
        action_horizon=vla_cfg.action_horizon,
        image_keys=image_keys,
        image_size=tuple(vla_cfg.image_size) if image_keys else None,
    )
    train_ds = WindowedDataset(reader, episodes=train_eps, **windows)  # type: ignore[arg-type]
    val_ds = WindowedDataset(reader, episodes=val_eps, **windows) if val_eps else None  # type: ignore[arg-type]
    normalizer = Normalizer(
        reader.stats, recipe.normalization, source=str(root / "meta" / "stats.json")
    )
    model = build_vla(vla_cfg)
    check_action_range(model, recipe.normalization, reader.stats, str(root / "meta" / "stats.json"))
    if cfg.cache_vision_features and cfg.lora is None and model.vision is not None:
        from vlastack.training.feature_cache import cached_datasets, can_cache

        if "vision" in cfg.freeze:
            model.vision.requires_grad_(False)
        if can_cache(model):
            print("vision encoder is frozen: encoding every frame once (cache_vision_features)")
            both = cached_datasets(
                model, [train_ds] + ([val_ds] if val_ds is not None else []), progress=cfg.progress
            )
            train_ds, val_ds = both[0], (both[1] if val_ds is not None else None)  # type: ignore[assignment]
    return TrainingParts(
        model=model,
        train_dataset=train_ds,
        val_dataset=val_ds,
        normalizer=normalizer,
        embodiment=emb,
        model_config=vla_cfg.to_dict(),
        collate_fn=collate,
        tasks=list(reader.tasks),
        action_names=list(emb.action.names),
        uses_language=vla_cfg.language != "none",
        recipe_extra=dict(recipe.extra),
    )


def build_mixture_parts(cfg: TrainConfig, specs: list[DataSpec]) -> TrainingParts:
    """Several datasets (robots) in one training stream (data/mixture.py, as Octo and π0 do).

    Each member must fit the recipe on its own (cameras, language, state, horizons) and is
    normalized with its own stats; the model gets the largest state/action size and the union
    of cameras (by name; a member lacking one gets zero images). Sampling: explicit weights are
    each member's share of the samples; without them every window is equally likely (shares
    proportional to size, like concatenating the datasets). Held-out episodes are split per
    member and validated per member in that robot's units.
    """
    from functools import partial

    from torch.utils.data import ConcatDataset

    from vlastack.data.dataset import WindowedDataset, collate, split_episodes
    from vlastack.data.format import DatasetReader
    from vlastack.data.mixture import DatasetMixture, MixtureNormalizer, PaddedView
    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe

    recipe = get_recipe(cfg.recipe, **cfg.model)
    names = member_names([s.path for s in specs])
    readers, embs = [], []
    for spec in specs:
        reader = DatasetReader(Path(spec.path))
        emb = reader.embodiment or embodiment_from_features(reader)
        try:
            own = fit_model_config(recipe.model, emb)
        except ConfigError as exc:
            raise ConfigError(f"{reader.root}: {exc}") from None
        check_recipe_fits(cfg.recipe, own, reader, emb)
        readers.append(reader)
        embs.append(emb)
    h, w = (int(x) for x in recipe.model.image_size)
    merged, resized = merge_embodiments(embs, (h, w))
    if resized:
        print(
            f"mixture: cameras differ in size ({', '.join(resized)}); every image is resized "
            f"to the recipe's {h}x{w} (set --model.image_size=H,W to choose)"
        )
    vla_cfg = fit_model_config(recipe.model, merged)
    all_keys = [f"observation.images.{c}" for c in vla_cfg.cameras]
    trains: list[Any] = []
    vals: list[Any] = []
    normalizers = []
    for reader in readers:
        keys = [k for k in all_keys if k in reader.camera_keys]
        windows: dict[str, Any] = dict(
            obs_horizon=vla_cfg.obs_horizon,
            action_horizon=vla_cfg.action_horizon,
            image_keys=keys,
            image_size=tuple(vla_cfg.image_size) if keys else None,
        )
        train_eps, val_eps = split_episodes(reader.num_episodes, cfg.val_fraction, cfg.seed)
        train_ds = WindowedDataset(reader, episodes=train_eps, **windows)
        if len(train_ds) == 0:
            raise DataError(
                f"{reader.root}: no training windows after holding out {len(val_eps)} episodes; "
                "add episodes, lower --val_fraction, or drop this dataset from --data"
            )
        trains.append(train_ds)
        vals.append(WindowedDataset(reader, episodes=val_eps, **windows) if val_eps else None)
        normalizers.append(
            Normalizer(
                reader.stats, recipe.normalization, source=str(reader.root / "meta" / "stats.json")
            )
        )
    model = build_vla(vla_cfg)
    for reader in readers:
        check_action_range(
            model, recipe.normalization, reader.stats, str(reader.root / "meta" / "stats.json")
        )
    if cfg.cache_vision_features and cfg.lora is None and model.vision is not None:
        from vlastack.training.feature_cache import cached_datasets, can_cache

        if "vision" in cfg.freeze:
            model.vision.requires_grad_(False)
        lacking = [n for n, r in zip(names, readers) if set(all_keys) - set(r.camera_keys)]
        if can_cache(model) and lacking:
            print(f"not caching vision features: {lacking} lack some of the cameras {all_keys}")
        elif can_cache(model):
            print("vision encoder is frozen: encoding every frame once (cache_vision_features)")
            for i in range(len(trains)):
                pair = [trains[i]] + ([vals[i]] if vals[i] is not None else [])
                both = cached_datasets(model, pair, progress=cfg.progress)
                trains[i], vals[i] = both[0], (both[1] if vals[i] is not None else None)
    explicit = all(s.weight is not None for s in specs)
    sizes = [len(t) for t in trains]
    weights = [float(s.weight) if s.weight is not None else float(n) for s, n in zip(specs, sizes)]
    mixture = DatasetMixture(
        list(zip(trains, weights)),
        pad_state_dim=vla_cfg.state_dim or None,
        pad_action_dim=vla_cfg.action_dim,
    )
    normalizer = MixtureNormalizer(
        normalizers,
        names,
        {"observation.state": mixture.state_dim, "action": mixture.action_dim},
    )
    tasks = sorted({t for r in readers for t in r.tasks if t.strip()})
    val_sets = [
        ValSet(
            name,
            PaddedView(mixture, val, i),
            normalizer.member(i),
            partial(collate_own_actions, action_dim=mixture.action_dims[i]),
            list(embs[i].action.names),
            tasks,
        )
        for i, (name, val) in enumerate(zip(names, vals))
        if val is not None and len(val)
    ]
    order = None
    if explicit:
        sampler = mixture.sampler(num_samples=len(mixture), seed=cfg.seed)

        def order(epoch: int) -> list[int]:
            sampler.set_epoch(epoch)
            return list(sampler)

    members = []
    print(f"mixture of {len(specs)} datasets ({'by weight' if explicit else 'by size'}):")
    for i, (name, reader, emb) in enumerate(zip(names, readers, embs)):
        share = float(mixture.weights[i])
        members.append(
            {
                "name": name,
                "dataset": str(reader.root),
                "weight": share,
                "train_windows": sizes[i],
                "state_dim": int(mixture.state_dims[i]),
                "action_dim": int(mixture.action_dims[i]),
                "cameras": [
                    c for c in vla_cfg.cameras if f"observation.images.{c}" in reader.camera_keys
                ],
                "embodiment": emb.to_dict(),
            }
        )
        print(
            f"  {name:<20} {share:6.1%} of samples  {sizes[i]:>7} windows  "
            f"state {mixture.state_dims[i]}/{mixture.state_dim}  "
            f"action {mixture.action_dims[i]}/{mixture.action_dim}  {reader.root}"
        )
    return TrainingParts(
        model=model,
        train_dataset=mixture,
        val_dataset=ConcatDataset([vs.dataset for vs in val_sets]) if val_sets else None,
        normalizer=normalizer,
        embodiment=embs[0],
        model_config=vla_cfg.to_dict(),
        collate_fn=collate,
        tasks=tasks,
        action_names=list(merged.action.names),
        uses_language=vla_cfg.language != "none",
        recipe_extra=dict(recipe.extra),
        val_sets=val_sets,
        epoch_indices=order,
        mixture={"default": names[0], "members": members},
    )


def member_names(paths: list[str]) -> list[str]:
    """A short unique name per dataset: its folder name, suffixed -2, -3 on a clash."""
    out: list[str] = []
    for p in paths:
        base = Path(p).resolve().name or "dataset"
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def merge_embodiments(
    embs: list[EmbodimentSpec], image_size: tuple[int, int]
) -> tuple[EmbodimentSpec, list[str]]:
    """One spec the model can be built for: largest state/action, the union of camera names.

    Cameras of one size keep it; when sizes differ all get ``image_size`` and the differing
    ``name HxW`` are returned so the caller can say so.
    """
    from vlastack.embodiment import CameraSpec, VectorSpec

    cams: dict[str, CameraSpec] = {}
    for e in embs:
        for c in e.cameras:
            cams.setdefault(c.name, c)
    sizes = {(c.height, c.width) for e in embs for c in e.cameras}
    resized: list[str] = []
    if len(sizes) > 1:
        resized = sorted({f"{c.name} {c.height}x{c.width}" for e in embs for c in e.cameras})
        h, w = image_size
        cams = {n: dataclasses.replace(c, height=h, width=w) for n, c in cams.items()}

    def widest(vecs: list[VectorSpec]) -> VectorSpec:
        big = max(vecs, key=lambda v: v.dim)
        grips = {v.gripper_index for v in vecs}
        return VectorSpec(list(big.names), gripper_index=grips.pop() if len(grips) == 1 else None)

    merged = EmbodimentSpec(
        robot_type="+".join(dict.fromkeys(e.robot_type for e in embs)),
        cameras=list(cams.values()),
        state=widest([e.state for e in embs]),
        action=widest([e.action for e in embs]),
        control_hz=embs[0].control_hz,
    )
    return merged, resized


def collate_own_actions(samples: list[Batch], action_dim: int) -> Batch:
    """Collate a member's held-out windows and cut ``action`` back to that robot's size, so
    open-loop errors are per real dimension in its units (the model input stays padded)."""
    from vlastack.data.dataset import collate

    batch = collate(samples)
    batch["action"] = batch["action"][..., :action_dim]
    batch["action_dim_mask"] = batch["action_dim_mask"][..., :action_dim]
    return batch


def fit_model_config(model_cfg: Any, emb: EmbodimentSpec) -> Any:
    """The recipe's model config with the dataset's sizes (``config_for_embodiment``).

    Cameras of different sizes are all resized to the recipe's image_size by the dataset.
    """
    from vlastack.models.vla import config_for_embodiment

    if len({(c.height, c.width) for c in emb.cameras}) > 1:
        h, w = model_cfg.image_size
        emb = dataclasses.replace(
            emb, cameras=[dataclasses.replace(c, height=h, width=w) for c in emb.cameras]
        )
    return config_for_embodiment(model_cfg, emb)


def embodiment_from_features(reader: Any) -> EmbodimentSpec:
    """An embodiment read off info.json features, for datasets without meta/embodiment.json."""
    from vlastack.embodiment import CameraSpec, VectorSpec

    feats = reader.features
    for key in ("action",):
        if key not in feats:
            raise DataError(f"{reader.root}/meta/info.json: no '{key}' feature; cannot train")

    def vec(key: str) -> VectorSpec:
        f = feats.get(key)
        if f is None:
            return VectorSpec(["none"])
        n = int(np.prod(f.shape)) if f.shape else 1
        names = list(f.names) if f.names and len(f.names) == n else [f"{key}_{i}" for i in range(n)]
        return VectorSpec(names)

    cams = []
    for k in reader.camera_keys:
        h, w, c = feats[k].shape
        cams.append(CameraSpec(k.removeprefix("observation.images."), int(h), int(w), int(c)))
    return EmbodimentSpec(
        robot_type=str(reader.info.get("robot_type") or "unknown"),
        cameras=cams,
        state=vec("observation.state"),
        action=vec("action"),
        control_hz=float(reader.fps),
    )


def check_action_range(
    model: Any, modes: Mapping[str, str], stats: Mapping[str, Any], source: str
) -> None:
    """Refuse a head that cannot output the data's actions: diffusion clips x̂0 to ±clip_range and
    the bins cover [−1, 1] in normalized units, while mean-std normalization leaves actions
    unbounded. If the 1st/99th percentile (else min/max) of a dim lies outside the head's range,
    every action beyond it would be clipped: the policy trains, then moves too little, silently.
    Min-max and quantile normalization map the data into [−1, 1] by construction."""
    limit = getattr(model, "action_output_range", None)
    if limit is None or modes.get("action") != "mean_std" or "action" not in stats:
        return
    st = stats["action"]
    if not all(k in st for k in ("mean", "std")):
        return
    lo_key, hi_key = ("q01", "q99") if "q01" in st and "q99" in st else ("min", "max")
    if lo_key not in st:
        return
    mean = np.asarray(st["mean"], dtype=np.float64).reshape(-1)
    std = np.maximum(np.asarray(st["std"], dtype=np.float64).reshape(-1), 1e-8)
    z = np.maximum(
        np.abs((np.asarray(st[lo_key], dtype=np.float64).reshape(-1) - mean) / std),
        np.abs((np.asarray(st[hi_key], dtype=np.float64).reshape(-1) - mean) / std),
    )
    bad = [int(i) for i in np.flatnonzero(z > limit + 1e-6)]
    if bad:
        worst = ", ".join(f"dim {i}: ±{z[i]:.2f}" for i in bad[:6])
        raise ConfigError(
            f"{source}: the action head outputs normalized actions within ±{limit:g} "
            f"({model.action_range_reason}), but mean-std normalization puts this dataset's "
            f"{lo_key}/{hi_key} actions at {worst} (in std units): they could never be "
            "produced. Use --model.normalization.action=min_max (Diffusion Policy) or quantile "
            "(OpenVLA), or for the diffusion head widen --model.head_kwargs.clip_range (Octo "
            "clips at 5)"
        )


def check_recipe_fits(name: str, vla_cfg: Any, reader: Any, emb: EmbodimentSpec) -> None:
    """Errors before training for a recipe that cannot read this dataset."""
    where = f"{reader.root}"
    if reader.num_episodes == 0 or reader.num_frames == 0:
        raise DataError(f"{where}: the dataset has no episodes; record or convert some first")
    missing = [c for c in vla_cfg.cameras if f"observation.images.{c}" not in reader.camera_keys]
    if missing:
        raise DataError(
            f"{where}: recipe '{name}' needs cameras {missing}, the dataset has "
            f"{reader.camera_keys}; set --model.cameras=[...] or convert with those cameras"
        )
    if vla_cfg.state_dim > 0 and "observation.state" not in reader.features:
        raise DataError(
            f"{where}: recipe '{name}' reads observation.state but the dataset has none; "
            "pick a recipe without state or pass --model.state_dim=0"
        )
    if vla_cfg.language != "none" and not any(t.strip() for t in reader.tasks):
        raise DataError(
            f"{where}: recipe '{name}' is language-conditioned but the dataset has no task "
            "instructions (meta/tasks.parquet is empty); add tasks or pick a recipe without "
            "language (e.g. diffusion_policy, act)"
        )
    lengths = [e.length for e in reader.episodes]
    if max(lengths) < vla_cfg.action_horizon:
        raise DataError(
            f"{where}: the longest episode has {max(lengths)} frames, shorter than the recipe's "
            f"action_horizon {vla_cfg.action_horizon}: every chunk would be mostly padding. "
            "Lower --model.action_horizon or record longer episodes"
        )


def check_fits(parts: TrainingParts, cfg: TrainConfig) -> None:
    """Clear errors, before any step, when the data cannot feed the model."""
    n = len(parts.train_dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(
            f"{cfg.data or 'dataset'}: the training split has no samples; the dataset is empty "
            "or every episode is shorter than the horizons. Lower the horizons or add episodes"
        )
    if n < cfg.batch_size:
        raise DataError(
            f"{cfg.data or 'dataset'}: the training split has {n} windows but batch_size is "
            f"{cfg.batch_size}; lower --batch_size or add episodes"
        )
    fits = getattr(parts.model, "check_batch", None)
    if callable(fits):
        fits(first_batch(parts, 1))


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


def install_stop_handlers(flag: list[str]) -> dict[int, Any]:
    """SIGTERM / SIGINT set ``flag``; the loop saves and stops after the current step.

    A second Ctrl-C interrupts immediately (the usual escape hatch).
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.append(name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    for sig, h in previous.items():
        signal.signal(sig, h)
