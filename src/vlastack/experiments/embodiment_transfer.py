"""``transfer``: train on the native Sawyer, evaluate zero-shot and after a small fine-tune on a
re-parametrized 7-d Sawyer (``envs/reparam.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError
from vlastack.experiments.common import (
    SuitePolicy,
    register_env_names,
    write_json,
)
from vlastack.experiments.page import (
    SuccessCell,
    aggregate_runs,
    bar_plot,
    difference_interval,
    difference_text,
    record_counts,
    spread_text,
    success_text,
    write_section,
)
from vlastack.experiments.prepare import ensure_dataset, train_one
from vlastack.image_size import DEFAULT_IMAGE_SIZE


def _warm_start_build(source: Path) -> Callable[[Any], Any]:
    """A ``build`` for ``train`` that copies every source-checkpoint tensor whose name and shape
    match (encoders, trunk, most of the head) and leaves the rest (action in/out) fresh."""

    def build(cfg: Any) -> Any:
        from vlastack.checkpoints import load_checkpoint
        from vlastack.training.build import build_parts

        parts = build_parts(cfg)
        src = load_checkpoint(source).weights
        own = parts.model.state_dict()
        take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        parts.model.load_state_dict(take, strict=False)
        print(f"warm start: {len(take)}/{len(own)} tensors from {source}")
        return parts

    return build


def transfer(
    task: str = "reach-v3",
    *,
    recipe: str = "demo",
    source_data: str | Path | None = None,
    target_data: str | Path | None = None,
    source_checkpoint: str | Path | None = None,
    collect_episodes: int = 20,
    finetune_episodes: int | list[int] = 5,
    steps: int = 500,
    finetune_steps: int = 100,
    episodes_per_task: int = 10,
    seed: int = 0,
    seeds: list[int] | None = None,
    workers: int = 1,
    executor: Any = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    max_steps: int | None = None,
    out_dir: str | Path = "results/transfer",
    progress: bool = True,
) -> dict[str, Any]:
    """Native Sawyer (``metaworld/<task>``, 4-d) → re-parametrized Sawyer (``sawyer7/<task>``).

    Per training seed, evaluations on the same episode seeds: ``native`` (source policy on its
    own robot), ``zero_shot`` (source policy on the target, ``action_remap="pad"``) and
    ``finetuned_k<k>`` for each k in ``finetune_episodes`` (warm-started from the source,
    ``finetune_steps`` on k target demonstrations). The gap is native − each. Writes
    ``out_dir/seed<s>/<run>/``, ``transfer.json`` and the page."""
    from vlastack.evaluation.rollout import evaluate

    ks = [finetune_episodes] if isinstance(finetune_episodes, int) else list(finetune_episodes)
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"--finetune-episodes {ks}: give episode counts >= 1, e.g. 5,20")
    if target_data is not None and len(ks) > 1:
        raise ConfigError(
            "--target-data holds one dataset: give one --finetune-episodes value with it, or "
            "omit --target-data to collect k episodes for each k"
        )
    if source_checkpoint is not None and seeds and len(seeds) > 1:
        raise ConfigError(
            "--source-checkpoint is one trained source: drop --seeds, or drop "
            "--source-checkpoint to train one source per seed"
        )
    train_seeds = list(seeds) if seeds else [seed]
    src_env, tgt_env = f"metaworld/{task}", f"sawyer7/{task}"
    register_env_names([tgt_env])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(
        episodes_per_task=episodes_per_task,
        seed=seed,
        workers=workers,
        executor=executor,
        image_size=image_size,
        max_steps=max_steps,
        progress=progress,
    )
    sdata = None
    if source_checkpoint is None:
        sdata = ensure_dataset(
            src_env,
            source_data,
            out / "data_source",
            episodes_per_task=collect_episodes,
            image_size=image_size,
            seed=seed,
            workers=workers,
            progress=progress,
            executor=executor,
        )
    tdata = {
        k: ensure_dataset(
            tgt_env,
            target_data,
            out / f"data_target_k{k}",
            episodes_per_task=k,
            image_size=image_size,
            seed=seed + 1,
            workers=workers,
            progress=progress,
            executor=executor,
        )
        for k in ks
    }
    runs: list[dict[str, Any]] = []
    for ts in train_seeds:
        sd = out / f"seed{ts}"
        if source_checkpoint is None:
            assert sdata is not None
            res, _src_s, _ = train_one(
                recipe,
                sdata,
                sd / "source",
                steps=steps,
                max_minutes=None,
                model={},
                seed=ts,
                progress=progress,
            )
            assert res.last_checkpoint is not None
            src = Path(res.last_checkpoint)
        else:
            src = Path(source_checkpoint)
        plan: dict[str, tuple[str, str, str, int, float | None]] = {
            "native": (str(src), src_env, "strict", 0, None),
            "zero_shot": (str(src), tgt_env, "pad", 0, None),
        }
        for k in ks:
            ft, ft_s, _ = train_one(
                recipe,
                tdata[k],
                sd / f"finetune_k{k}",
                steps=finetune_steps,
                max_minutes=None,
                model={},
                seed=ts,
                progress=progress,
                build=_warm_start_build(src),
            )
            assert ft.last_checkpoint is not None
            plan[f"finetuned_k{k}"] = (str(ft.last_checkpoint), tgt_env, "strict", k, ft_s)
        for name, (ckpt, env, remap, k, run_s) in plan.items():
            if progress:
                print(f"[transfer] seed {ts} {name}: {ckpt} on {env} (action_remap={remap})")
            r = evaluate(
                SuitePolicy(ckpt, [env]),
                env,
                action_remap=remap,
                out_dir=sd / name,
                label=f"transfer {name} seed {ts}",
                condition=name,
                run_info={
                    "kind": "transfer",
                    "checkpoint": ckpt,
                    "train_seed": ts,
                    "finetune_steps": finetune_steps if k else 0,
                    "finetune_episodes": k,
                },
                **common,  # type: ignore[arg-type]
            )
            succ, n = record_counts(r.records)
            runs.append(
                {
                    "run": name,
                    "env": env,
                    "train_seed": ts,
                    "successes": succ,
                    "episodes": n,
                    "finetune_s": run_s,
                    "eval_dir": str(sd / name),
                }
            )
    order = ["native", "zero_shot", *(f"finetuned_k{k}" for k in ks)]
    rows = aggregate_runs(runs, "run", order, ("finetune_s",))
    rates = {r["run"]: r["success"]["success_rate"] for r in rows}
    nat = rates["native"] or 0.0
    summary = {
        "suite": "transfer",
        "source_env": src_env,
        "target_env": tgt_env,
        "source_embodiment": "Meta-World Sawyer, 4-d action (xyz delta, gripper)",
        "target_embodiment": TARGET_EMBODIMENT,
        "recipe": recipe,
        "train_seeds": train_seeds,
        "budget": {"source_steps": steps, "finetune_steps": finetune_steps},
        "finetune_episodes": ks,
        "episodes_per_task": episodes_per_task,
        "runs": runs,
        "rows": rows,
        "results": {r["run"]: r["success"] for r in rows},
        "gap": {name: nat - (rate or 0.0) for name, rate in rates.items() if name != "native"},
    }
    write_json(out / "transfer.json", summary)
    write_transfer_page(out, summary)
    return summary


TARGET_EMBODIMENT = (
    "the Sawyer re-parametrized (envs/reparam.py): 7-d action, xyz rotated 90 deg about z, "
    "gripper at index 6"
)


def write_transfer_page(out: Path, summary: dict[str, Any]) -> Path:
    rows = summary["rows"]
    cells = {r["run"]: SuccessCell.from_dict(r["success"]) for r in rows}
    nat = cells["native"]
    table_rows = []
    for r in rows:
        c = cells[r["run"]]
        gap = None if r["run"] == "native" else difference_interval(nat, c)
        table_rows.append(
            [
                r["run"],
                summary["source_env"] if r["run"] == "native" else summary["target_env"],
                success_text(c),
                spread_text(c.per_seed),
                "-" if gap is None else difference_text(gap),
            ]
        )
    plot = bar_plot(
        out / "transfer_success.png",
        [r["run"] for r in rows],
        [cells[r["run"]] for r in rows],
        title=f"{summary['source_env']} -> {summary['target_env']}",
    )
    b = summary["budget"]
    return write_section(
        out,
        title=f"Embodiment transfer {summary['source_env']} -> {summary['target_env']}",
        setup=[
            f"source: {summary['source_embodiment']}; target: {summary['target_embodiment']}",
            f"training: recipe `{summary['recipe']}`, source {b['source_steps']} steps, "
            f"fine-tune {b['finetune_steps']} steps on k = {summary['finetune_episodes']} "
            f"target demonstrations (warm start), seeds {summary['train_seeds']}",
            f"evaluation: {summary['episodes_per_task']} episodes per task per run per seed, the "
            "same episode seeds for every run",
        ],
        columns=["run", "env", "success % [95% CI] (succ/n)", "seed spread", "gap pp [95% CI]"],
        rows=table_rows,
        plots=[plot],
        notes=[
            "Gap = native − run in percentage points (Newcombe's hybrid Wilson interval). "
            "zero_shot pads the 4-d native action to 7-d (action_remap='pad')."
        ],
    )


__all__ = ["transfer", "write_transfer_page"]
