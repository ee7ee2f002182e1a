"""``stress``: evaluation-time perturbations (``envs/perturbations.py``: lighting, camera pose,
distractors, ...), reported as drops from unperturbed success on the same seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError
from vlastack.evaluation.metrics import (
    EpisodeRecord,
)
from vlastack.experiments.common import (
    SuitePolicy,
    checkpoint_info,
    register_env_names,
    write_json,
    write_results,
)
from vlastack.experiments.page import (
    SuccessCell,
    bar_plot,
    difference_interval,
    difference_text,
    record_counts,
    spread_text,
    success_cell,
    success_text,
    write_section,
)
from vlastack.image_size import choose_image_size, trained_image_size


def stress(
    checkpoint: str | Path,
    env: str,
    *,
    conditions: list[str] | None = None,
    episodes_per_task: int = 10,
    seed: int = 0,
    workers: int = 1,
    executor: Any = None,
    out_dir: str | Path = "results/stress",
    image_size: tuple[int, int] | None = None,
    max_steps: int | None = None,
    execute_horizon: int | None = None,
    video_episodes_per_task: int = 0,
    label: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``env`` unperturbed and under each perturbation, same seeds.

    Writes ``out_dir/<condition>/`` (one ``evaluate`` folder each) and ``out_dir/`` with all
    episodes, ``per_condition`` aggregates and each condition's ``drop`` (percentage points /
    100) from the ``default`` success rate. Returns that summary. ``image_size`` None renders at
    the size the checkpoint was trained at.
    """
    from vlastack.envs.perturbations import DEFAULT_CONDITIONS, PERTURBATIONS, stress_env_name
    from vlastack.evaluation.rollout import episode_seed, evaluate, resolve_tasks

    conditions = list(conditions or DEFAULT_CONDITIONS)
    unknown = [c for c in conditions if c not in PERTURBATIONS]
    if unknown:
        raise ConfigError(
            f"unknown stress condition(s) {unknown}; choose from {list(PERTURBATIONS)}"
        )
    tasks = resolve_tasks(env)
    out = Path(out_dir)
    seeds = {
        t: [episode_seed(seed, ti, ep, episodes_per_task) for ep in range(episodes_per_task)]
        for ti, t in enumerate(tasks)
    }
    info = checkpoint_info(checkpoint)
    # the checkpoint runs through a policy factory: pick its trained size here (None -> it)
    image_size = choose_image_size(image_size, trained_image_size(info["checkpoint"]))
    label = label or info["checkpoint_label"]
    records: list[EpisodeRecord] = []
    manifests: dict[str, Any] = {}
    for cond in ["default", *conditions]:
        names = tasks if cond == "default" else [stress_env_name(cond, t) for t in tasks]
        register_env_names(names)
        if progress:
            print(f"[stress] condition {cond}: {len(names)} task(s) x {episodes_per_task} episodes")
        res = evaluate(
            SuitePolicy(info["checkpoint"], names),
            env,
            tasks=names,
            seeds={n: seeds[t] for n, t in zip(names, tasks)},
            episodes_per_task=episodes_per_task,
            seed=seed,
            workers=workers,
            executor=executor,
            image_size=image_size,
            max_steps=max_steps,
            execute_horizon=execute_horizon,
            video_episodes_per_task=video_episodes_per_task,
            out_dir=out / cond,
            condition=cond,
            label=f"{label} [{cond}]",
            run_info={"kind": "stress", **info},
            progress=progress,
        )
        manifests[cond] = res.manifest
        base_of = dict(zip(names, tasks))
        for r in res.records:
            r.extra["env_name"] = r.task
            r.task = base_of.get(r.task, r.task)
            if r.video:
                r.video = f"{cond}/{r.video}"
            records.append(r)
    from vlastack.envs.perturbations import PERTURBATIONS as P

    counts = {
        c: list(record_counts([r for r in records if r.condition == c]))
        for c in ["default", *conditions]
    }
    summary = write_results(
        out,
        records,
        run={"label": label, "kind": "stress", "env": env, "condition": "all", **info},
        manifest={
            "suite": "stress",
            "conditions": {c: P[c].description for c in conditions},
            "seeds": seeds,
            "per_condition": manifests,
        },
        extra={"counts": counts},
    )
    return summary


