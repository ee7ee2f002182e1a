"""``heads``: the same recipe backbone, data and training budget for each action head, trained and
evaluated (survey: "real-time performance analysis" / action-head comparison).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.experiments.common import (
    fmt,
    print_table,
    write_json,
)
from vlastack.experiments.prepare import ensure_dataset, split_envs, train_one
from vlastack.image_size import DEFAULT_IMAGE_SIZE

DEFAULT_HEADS = ("bins", "fast", "l1", "diffusion", "flow_matching", "act")


def head_kwargs(head: str, base: dict[str, Any]) -> dict[str, Any]:
    """The recipe head's size (width/depth/num_heads) plus each head's own sampler settings
    (``ActionHead.suite_kwargs`` of the head's class)."""
    from vlastack.models.action_heads import head_class

    size: dict[str, Any] = {k: base[k] for k in ("width", "num_heads") if k in base}
    return dict(head_class(head).suite_kwargs(size, int(base.get("depth", 2))))


def head_action_normalization(head: str) -> str | None:
    """The action normalization ``head`` was published with where it needs a bounded range
    (``ActionHead.suite_action_normalization``: diffusion min-max, bins / FAST quantiles); None
    keeps the recipe's (mean-std for `demo`)."""
    from vlastack.models.action_heads import head_class

    return head_class(head).suite_action_normalization


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
    workers: int = 1,
    executor: Any = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    max_steps: int | None = None,
    out_dir: str | Path = "results/heads",
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``recipe`` once per action head (same backbone, data, steps / minutes, seed) and
    evaluate each on ``env``. Writes ``out_dir/<head>/`` (train run + ``eval/``), a
    ``heads.json`` table; each eval folder's label is the head and its ``run`` carries
    ``train_s``, parameters and the budget (the report's success-vs-latency plot)."""
    from vlastack.evaluation.rollout import evaluate
    from vlastack.models.action_heads import ACTION_HEADS as HEADS
    from vlastack.recipes import get_recipe

    heads = list(heads or DEFAULT_HEADS)
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise ConfigError(f"unknown action head(s) {unknown}; known: {sorted(HEADS)}")
    if steps < 1:
        raise ConfigError(f"steps={steps} must be >= 1")
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
    rows: list[dict[str, Any]] = []
    for head in heads:
        if progress:
            print(f"[heads] {head}: training {steps} steps of recipe {recipe}")
        kw = head_kwargs(head, base.model.head_kwargs)
        model: dict[str, Any] = {"head": head, "head_kwargs": kw}
        norm = head_action_normalization(head)
        if norm is not None:
            model["normalization"] = {"action": norm}
        result, train_s = train_one(
            recipe,
            dataset,
            out / head,
            steps=steps,
            max_minutes=max_minutes,
            model=model,
            seed=seed,
            progress=progress,
        )
        if result.last_checkpoint is None:
            raise ConfigError(f"heads: training {head} wrote no checkpoint under {out / head}")
        params = {k: int(v[0]) for k, v in result.param_counts.items()}
        run_info = {
            "kind": "heads",
            "head": head,
            "recipe": recipe,
            "train_s": round(train_s, 2),
            "train_steps": result.step,
            "train_budget": {"steps": steps, "max_minutes": max_minutes},
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
            out_dir=out / head / "eval",
            label=head,
            run_info=run_info,
            progress=progress,
        )
        o = res.summary["overall"]
        rows.append(
            {
                "head": head,
                "success_rate": o["success_rate"],
                "ci95": [o["ci95_low"], o["ci95_high"]],
                "mean_squared_jerk": o["mean_squared_jerk"],
                "chunk_jump": o["chunk_jump"],
                "latency_p50_ms": o["latency"]["p50_ms"],
                "latency_p95_ms": o["latency"]["p95_ms"],
                "peak_rss_mb": o["peak_rss_mb"],
                "train_s": round(train_s, 2),
                "params_total": params.get("total"),
                "params_head": params.get("head"),
                "eval_dir": str(out / head / "eval"),
            }
        )
    table = {"suite": "heads", "env": env, "recipe": recipe, "data": str(dataset), "rows": rows}
    write_json(out / "heads.json", table)
    print_table(
        f"heads on {env} ({recipe} backbone, {steps} steps)",
        [
            "head",
            "success %",
            "95% CI",
            "jerk",
            "jump",
            "p50 ms",
            "p95 ms",
            "RSS MB",
            "train s",
            "params",
        ],
        [
            [
                r["head"],
                fmt(r["success_rate"], True),
                f"{fmt(r['ci95'][0], True)}–{fmt(r['ci95'][1], True)}",
                "-" if r["mean_squared_jerk"] is None else f"{r['mean_squared_jerk']:.3g}",
                fmt(r["chunk_jump"], nd=3),
                fmt(r["latency_p50_ms"]),
                fmt(r["latency_p95_ms"]),
                fmt(r["peak_rss_mb"], nd=0),
                fmt(r["train_s"], nd=0),
                f"{(r['params_total'] or 0) / 1e6:.2f}M",
            ]
            for r in rows
        ],
    )
    return table


__all__ = ["DEFAULT_HEADS", "head_action_normalization", "head_kwargs", "heads"]
