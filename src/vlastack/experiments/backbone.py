"""``backbone``: the survey's main design trade-off, frozen vs fine-tuned pretrained encoders.

One recipe, one dataset, one training budget, four ways to treat its pretrained encoders:
``frozen`` (as pretrained; the trainer encodes every frame once), ``finetuned`` (every encoder
weight trains), ``lora`` (encoders frozen, LoRA adapters on their Linear and ordinary Conv2d layers
train; ``training/adapters.py``) and ``scratch`` (the vision encoder randomly initialized and
trained). Per condition and training seed: success on the tasks, training wall time, peak memory
during training and trainable parameters. A recipe's encoder that lives outside the trained module
tree (the `demo` recipe's MiniLM instruction encoder) stays frozen in every condition; the page
says so.
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

CONDITIONS = ("frozen", "finetuned", "lora", "scratch")
METRICS = (
    "train_s",
    "train_mem_est_mb",
    "train_peak_rss_mb",
    "params_trainable",
    "params_total",
    "latency_p50_ms",
)


def condition_settings(
    condition: str, recipe_model: Any, lora_rank: int = 8
) -> tuple[dict[str, Any], list[str]]:
    """(model overrides, training overrides) of one condition for a recipe's ``VLAConfig``."""
    vk = dict(recipe_model.vision_kwargs or {})
    if condition == "frozen":
        return {"freeze_vision": True, "freeze_language": True}, []
    if condition == "finetuned":
        return {"freeze_vision": False, "freeze_language": False}, []
    if condition == "lora":
        target = r"(vision|language)\..*"
        return (
            {"freeze_vision": True, "freeze_language": True},
            [
                f"--lora.rank={lora_rank}",
                f"--lora.alpha={2 * lora_rank}",
                f"--lora.target={target}",
            ],
        )
    if condition == "scratch":
        if recipe_model.vision not in ("mobilenet_v2",):
            raise ConfigError(
                f"backbone condition 'scratch': recipe vision '{recipe_model.vision}' has no "
                "pretrained switch here; use a recipe with vision 'mobilenet_v2' (e.g. demo) or "
                "drop 'scratch' from --conditions"
            )
        return (
            {
                "freeze_vision": False,
                "freeze_language": False,
                "vision_kwargs": {**vk, "pretrained": False},
            },
            [],
        )
    raise ConfigError(f"unknown backbone condition {condition!r}; choose from {list(CONDITIONS)}")


