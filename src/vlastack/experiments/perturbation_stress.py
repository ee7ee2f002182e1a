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
    fmt,
    print_table,
    register_env_names,
    write_results,
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
    )
    rows = []
    for cond, agg in summary.get("per_condition", {}).items():
        rows.append(
            [
                cond,
                fmt(agg["success_rate"], True),
                f"{fmt(agg['ci95_low'], True)}–{fmt(agg['ci95_high'], True)}",
                str(agg["completed"]),
                "-" if cond == "default" else fmt(agg.get("drop"), True),
            ]
        )
    print_table(
        f"stress: {label} on {env}", ["condition", "success %", "95% CI", "n", "drop pp"], rows
    )
    return summary


__all__ = ["stress"]
