"""Closed-loop rollouts of a policy in simulated environments: ``evaluate``.

``evaluate`` runs ``episodes_per_task`` episodes per task with seeds ``seed + task_index *
stride + episode``, executes ``execute_horizon`` actions of each predicted chunk (or ensembles
chunks, ACT-style), records per-episode metrics, videos, a manifest of the protocol, and
aggregates. A crashed episode or worker is retried once, then recorded as ``error``.

The parts live in their own modules: ``loading`` (env modules, tasks, policies from
checkpoints), ``remap`` (embodiment mismatches), ``episode`` (one episode), ``pool`` (worker
processes and retries), ``results`` (the results folder), ``manifest`` (the protocol). The names
callers import from here (``evaluate``, ``load_policy``, ``EvalResults``, ...) are re-exported.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError
from vlastack.evaluation.episode import EpisodeRunner, Job, RunSpec
from vlastack.evaluation.loading import (
    PolicyFactory,
    PolicyLike,
    check_embodiment_name,
    checkpoint_embodiment,
    checkpoint_label,
    difficulty,
    env_module,
    load_policy,
    mixture_members,
    policy_embodiment,
    resolve_checkpoint_dir,
    resolve_tasks,
)
from vlastack.evaluation.manifest import build_manifest
from vlastack.evaluation.metrics import EpisodeRecord, summarize
from vlastack.evaluation.pool import MAX_ATTEMPTS, run_jobs
from vlastack.evaluation.results import (
    EvalResults,
    finished_records,
    initial_states,
    resolved_horizons,
    run_timing,
    start_results_folder,
    write_results_folder,
)
from vlastack.executors import ExecutorChoice, as_choice
from vlastack.image_size import choose_image_size, trained_image_size

ACTION_REMAP_MODES = ("strict", "pad")


def episode_seed(seed: int, task_index: int, episode: int, episodes_per_task: int) -> int:
    """Deterministic seed of one episode: seed + task offset + episode."""
    stride = max(1000, episodes_per_task)
    return seed + task_index * stride + episode


def check_weights_readable(checkpoint: str | Path) -> None:
    """A native checkpoint whose weights file is truncated or corrupt is a ``DataError`` here,
    before any episode runs (not one error per episode, logged only in ``episodes.jsonl``)."""
    from vlastack.checkpoints import check_safetensors
    from vlastack.policy_formats import detect_policy_format

    weights = Path(checkpoint) / "model.safetensors"
    if weights.is_file() and detect_policy_format(checkpoint) is None:
        check_safetensors(weights)


def make_jobs(
    env: str,
    tasks: list[str],
    episodes_per_task: int,
    seed: int,
    video_episodes_per_task: int,
    seeds: dict[str, list[int]] | None = None,
) -> list[Job]:
    jobs = []
    for ti, task in enumerate(tasks):
        diff = difficulty(env, task)
        for ep in range(episodes_per_task):
            s = seeds[task][ep] if seeds else episode_seed(seed, ti, ep, episodes_per_task)
            jobs.append(Job(task, ti, ep, s, ep < video_episodes_per_task, difficulty=diff))
    return jobs


def two_rate_overall(records: list[EpisodeRecord]) -> dict[str, Any] | None:
    """Over the episodes run at two rates: the rates, System 2 runs in all and per episode,
    and the per-tick latency (every tick of every episode) p50/p99/max in ms."""
    import numpy as np

    parts = [r.extra["high_level"] for r in records if r.extra.get("high_level")]
    if not parts:
        return None
    ticks = np.asarray([t for p in parts for t in p.get("tick_ms", [])], dtype=np.float64)
    runs = [int(p["high_level_runs"]) for p in parts]
    pct = (lambda q: round(float(np.percentile(ticks, q)), 3)) if ticks.size else (lambda q: None)
    return {
        **{k: parts[0][k] for k in ("high_level_hz", "control_hz", "high_level_async", "strategy")},
        "episodes": len(parts),
        "high_level_runs": sum(runs),
        "high_level_runs_per_episode": round(sum(runs) / len(parts), 2),
        "high_level_skipped": sum(int(p.get("high_level_skipped", 0)) for p in parts),
        "ticks": int(ticks.size),
        "tick_ms_p50": pct(50),
        "tick_ms_p99": pct(99),
        "tick_ms_max": pct(100),
    }


def evaluate(
    policy: str | Path | PolicyFactory,
    env: str,
    *,
    episodes_per_task: int = 10,
    seed: int = 0,
    workers: int = 1,
    execute_horizon: int | None = None,
    ensemble: bool = False,
    max_steps: int | None = None,
    image_size: tuple[int, int] | None = None,
    camera: str | None = None,
    video_episodes_per_task: int = 0,
    out_dir: str | Path | None = None,
    action_remap: str = "strict",
    clip_actions: bool = True,
    tasks: list[str] | None = None,
    seeds: dict[str, list[int]] | None = None,
    condition: str = "default",
    label: str | None = None,
    run_info: dict[str, Any] | None = None,
    episode_timeout_s: float | None = None,
    progress: bool = True,
    video_fps: float = 20.0,
    embodiment: str | None = None,
    threads: int | None = None,
    executor: str | ExecutorChoice | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    high_level_hz: float | None = None,
    high_level_async: bool = False,
) -> EvalResults:
    """Roll out ``policy`` (checkpoint folder or picklable zero-arg factory) on ``env``.

    ``env`` is a task or a suite (expanded with ``list_tasks``; ``tasks`` overrides). ``workers=0``
    runs in this process (no crash isolation); ``workers>=1`` spawns that many processes, each
    building its own env and policy. Results go to ``out_dir`` when given: ``manifest.json``,
    ``episodes.jsonl``, ``summary.json``, ``videos/``. A checkpoint trained on a mixture of
    robots acts as the member matching the environment's embodiment, or ``embodiment`` (a
    member name or robot_type) when given. ``threads`` sets the policy's torch threads (default:
    the cores shared out among the workers; in-process, torch's own default).

    ``executor`` runs the episodes when ``workers >= 1``: ``"pool"`` (default, spawned processes)
    or ``"ray"`` (Ray tasks on a local instance with ``workers`` CPUs, or on the cluster at
    ``ray_address``); the episodes, seeds and records are the same. ``resume=True`` continues an
    interrupted run in ``out_dir``: the episodes its ``episodes.jsonl`` holds are kept, the rest
    run (the protocol must be the same).

    ``image_size`` (H, W) renders the cameras; None: the size the checkpoint was trained at
    (``image_size.trained_image_size``), or ``DEFAULT_IMAGE_SIZE`` for a policy factory. A size
    other than the trained one warns (``ImageSizeWarning``).

    ``high_level_hz`` runs a hierarchical policy at two rates (System 2 at that rate, System 1
    every env step at the env's control rate; ``high_level_async``: System 2 in a background
    thread), through ``serving.hierarchy.HierarchicalRuntime``.
    """
    choice = as_choice(executor, ray_address)
    if action_remap not in ACTION_REMAP_MODES:
        raise ConfigError(f"action_remap={action_remap!r}; expected one of {ACTION_REMAP_MODES}")
    if episodes_per_task < 1:
        raise ConfigError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if high_level_hz is not None and not high_level_hz > 0:
        raise ConfigError(f"high_level_hz must be > 0, got {high_level_hz}")
    if high_level_async and high_level_hz is None:
        raise ConfigError("high_level_async=True needs high_level_hz (two rates)")
    if execute_horizon is not None and execute_horizon < 1:
        raise ConfigError(f"execute_horizon must be >= 1, got {execute_horizon}")
    checkpoint = None if callable(policy) else str(policy)
    if checkpoint is not None:
        if not Path(checkpoint).exists():
            raise ConfigError(f"checkpoint {checkpoint} does not exist; pass a checkpoint folder")
        checkpoint = str(resolve_checkpoint_dir(checkpoint))
        check_weights_readable(checkpoint)
        if embodiment is not None:  # fail here, not in every worker
            check_embodiment_name(checkpoint, embodiment)
    task_list = list(tasks) if tasks else resolve_tasks(env)
    jobs = make_jobs(env, task_list, episodes_per_task, seed, video_episodes_per_task, seeds)
    ncpu = os.cpu_count() or 1
    spec = RunSpec(
        env=env,
        checkpoint=checkpoint,
        policy_factory=policy if callable(policy) else None,
        image_size=choose_image_size(
            image_size, trained_image_size(checkpoint) if checkpoint else None
        ),
        camera=camera,
        max_steps=max_steps,
        execute_horizon=execute_horizon,
        ensemble=ensemble,
        action_remap=action_remap,
        clip_actions=clip_actions,
        out_dir=str(out_dir) if out_dir else None,
        video_fps=video_fps,
        condition=condition,
        torch_threads=threads or (max(1, ncpu // max(1, workers)) if workers >= 1 else None),
        embodiment=embodiment,
        high_level_hz=high_level_hz,
        high_level_async=high_level_async,
    )
    manifest = build_manifest(
        spec,
        tasks=task_list,
        episodes_per_task=episodes_per_task,
        seed=seed,
        workers=workers,
        video_episodes_per_task=video_episodes_per_task,
        seeds={t: [j.seed for j in jobs if j.task == t] for t in task_list},
    )
    manifest["torch_threads"] = spec.torch_threads
    if workers >= 1:
        manifest["executor"] = choice.label
    out = Path(out_dir) if out_dir else None
    kept: list[EpisodeRecord] = []
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir, the folder of the run to continue")
    if resume and out is not None:
        kept = finished_records(out, manifest, jobs)
    if out:
        start_results_folder(out, manifest, kept)
    done = {(r.task, r.episode) for r in kept}
    jobs_left = [j for j in jobs if j.key not in done]

    t0 = time.perf_counter()
    records = kept + run_jobs(
        spec, jobs_left, workers, episode_timeout_s, progress, out, executor=choice
    )
    wall_s = time.perf_counter() - t0
    order = {j.key: i for i, j in enumerate(jobs)}
    records.sort(key=lambda r: order[(r.task, r.episode)])

    # Record what workers resolved (execute horizon from the checkpoint, remapping) and the
    # initial-state fingerprints that a re-run from this manifest must reproduce.
    manifest["protocol"]["execute_horizon_resolved"] = resolved_horizons(records)
    remaps = {r.task: r.extra["remap"] for r in records if r.extra.get("remap")}
    if remaps:
        manifest["protocol"]["action_remap_applied"] = remaps
    acted_as = sorted({r.extra["embodiment"] for r in records if r.extra.get("embodiment")})
    if embodiment is not None or acted_as:
        manifest["protocol"]["embodiment"] = embodiment
        manifest["protocol"]["embodiment_resolved"] = acted_as
    manifest["initial_states"] = initial_states(records)
    summary = summarize(records, baseline_condition=condition)
    summary["run"] = {
        "label": label or (checkpoint_label(checkpoint) if checkpoint else "policy"),
        "kind": "eval",
        "env": env,
        "checkpoint": checkpoint,
        "condition": condition,
        **({"embodiment": acted_as[0] if len(acted_as) == 1 else acted_as} if acted_as else {}),
        **(run_info or {}),
    }
    two_rate = two_rate_overall(records)
    if two_rate:
        summary["two_rate"] = two_rate
    summary["timing"] = run_timing(records, wall_s, workers)
    summary["timing"]["executor"] = choice.label if workers >= 1 else "inline"
    if resume:
        summary["timing"]["resumed_episodes"] = len(kept)
    if out:
        write_results_folder(out, manifest, records, summary)
    return EvalResults(records, summary, manifest, out)


__all__ = [
    "ACTION_REMAP_MODES",
    "MAX_ATTEMPTS",
    "EvalResults",
    "EpisodeRunner",
    "Job",
    "PolicyFactory",
    "PolicyLike",
    "RunSpec",
    "check_embodiment_name",
    "check_weights_readable",
    "checkpoint_embodiment",
    "checkpoint_label",
    "difficulty",
    "env_module",
    "episode_seed",
    "evaluate",
    "load_policy",
    "make_jobs",
    "mixture_members",
    "policy_embodiment",
    "resolve_checkpoint_dir",
    "resolve_tasks",
]