def backbone(
    env: str = "metaworld/mt10",
    *,
    conditions: list[str] | None = None,
    recipe: str = "demo",
    data: str | Path | None = None,
    collect_episodes: int = 20,
    steps: int = 2000,
    max_minutes: float | None = None,
    lora_rank: int = 8,
    episodes_per_task: int = 10,
    seed: int = 0,
    seeds: list[int] | None = None,
    workers: int = 1,
    executor: Any = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    max_steps: int | None = None,
    out_dir: str | Path = "results/backbone",
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``recipe`` under each condition and training seed (same data and budget) and
    evaluate on ``env``; writes ``out_dir/<condition>/seed<k>/``, ``backbone.json`` and the page
    (``section.md``, ``backbone_success.png``)."""
    from vlastack.envs import list_tasks
    from vlastack.evaluation.rollout import evaluate
    from vlastack.recipes import get_recipe

    conditions = list(conditions or CONDITIONS)
    base = get_recipe(recipe)
    for c in conditions:  # fail before collecting or training anything
        condition_settings(c, base.model, lora_rank)
    if steps < 1:
        raise ConfigError(f"steps={steps} must be >= 1")
    train_seeds = list(seeds) if seeds else [seed]
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
    runs: list[dict[str, Any]] = []
    for cond in conditions:
        model, overrides = condition_settings(cond, base.model, lora_rank)
        for ts in train_seeds:
            run_dir = out / cond / f"seed{ts}"
            budget = {
                "recipe": recipe,
                "condition": cond,
                "lora_rank": lora_rank,
                "data": str(dataset),
                "steps": steps,
                "max_minutes": max_minutes,
                "tasks": tasks,
                "episodes_per_task": episodes_per_task,
                "seed": seed,
                "max_steps": max_steps,
            }
            done = finished_run(run_dir, budget)
            if done is not None:
                if progress:
                    print(f"[backbone] {cond} seed {ts}: finished earlier, reusing {run_dir}")
                runs.append(done)
                continue
            if progress:
                print(f"[backbone] {cond} seed {ts}: training {steps} steps of recipe {recipe}")
            result, train_s, mem = train_one(
                recipe,
                dataset,
                run_dir,
                steps=steps,
                max_minutes=max_minutes,
                model=model,
                seed=ts,
                progress=progress,
                extra_overrides=overrides,
            )
            if result.last_checkpoint is None:
                raise ConfigError(f"backbone: {cond} wrote no checkpoint under {run_dir}")
            params = {k: (int(v[0]), int(v[1])) for k, v in result.param_counts.items()}
            total, trainable = params.get("total", (None, None))
            res = evaluate(
                str(result.last_checkpoint),
                tasks[0],
                tasks=tasks,
                episodes_per_task=episodes_per_task,
                seed=seed,
                workers=workers,
                executor=executor,
                image_size=image_size,
                max_steps=max_steps,
                out_dir=run_dir / "eval",
                label=f"{cond} seed {ts}",
                run_info={
                    "kind": "backbone",
                    "condition": cond,
                    "recipe": recipe,
                    "train_seed": ts,
                    "train_s": round(train_s, 2),
                    "train_peak_rss_mb": mem.peak_mb,
                    "train_mem_est_mb": mem_est_mb(result),
                },
                progress=progress,
            )
            succ, n = record_counts(res.records)
            runs.append(
                {
                    "condition": cond,
                    "train_seed": ts,
                    "successes": succ,
                    "episodes": n,
                    "train_s": round(train_s, 2),
                    "train_steps": result.step,
                    "train_peak_rss_mb": mem.peak_mb,
                    "train_mem_est_mb": mem_est_mb(result),
                    "train_peak_cuda_mb": mem.peak_cuda_mb,
                    "params_total": total,
                    "params_trainable": trainable,
                    "latency_p50_ms": res.summary["overall"]["latency"]["p50_ms"],
                    "final_loss": float(np.mean(result.losses[-10:])) if result.losses else None,
                    "eval_dir": str(run_dir / "eval"),
                }
            )
            record_finished_run(run_dir, budget, runs[-1])
    table = {
        "suite": "backbone",
        "env": env,
        "tasks": tasks,
        "recipe": recipe,
        "vision": base.model.vision,
        "language": base.model.language,
        "data": str(dataset),
        "budget": {"steps": steps, "max_minutes": max_minutes},
        "lora_rank": lora_rank,
        "train_seeds": train_seeds,
        "episodes_per_task": episodes_per_task,
        "runs": runs,
        "rows": aggregate_runs(runs, "condition", conditions, METRICS),
    }
    write_json(out / "backbone.json", table)
    write_backbone_page(out, table)
    return table


def write_backbone_page(out: Path, table: dict[str, Any]) -> Path:
    rows = table["rows"]
    cells = [SuccessCell.from_dict(r["success"]) for r in rows]
    title = (
        f"Frozen vs fine-tuned backbone on {table['env']} "
        f"({table['recipe']}: vision {table['vision']}, language {table['language']})"
    )
    plot = bar_plot(
        out / "backbone_success.png", [r["condition"] for r in rows], cells, title=title
    )
    b = table["budget"]
    budget = f"{b['steps']} steps" + (f" or {b['max_minutes']} min" if b["max_minutes"] else "")
    notes = [
        "frozen: pretrained encoders fixed (frames encoded once); finetuned: every encoder weight "
        f"trains; lora: encoders fixed, rank-{table['lora_rank']} LoRA on their Linear and "
        "groups-1 Conv2d layers; scratch: the vision encoder randomly initialized and trained.",
        "Train s and memory are means over seeds. " + MEMORY_NOTE,
    ]
    if table["language"] == "minilm":
        notes.append(
            "The MiniLM instruction encoder is held outside the trained modules by this recipe, "
            "so it stays frozen (and pretrained) in every condition: the conditions differ in "
            "the vision encoder."
        )
    return write_section(
        out,
        title=title,
        setup=[
            f"tasks: {len(table['tasks'])} ({', '.join(table['tasks'][:10])}"
            + (", ..." if len(table["tasks"]) > 10 else "")
            + ")",
            f"training: {budget} per condition and seed, seeds {table['train_seeds']}, data "
            f"`{table['data']}`",
            f"evaluation: {table['episodes_per_task']} episodes per task per seed, the same "
            "episode seeds for every condition",
        ],
        columns=[
            "condition",
            "success % [95% CI] (succ/n)",
            "seed spread",
            "train s",
            "train mem est. MB",
            "process peak RSS MB",
            "trainable params",
            "p50 ms",
        ],
        rows=[
            [
                r["condition"],
                success_text(c),
                spread_text(c.per_seed),
                num(r["train_s"], nd=0),
                num(r["train_mem_est_mb"], nd=0),
                num(r["train_peak_rss_mb"], nd=0),
                "-" if r["params_trainable"] is None else f"{r['params_trainable'] / 1e6:.2f}M",
                num(r["latency_p50_ms"]),
            ]
            for r, c in zip(rows, cells)
        ],
        plots=[plot],
        notes=notes,
    )


__all__ = ["CONDITIONS", "backbone", "condition_settings", "write_backbone_page"]
