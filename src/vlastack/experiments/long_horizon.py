"""``chain``: ≥10 subtasks in a row (``envs/chains.py``, CALVIN-style average chain length)
against the modular perception/planning/control baseline (``envs/modular.py``) on the same seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.evaluation.metrics import (
    EpisodeRecord,
    chunk_boundary_jump,
    mean_squared_jerk,
    peak_memory_mb,
)
from vlastack.experiments.common import (
    checkpoint_info,
    fmt,
    print_table,
    write_json,
    write_results,
)
from vlastack.image_size import choose_image_size, trained_image_size


def _chain_episode(
    env: Any,
    seed: int,
    episode: int,
    *,
    act: Callable[[dict[str, Any]], np.ndarray],
    reset: Callable[[], None],
    new_subtask: Callable[[], None] | None = None,
    chunked: bool,
    execute_horizon: int,
    condition: str,
) -> EpisodeRecord:
    t_start = time.perf_counter()
    obs, info = env.reset(seed=seed)
    reset()
    pending: list[np.ndarray] = []
    executed, starts, lat = [], [], []
    step = 0
    term = trunc = False
    for step in range(1, env.max_steps + 1):
        if not pending:
            t0 = time.perf_counter()
            out = np.asarray(act(obs), dtype=np.float32)
            lat.append((time.perf_counter() - t0) * 1e3)
            chunk = out if chunked else out[None]
            starts.append(step - 1)
            pending = list(chunk[: max(1, min(execute_horizon, len(chunk)))])
        a = np.clip(pending.pop(0), -1.0, 1.0)
        executed.append(a)
        obs, _, term, trunc, info = env.step(a)
        if info.get("subtask_success"):
            pending = []  # a new instruction: re-plan
            if new_subtask is not None:
                new_subtask()
        if term or trunc:
            break
    acts = np.stack(executed)
    mem = peak_memory_mb()
    return EpisodeRecord(
        task=f"chain/{env.base_task}",
        episode=episode,
        seed=seed,
        status="success" if info["success"] else "failure",
        steps=step,
        instruction=env.instruction,
        condition=condition,
        mean_squared_jerk=mean_squared_jerk(acts, 1.0 / env.embodiment.control_hz),
        chunk_jump=chunk_boundary_jump(acts, starts),
        num_chunks=len(lat),
        latencies_ms=[round(x, 3) for x in lat],
        peak_rss_mb=mem["peak_rss_mb"],
        wall_s=time.perf_counter() - t_start,
        subtasks_total=int(info["subtasks_total"]),
        subtasks_completed=int(info["subtasks_completed"]),
    )


def chain(
    checkpoint: str | Path | None,
    *,
    task: str = "reach-v3",
    num_subtasks: int = 10,
    steps_per_subtask: int = 150,
    episodes: int = 10,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    execute_horizon: int | None = None,
    modular: bool = True,
    out_dir: str | Path = "results/chain",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``episodes`` chains of ``num_subtasks`` with the VLA (``checkpoint``; None skips it)
    and the modular baseline on the same seeds; writes ``out_dir/vla`` and ``out_dir/modular``
    (report: chain-length curves) and ``chain.json``. Runs in this process. ``image_size`` None:
    the size the checkpoint was trained at (``DEFAULT_IMAGE_SIZE`` without one)."""
    from tqdm.auto import tqdm

    from vlastack.envs.chains import ChainEnv
    from vlastack.envs.modular import ModularPolicy

    if checkpoint is None and not modular:
        raise ConfigError("chain: nothing to run; give a checkpoint or keep the modular baseline")
    out = Path(out_dir)
    seeds = [seed + i for i in range(episodes)]
    ckpt_dir = checkpoint_info(checkpoint)["checkpoint"] if checkpoint is not None else None
    trained = trained_image_size(ckpt_dir) if ckpt_dir else None
    image_size = choose_image_size(image_size, trained)
    env = ChainEnv(
        task,
        num_subtasks=num_subtasks,
        steps_per_subtask=steps_per_subtask,
        image_size=image_size,
    )
    proto = {
        "suite": "chain",
        "env": f"chain/{task}",
        "num_subtasks": num_subtasks,
        "steps_per_subtask": steps_per_subtask,
        "between_subtasks": "hand pushed to a random pose, object nudged <= "
        f"{env.object_nudge_m} m, goal moved >= {env.min_goal_move_m} m",
        "seeds": seeds,
        "image_size": list(image_size),
        "camera": env.camera,
    }
    results: dict[str, Any] = {}
    try:
        if checkpoint is not None:
            from vlastack.evaluation.rollout import load_policy

            info = checkpoint_info(checkpoint)
            policy: Any = load_policy(info["checkpoint"])
            eh = int(execute_horizon or getattr(policy, "execute_horizon", 0) or 8)
            recs = []
            for i, s in enumerate(tqdm(seeds, desc="chain vla", disable=not progress)):
                recs.append(
                    _chain_episode(
                        env,
                        s,
                        i,
                        act=lambda o: policy.infer(o)["actions"],
                        reset=policy.reset,
                        chunked=True,
                        execute_horizon=eh,
                        condition="vla",
                    )
                )
            results["vla"] = write_results(
                out / "vla",
                recs,
                run={
                    "label": f"VLA {info['checkpoint_label']}",
                    "kind": "chain",
                    "env": f"chain/{task}",
                    "condition": "vla",
                    **info,
                },
                manifest={**proto, "policy": info, "execute_horizon": eh},
            )
        if modular:
            mod = ModularPolicy(env.camera)
            recs = []
            errs: list[float] = []
            misses = 0
            for i, s in enumerate(tqdm(seeds, desc="chain modular", disable=not progress)):
                rec = _chain_episode(
                    env,
                    s,
                    i,
                    act=lambda o: mod.act(env.raw, o, true_goal=env.goal),
                    reset=mod.reset,
                    new_subtask=mod.new_subtask,
                    chunked=False,
                    execute_horizon=1,
                    condition="modular",
                )
                rec.extra["perception_error_m_median"] = (
                    float(np.median(mod.errors_m)) if mod.errors_m else None
                )
                errs += mod.errors_m
                misses += mod.misses
                recs.append(rec)
            perception = {
                "goal_error_m_mean": float(np.mean(errs)) if errs else None,
                "goal_error_m_median": float(np.median(errs)) if errs else None,
                "goal_error_m_p90": float(np.percentile(errs, 90)) if errs else None,
                "frames_goal_not_seen": misses,
                "method": "colour segmentation + RGB-D back-projection with the camera's "
                "intrinsics/extrinsics; no privileged state",
            }
            results["modular"] = write_results(
                out / "modular",
                recs,
                run={
                    "label": "modular (perception+planning+scripted control)",
                    "kind": "chain",
                    "env": f"chain/{task}",
                    "condition": "modular",
                },
                manifest={**proto, "policy": "envs/modular.py ModularPolicy"},
                extra={"perception": perception},
            )
    finally:
        env.close()
    table = {
        k: {
            "chain_length_mean": v["overall"].get("chain_length_mean"),
            "chain_success_at": v["overall"].get("chain_success_at"),
            "full_chain_rate": v["overall"]["success_rate"],
            **({"perception": v["perception"]} if "perception" in v else {}),
        }
        for k, v in results.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "chain.json", {**proto, "results": table})
    print_table(
        f"chain/{task}: {num_subtasks} subtasks, {episodes} chains",
        ["policy", "avg chain length", "P(>=1)", "P(>=5)", f"P(={num_subtasks})"],
        [
            [
                k,
                fmt(v["chain_length_mean"], nd=2),
                fmt((v["chain_success_at"] or {}).get("1"), True),
                fmt((v["chain_success_at"] or {}).get("5"), True),
                fmt((v["chain_success_at"] or {}).get(str(num_subtasks)), True),
            ]
            for k, v in table.items()
        ],
    )
    return table


__all__ = ["chain"]