def stress_suite(
    checkpoints: list[str | Path],
    env: str,
    *,
    conditions: list[str] | None = None,
    out_dir: str | Path = "results/stress",
    progress: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """``stress`` for each checkpoint (one per training seed; one checkpoint writes straight into
    ``out_dir``, several into ``out_dir/ckpt<i>/``), then ``stress.json`` and the page: per
    condition, success pooled over checkpoints, its drop from ``default`` with Newcombe's
    interval, and the per-checkpoint drops' spread."""
    from vlastack.envs.perturbations import DEFAULT_CONDITIONS, PERTURBATIONS

    if not checkpoints:
        raise ConfigError("stress: give at least one checkpoint")
    out = Path(out_dir)
    summaries = []
    for i, ckpt in enumerate(checkpoints):
        sub = out if len(checkpoints) == 1 else out / f"ckpt{i}"
        summaries.append(
            stress(ckpt, env, conditions=conditions, out_dir=sub, progress=progress, **kw)
        )
    conds = ["default", *(conditions or DEFAULT_CONDITIONS)]
    table = {
        "suite": "stress",
        "env": env,
        "checkpoints": [str(c) for c in checkpoints],
        "episodes_per_task": kw.get("episodes_per_task", 10),
        "descriptions": {c: PERTURBATIONS[c].description for c in conds if c in PERTURBATIONS},
        "rows": [
            {
                "condition": c,
                "success": success_cell([tuple(s["counts"][c]) for s in summaries]).to_dict(),
            }
            for c in conds
        ],
    }
    write_json(out / "stress.json", table)
    write_stress_page(out, table)
    return table


def write_stress_page(out: Path, table: dict[str, Any]) -> Path:
    rows = table["rows"]
    cells = {r["condition"]: SuccessCell.from_dict(r["success"]) for r in rows}
    base = cells["default"]
    out_rows = []
    for r in rows:
        c = cells[r["condition"]]
        diff = None if r["condition"] == "default" else difference_interval(base, c)
        per_seed_drop = [b - v for b, v in zip(base.per_seed, c.per_seed)]
        out_rows.append(
            [
                r["condition"],
                table["descriptions"].get(r["condition"], "unperturbed"),
                success_text(c),
                spread_text(c.per_seed),
                "-" if diff is None else difference_text(diff),
                "-" if diff is None else spread_text(per_seed_drop),
            ]
        )
    names = [r["condition"] for r in rows]
    plot = bar_plot(
        out / "stress_success.png",
        names,
        [cells[n] for n in names],
        title=f"success per perturbation, {table['env']}",
    )
    return write_section(
        out,
        title=f"Generalization stress on {table['env']}",
        setup=[
            f"policies: {len(table['checkpoints'])} checkpoint(s) (one per training seed): "
            + ", ".join(f"`{c}`" for c in table["checkpoints"]),
            f"evaluation: {table['episodes_per_task']} episodes per task per condition per "
            "checkpoint, the same episode seeds under every condition",
        ],
        columns=[
            "condition",
            "what changes",
            "success % [95% CI] (succ/n)",
            "seed spread",
            "drop pp [95% CI]",
            "drop spread",
        ],
        rows=out_rows,
        plots=[plot],
        notes=[
            "Drop = default − condition in percentage points, with Newcombe's hybrid Wilson "
            "interval (treats the two rates as independent; the seeds are paired, so it is "
            "conservative)."
        ],
    )


__all__ = ["stress", "stress_suite", "write_stress_page"]
