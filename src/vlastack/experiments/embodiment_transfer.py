"""``transfer``: train on the native Sawyer, evaluate zero-shot and after a small fine-tune on a
re-parametrized 7-d Sawyer (``envs/reparam.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlastack.experiments.common import (
    SuitePolicy,
    fmt,
    print_table,
    register_env_names,
    write_json,
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
    finetune_episodes: int = 5,
    steps: int = 500,
    finetune_steps: int = 100,
    episodes_per_task: int = 10,
    seed: int = 0,
    workers: int = 1,
    executor: Any = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    max_steps: int | None = None,
    out_dir: str | Path = "results/transfer",
    progress: bool = True,
) -> dict[str, Any]:
    """Native Sawyer (``metaworld/<task>``, 4-d) → re-parametrized Sawyer (``sawyer7/<task>``).

    Three evaluations, same seeds: ``native`` (source policy on its own robot), ``zero_shot``
    (source policy on the target, ``action_remap="pad"``), ``finetuned`` (warm-started from the
    source, ``finetune_steps`` on ``finetune_episodes`` target demonstrations). The gap is
    native − zero_shot and native − finetuned.
    """
    from vlastack.evaluation.rollout import evaluate

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
        res, src_train_s = train_one(
            recipe,
            sdata,
            out / "source",
            steps=steps,
            max_minutes=None,
            model={},
            seed=seed,
            progress=progress,
        )
        source_checkpoint = res.last_checkpoint
        assert source_checkpoint is not None
    src = Path(source_checkpoint)
    tdata = ensure_dataset(
        tgt_env,
        target_data,
        out / "data_target",
        episodes_per_task=finetune_episodes,
        image_size=image_size,
        seed=seed + 1,
        workers=workers,
        progress=progress,
        executor=executor,
    )
    ft, ft_s = train_one(
        recipe,
        tdata,
        out / "finetuned",
        steps=finetune_steps,
        max_minutes=None,
        model={},
        seed=seed,
        progress=progress,
        build=_warm_start_build(src),
    )
    assert ft.last_checkpoint is not None
    runs = {
        "native": (str(src), src_env, "strict"),
        "zero_shot": (str(src), tgt_env, "pad"),
        "finetuned": (str(ft.last_checkpoint), tgt_env, "strict"),
    }
    rates: dict[str, Any] = {}
    for name, (ckpt, env, remap) in runs.items():
        if progress:
            print(f"[transfer] {name}: {ckpt} on {env} (action_remap={remap})")
        r = evaluate(
            SuitePolicy(ckpt, [env]),
            env,
            action_remap=remap,
            out_dir=out / name,
            label=f"transfer {name}",
            condition=name,
            run_info={
                "kind": "transfer",
                "checkpoint": ckpt,
                "finetune_steps": finetune_steps if name == "finetuned" else 0,
            },
            **common,  # type: ignore[arg-type]
        )
        o = r.summary["overall"]
        rates[name] = {
            "env": env,
            "success_rate": o["success_rate"],
            "ci95": [o["ci95_low"], o["ci95_high"]],
            "eval_dir": str(out / name),
        }
    nat = rates["native"]["success_rate"] or 0.0
    summary = {
        "suite": "transfer",
        "source_env": src_env,
        "target_env": tgt_env,
        "target_embodiment": "7-d action, xyz rotated 90 deg about z, gripper at index 6",
        "finetune": {"steps": finetune_steps, "episodes": finetune_episodes, "train_s": ft_s},
        "results": rates,
        "gap_zero_shot": nat - (rates["zero_shot"]["success_rate"] or 0.0),
        "gap_finetuned": nat - (rates["finetuned"]["success_rate"] or 0.0),
    }
    write_json(out / "transfer.json", summary)
    print_table(
        f"transfer {src_env} -> {tgt_env}",
        ["run", "env", "success %", "95% CI"],
        [
            [
                k,
                v["env"],
                fmt(v["success_rate"], True),
                f"{fmt(v['ci95'][0], True)}–{fmt(v['ci95'][1], True)}",
            ]
            for k, v in rates.items()
        ],
    )
    return summary


__all__ = ["transfer"]
