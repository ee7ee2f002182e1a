"""``heads``: the same recipe backbone, data and training budget for each action head, trained and
evaluated (survey: "real-time performance analysis" / action-head comparison).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.experiments.common import write_json
from vlastack.experiments.page import (
    MEMORY_NOTE,
    SuccessCell,
    aggregate_runs,
    bar_plot,
    num,
    record_counts,
    scatter_plot,
    spread_text,
    success_text,
    write_section,
)
from vlastack.experiments.prepare import (
    ensure_dataset,
    finished_run,
    mem_est_mb,
    record_finished_run,
    split_envs,
    train_one,
)
from vlastack.image_size import DEFAULT_IMAGE_SIZE

DEFAULT_HEADS = ("l1", "act", "diffusion", "diffusion_unet", "flow_matching", "bins", "fast")
# suite names for one head class with other settings: (registered head, its extra head_kwargs)
HEAD_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "diffusion_unet": ("diffusion", {"denoiser": "unet"}),  # DP-C's 1-D U-Net denoiser
}


HEAD_METRICS = (
    "mean_squared_jerk",
    "chunk_jump",
    "latency_p50_ms",
    "latency_p95_ms",
    "train_mem_est_mb",
    "train_peak_rss_mb",
    "train_s",
    "params_total",
)


def base_head(name: str) -> str:
    """The registered action head behind a suite head name (``diffusion_unet`` -> diffusion)."""
    return HEAD_VARIANTS[name][0] if name in HEAD_VARIANTS else name


def head_kwargs(head: str, base: dict[str, Any]) -> dict[str, Any]:
    """The recipe head's size (width/depth/num_heads) plus each head's own sampler settings
    (``ActionHead.suite_kwargs`` of the head's class) and a variant's own settings."""
    from vlastack.models.action_heads import head_class

    size: dict[str, Any] = {k: base[k] for k in ("width", "num_heads") if k in base}
    kw = dict(head_class(base_head(head)).suite_kwargs(size, int(base.get("depth", 2))))
    if head in HEAD_VARIANTS:
        kw.update(HEAD_VARIANTS[head][1])
    return kw


def head_action_normalization(head: str) -> str | None:
    """The action normalization ``head`` was published with where it needs a bounded range
    (``ActionHead.suite_action_normalization``: diffusion min-max, bins / FAST quantiles); None
    keeps the recipe's (mean-std for `demo`)."""
    from vlastack.models.action_heads import head_class

    return head_class(base_head(head)).suite_action_normalization


def heads(
    env: str,
    *,
    heads: list[str] | None = None,
    recipe: str = "demo",
    data: str | Path | None = None,
    collect_episodes: int = 20,
    steps: int = 500,
    max_minutes: float | None = None,
    episodes_per_task: int = 10,
    seed: int = 0,
    seeds: list[int] | None = None,
    workers: int = 1,
    executor: Any = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    max_steps: int | None = None,
    out_dir: str | Path = "results/heads",
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``recipe`` once per action head and training seed (same backbone, data, steps /
    minutes) and evaluate each on ``env`` (evaluation seeds from ``seed``, the same for every
    head). Writes ``out_dir/<head>/seed<k>/`` (train run + ``eval/``), ``heads.json``, and the
    page (``section.md``, ``heads_success.png``, ``heads_latency.png``)."""
    from vlastack.evaluation.rollout import evaluate
    from vlastack.models.action_heads import ACTION_HEADS as HEADS
    from vlastack.recipes import get_recipe

    heads = list(heads or DEFAULT_HEADS)
    unknown = [h for h in heads if base_head(h) not in HEADS]
    if unknown:
        raise ConfigError(
            f"unknown action head(s) {unknown}; known: {sorted(HEADS) + sorted(HEAD_VARIANTS)}"
        )
    if steps < 1:
        raise ConfigError(f"steps={steps} must be >= 1")
    train_seeds = list(seeds) if seeds else [seed]
    from vlastack.envs import list_tasks

    tasks = [t for name in split_envs(env) for t in list_tasks(name)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = ensure_dataset(
        env,
        data,
        out / "data",
        episodes_per_task=collect_episodes,
        image_size=image_size,
        seed=seed,
        workers=workers,
        progress=progress,
        executor=executor,
    )
    base = get_recipe(recipe)
    runs: list[dict[str, Any]] = []
    for head in heads:
        for ts in train_seeds:
            budget = {
                "recipe": recipe,
                "head": head,
                "data": str(dataset),
                "steps": steps,
                "max_minutes": max_minutes,
                "tasks": tasks,
                "episodes_per_task": episodes_per_task,
                "seed": seed,
                "max_steps": max_steps,
            }
            done = finished_run(out / head / f"seed{ts}", budget)
            if done is not None:
                if progress:
                    print(f"[heads] {head} seed {ts}: finished earlier, reusing it")
                runs.append(done)
                continue
            if progress:
                print(f"[heads] {head} seed {ts}: training {steps} steps of recipe {recipe}")
            kw = head_kwargs(head, base.model.head_kwargs)
            model: dict[str, Any] = {"head": base_head(head), "head_kwargs": kw}
            norm = head_action_normalization(head)
            if norm is not None:
                model["normalization"] = {"action": norm}
            run_dir = out / head / f"seed{ts}"
            result, train_s, mem = train_one(
                recipe,
                dataset,
                run_dir,
                steps=steps,
                max_minutes=max_minutes,
                model=model,
                seed=ts,
                progress=progress,
            )
            if result.last_checkpoint is None:
                raise ConfigError(f"heads: training {head} wrote no checkpoint under {run_dir}")
            params = {k: int(v[0]) for k, v in result.param_counts.items()}
            run_info = {
                "kind": "heads",
                "head": head,
                "recipe": recipe,
                "train_seed": ts,
                "train_s": round(train_s, 2),
                "train_steps": result.step,
                "train_budget": {"steps": steps, "max_minutes": max_minutes},
                "train_peak_rss_mb": mem.peak_mb,
                "params": params,
                "final_loss": float(np.mean(result.losses[-10:])) if result.losses else None,
            }
            res = evaluate(
                str(result.last_checkpoint),
                tasks[0],
                tasks=tasks,
                episodes_per_task=episodes_per_task,
                seed=seed,
                workers=workers,
                executor=executor,
                image_size=None,  # the size it was trained at (the data's: --data may differ)
                max_steps=max_steps,
                out_dir=run_dir / "eval",
                label=f"{head} seed {ts}",
                run_info=run_info,
                progress=progress,
            )
            o = res.summary["overall"]
            succ, n = record_counts(res.records)
            runs.append(
                {
                    "head": head,
                    "train_seed": ts,
                    "successes": succ,
                    "episodes": n,
                    "mean_squared_jerk": o["mean_squared_jerk"],
                    "chunk_jump": o["chunk_jump"],
                    "latency_p50_ms": o["latency"]["p50_ms"],
                    "latency_p95_ms": o["latency"]["p95_ms"],
                    "train_peak_rss_mb": mem.peak_mb,
                    "train_mem_est_mb": mem_est_mb(result),
                    "train_peak_cuda_mb": mem.peak_cuda_mb,
                    "train_s": round(train_s, 2),
                    "train_steps": result.step,
                    "params_total": params.get("total"),
                    "params_head": params.get("head"),
                    "eval_dir": str(run_dir / "eval"),
                }
            )
            record_finished_run(run_dir, budget, runs[-1])
    rows = aggregate_runs(runs, "head", heads, HEAD_METRICS)
    table = {
        "suite": "heads",
        "env": env,
        "tasks": tasks,
        "recipe": recipe,
        "data": str(dataset),
        "budget": {"steps": steps, "max_minutes": max_minutes},
        "train_seeds": train_seeds,
        "episodes_per_task": episodes_per_task,
        "runs": runs,
        "rows": rows,
    }
    write_json(out / "heads.json", table)
    write_heads_page(out, table)
    return table


def write_heads_page(out: Path, table: dict[str, Any]) -> Path:
    """``section.md`` + ``heads_success.png`` (bars) + ``heads_latency.png`` (success vs p50)."""
    rows = table["rows"]
    cells = [SuccessCell.from_dict(r["success"]) for r in rows]
    labels = [r["head"] for r in rows]
    title = f"Action heads on {table['env']} ({table['recipe']} backbone)"
    plots = [bar_plot(out / "heads_success.png", labels, cells, title=title)]
    plots.append(
        scatter_plot(
            out / "heads_latency.png",
            labels,
            [r["latency_p50_ms"] for r in rows],
            cells,
            title="success vs inference latency (p50 per chunk)",
            xlabel="p50 latency per chunk (ms)",
        )
    )
    b = table["budget"]
    budget = f"{b['steps']} steps" + (f" or {b['max_minutes']} min" if b["max_minutes"] else "")
    return write_section(
        out,
        title=title,
        setup=[
            f"tasks: {len(table['tasks'])} ({', '.join(table['tasks'][:10])}"
            + (", ..." if len(table["tasks"]) > 10 else "")
            + ")",
            f"training: recipe `{table['recipe']}`, {budget} per head and seed, seeds "
            f"{table['train_seeds']}, data `{table['data']}`",
            f"evaluation: {table['episodes_per_task']} episodes per task per seed, the same "
            "episode seeds for every head",
        ],
        columns=[
            "head",
            "success % [95% CI] (succ/n)",
            "seed spread",
            "jerk (u/s³)²",
            "chunk jump",
            "p50 ms",
            "p95 ms",
            "train mem est. MB",
            "process peak RSS MB",
            "train s",
            "params",
        ],
        rows=[
            [
                r["head"],
                success_text(c),
                spread_text(c.per_seed),
                num(r["mean_squared_jerk"], sig=True),
                num(r["chunk_jump"], nd=3),
                num(r["latency_p50_ms"]),
                num(r["latency_p95_ms"]),
                num(r["train_mem_est_mb"], nd=0),
                num(r["train_peak_rss_mb"], nd=0),
                num(r["train_s"], nd=0),
                "-" if r["params_total"] is None else f"{r['params_total'] / 1e6:.2f}M",
            ]
            for r, c in zip(rows, cells)
        ],
        plots=plots,
        notes=[
            "Jerk, chunk jump (‖a_first of a chunk − a_last of the previous‖), latency, memory "
            "and time are means over seeds. " + MEMORY_NOTE,
        ],
    )


__all__ = [
    "DEFAULT_HEADS",
    "HEAD_VARIANTS",
    "base_head",
    "head_action_normalization",
    "head_kwargs",
    "heads",
    "write_heads_page",
]
