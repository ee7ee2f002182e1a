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
    write_json,
    write_results,
)
from vlastack.experiments.page import (
    line_plot,
    num,
    spread_text,
    success_cell,
    success_text,
    write_section,
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


def _infer_actions(policy: Any) -> Callable[[dict[str, Any]], np.ndarray]:
    return lambda obs: policy.infer(obs)["actions"]


def chain(
    checkpoint: str | Path | list[str | Path] | None,
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
    """Run ``episodes`` chains of ``num_subtasks`` with the VLA (``checkpoint``: one, or a list
    with one per training seed; None skips it) and the modular baseline on the same seeds;
    writes ``out_dir/vla`` (several checkpoints: ``out_dir/vla_<i>``) and ``out_dir/modular``
    (report: chain-length curves), ``chain.json`` and the page. Runs in this process.
    ``image_size`` None: the size the (first) checkpoint was trained at (``DEFAULT_IMAGE_SIZE``
    without one)."""
    from tqdm.auto import tqdm

    from vlastack.envs.chains import ChainEnv
    from vlastack.envs.modular import ModularPolicy

    ckpts: list[str | Path] = (
        []
        if checkpoint is None
        else list(checkpoint)
        if isinstance(checkpoint, list)
        else [checkpoint]
    )
    if not ckpts and not modular:
        raise ConfigError("chain: nothing to run; give a checkpoint or keep the modular baseline")
    out = Path(out_dir)
    seeds = [seed + i for i in range(episodes)]
    trained = trained_image_size(checkpoint_info(ckpts[0])["checkpoint"]) if ckpts else None
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
    lengths: dict[str, list[int]] = {}
    try:
        for ci, ckpt in enumerate(ckpts):
            from vlastack.evaluation.rollout import load_policy

            key = "vla" if len(ckpts) == 1 else f"vla_{ci}"
            info = checkpoint_info(ckpt)
            policy: Any = load_policy(info["checkpoint"])
            eh = int(execute_horizon or getattr(policy, "execute_horizon", 0) or 8)
            recs = []
            for i, s in enumerate(tqdm(seeds, desc=f"chain {key}", disable=not progress)):
                recs.append(
                    _chain_episode(
                        env,
                        s,
                        i,
                        act=_infer_actions(policy),
                        reset=policy.reset,
                        chunked=True,
                        execute_horizon=eh,
                        condition="vla",
                    )
                )
            lengths[key] = [int(r.subtasks_completed or 0) for r in recs]
            results[key] = write_results(
                out / key,
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
            lengths["modular"] = [int(r.subtasks_completed or 0) for r in recs]
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
            "chain_lengths": lengths[k],
            **({"perception": v["perception"]} if "perception" in v else {}),
        }
        for k, v in results.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "chain.json", {**proto, "results": table})
    write_chain_page(out, {**proto, "checkpoints": [str(c) for c in ckpts], "results": table})
    return table


def write_chain_page(out: Path, saved: dict[str, Any]) -> Path:
    """The page: the VLA (its checkpoints pooled, one per training seed) and the modular baseline:
    mean chain length (spread across seeds), full chains with Wilson intervals, P(length >= k)."""
    n_sub = int(saved["num_subtasks"])
    res = saved["results"]
    groups: dict[str, list[str]] = {}
    for k in res:
        groups.setdefault("VLA" if k.startswith("vla") else k, []).append(k)
    rows: list[list[str]] = []
    curves: dict[str, list[tuple[float, float, float] | None]] = {}
    ks = list(range(1, n_sub + 1))
    for name, keys in groups.items():
        per = [res[k]["chain_lengths"] for k in keys]
        allc = [c for lens in per for c in lens]
        full = success_cell([(sum(c >= n_sub for c in lens), len(lens)) for lens in per])
        means = [float(np.mean(lens)) for lens in per if lens]
        half = success_cell(
            [(sum(c >= max(1, n_sub // 2) for c in lens), len(lens)) for lens in per]
        )
        rows.append(
            [
                name,
                str(len(keys)) if name == "VLA" else "-",
                num(float(np.mean(allc)) if allc else None, nd=2),
                spread_text(means, scale=1.0, nd=2) if name == "VLA" else "-",
                success_text(half),
                success_text(full),
            ]
        )
        curves[name] = []
        for k in ks:
            c = success_cell([(sum(x >= k for x in lens), len(lens)) for lens in per])
            curves[name].append((c.rate or 0.0, *c.ci95) if c.n else None)
    plot = line_plot(
        out / "chain_length.png",
        ks,
        curves,
        title=f"{saved['env']}: P(chain length >= k), {n_sub} subtasks",
        xlabel="subtasks completed in a row (k)",
        ylabel="chains (%)",
    )
    return write_section(
        out,
        title=f"Long-horizon chains on {saved['env']}: VLA vs modular baseline",
        setup=[
            f"chains: {len(saved['seeds'])} per policy, {n_sub} subtasks each, "
            f"{saved['steps_per_subtask']} steps per subtask; between subtasks: "
            f"{saved['between_subtasks']}",
            "VLA checkpoints (one per training seed): "
            + (", ".join(f"`{c}`" for c in saved["checkpoints"]) or "none"),
            "modular: colour segmentation + RGB-D back-projection + scripted control "
            "(envs/modular.py), no training",
        ],
        columns=[
            "policy",
            "seeds",
            "mean chain length",
            "seed spread",
            f"P(length >= {max(1, n_sub // 2)}) % [95% CI]",
            "complete chains % [95% CI]",
        ],
        rows=rows,
        plots=[plot],
    )


__all__ = ["chain", "write_chain_page"]
