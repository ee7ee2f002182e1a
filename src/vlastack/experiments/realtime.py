"""``runtime``: action-runtime strategies (sync, ensemble, async, RTC) × inference delays × policies
(e.g. two heads) in a real simulator, in virtual time (``serving/simulate.py``).

Each inference takes exactly the simulated delay of virtual time, so results do not depend on
the machine's load. The control rate is emulated: one control tick = one env step, so a delay of
δ ms spans δ·Hz/1000 ticks; a missed tick sends a hold command (zero motion, last gripper command).
Per policy, delay and strategy, over every task and episode seed: success (Wilson interval,
pooled over the policy's checkpoints, one per training seed, with their spread), missed ticks per
episode, and the command jump ‖a_t − a_{t−1}‖ at chunk switches and inside chunks. ``rtc`` runs
only for policies that support guided sampling (flow matching).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.experiments.common import write_json
from vlastack.experiments.page import (
    SuccessCell,
    line_plot,
    num,
    spread_text,
    success_cell,
    success_text,
    write_section,
)

STRATEGIES = ("sync", "ensemble", "async", "async_latest", "rtc")


def sim_strategies(
    policy: Any, hz: float, delay_ms: float
) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, runtime name, runtime kwargs) per strategy. Request threshold g: SmolVLA's 0.5,
    raised when the delay is longer than half a chunk so that the queue still holds the
    d = ⌈δ·Hz⌉ actions that run while the next chunk computes."""
    delay_ticks = math.ceil(delay_ms / 1000 * hz - 1e-9)
    g = round(max(0.5, min(1.0, (delay_ticks + 1) / policy.action_horizon)), 3)
    out = [
        ("sync", "sync", {}),
        ("ensemble", "ensemble", {"m": 0.01}),
        ("async", "async", {"threshold": g, "control_hz": hz}),
        (
            "async_latest",
            "async",
            {"threshold": g, "aggregate": "latest_only", "control_hz": hz},
        ),
    ]
    if policy.supports_guided_sampling:
        out.append(("rtc", "rtc", {"threshold": g, "control_hz": hz}))
    return out


def strategy_label(key: str, kw: dict[str, Any], policy: Any) -> str:
    if key == "sync":
        return f"sync (execute {policy.execute_horizon})"
    if key == "ensemble":
        return "ensemble (ACT m=0.01)"
    if key == "async":
        return f"async weighted_avg g={kw['threshold']}"
    if key == "async_latest":
        return f"async latest_only g={kw['threshold']}"
    return f"rtc g={kw['threshold']} beta=5 exp"


def nanmean(values: list[float]) -> float:
    """Mean over the episodes where the metric exists (no boundary inside ensembling: NaN)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def metaworld_hold(last: np.ndarray | None) -> np.ndarray:
    """Missed tick: no motion (xyz delta 0), the gripper keeps its last command."""
    hold = np.zeros(4)
    if last is not None:
        hold[3] = last[3]
    return hold


def parse_policies(specs: list[str]) -> dict[str, list[str]]:
    """``["l1=runs/a", "l1=runs/b", "runs/c"]`` -> ``{"l1": [a, b], "c": [c]}`` (a bare path is
    labelled by its run folder); the same label repeated = that policy's training seeds."""
    from vlastack.evaluation.loading import checkpoint_label

    out: dict[str, list[str]] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = "", spec
        if not Path(path).exists():
            raise ConfigError(f"runtime: checkpoint {path!r} does not exist (give [LABEL=]PATH)")
        out.setdefault(label or checkpoint_label(path), []).append(path)
    if not out:
        raise ConfigError("runtime: give at least one checkpoint ([LABEL=]PATH)")
    return out


def run_policy(
    checkpoint: str,
    tasks: list[str],
    *,
    delays: list[float],
    control_hz: float,
    episodes_per_task: int,
    seed: int,
    max_ticks: int,
    strategies: list[str],
) -> list[dict[str, Any]]:
    """Every (delay, strategy) of one checkpoint over ``tasks`` × episodes; one row each."""
    from vlastack.envs import make_env
    from vlastack.evaluation.rollout import episode_seed
    from vlastack.policy import Policy
    from vlastack.serving.runtime import make_runtime
    from vlastack.serving.simulate import SimClock, SimExecutor, simulate_env

    policy = Policy.from_checkpoint(checkpoint)
    rows: list[dict[str, Any]] = []
    episodes: dict[tuple[float, str], list[dict[str, Any]]] = {}
    labels: dict[tuple[float, str], str] = {}
    for ti, task in enumerate(tasks):
        env = make_env(
            task,
            camera=policy.cameras[0] if policy.cameras else None,
            image_size=policy.image_size,
        )
        try:
            for delay_ms in delays:
                for key, name, kw in sim_strategies(policy, control_hz, delay_ms):
                    if key not in strategies:
                        continue
                    labels[(delay_ms, key)] = strategy_label(key, kw, policy)
                    for ep in range(episodes_per_task):
                        clock = SimClock()
                        extra = {"executor": SimExecutor(clock, delay_ms / 1000), "clock": clock}
                        with make_runtime(name, policy, **kw, **extra) as rt:
                            res = simulate_env(
                                rt,
                                env,
                                control_hz,
                                max_ticks,
                                clock,
                                seed=episode_seed(seed, ti, ep, episodes_per_task),
                                hold_action=metaworld_hold
                                if env.embodiment.action.dim == 4
                                else None,
                                state_dims=slice(0, 3),
                            )
                        episodes.setdefault((delay_ms, key), []).append({"task": task, **res.row()})
        finally:
            env.close()
    for (delay_ms, key), eps in episodes.items():
        rows.append(
            {
                "delay_ms": delay_ms,
                "strategy": key,
                "label": labels[(delay_ms, key)],
                "successes": sum(bool(e["success"]) for e in eps),
                "episodes": len(eps),
                "missed_ticks": nanmean([float(e["missed_ticks"]) for e in eps]),
                "boundary_jump": nanmean([float(e["boundary_jump"]) for e in eps]),
                "within_chunk_jump": nanmean([float(e["within_chunk_jump"]) for e in eps]),
                "inferences": nanmean([float(e["inferences"]) for e in eps]),
                "per_episode": eps,
            }
        )
    return rows


def runtime_suite(
    policies: list[str],
    env: str = "metaworld/reach-v3",
    *,
    delays: list[float] | None = None,
    control_hz: float = 20.0,
    strategies: list[str] | None = None,
    episodes_per_task: int = 10,
    seed: int = 0,
    max_ticks: int = 250,
    out_dir: str | Path = "results/runtime",
    progress: bool = True,
) -> dict[str, Any]:
    """Run every policy (``[LABEL=]PATH``; a repeated label = that policy's training seeds) under
    each strategy and delay; writes ``runtime.json`` and the page (``section.md``,
    ``runtime_success_<policy>.png``, ``runtime_missed_<policy>.png``)."""
    from vlastack.evaluation.rollout import resolve_tasks

    groups = parse_policies(policies)
    delays = list(delays if delays is not None else [0.0, 100.0, 200.0, 400.0])
    strategies = list(strategies or STRATEGIES)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"runtime: unknown strategy {unknown}; choose from {list(STRATEGIES)}")
    if any(d < 0 for d in delays) or control_hz <= 0:
        raise ConfigError(f"runtime: delays must be >= 0 ms and control_hz > 0, got {delays}")
    tasks = resolve_tasks(env)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for label, ckpts in groups.items():
        for si, ckpt in enumerate(ckpts):
            if progress:
                print(f"[runtime] {label} ({si + 1}/{len(ckpts)}): {ckpt} on {len(tasks)} task(s)")
            for r in run_policy(
                ckpt,
                tasks,
                delays=delays,
                control_hz=control_hz,
                episodes_per_task=episodes_per_task,
                seed=seed,
                max_ticks=max_ticks,
                strategies=strategies,
            ):
                runs.append({"policy": label, "checkpoint": ckpt, **r})
    rows = []
    for label in groups:
        for d in delays:
            for s in strategies:
                mine = [r for r in runs if r["policy"] == label and r["delay_ms"] == d]
                mine = [r for r in mine if r["strategy"] == s]
                if not mine:
                    continue  # rtc for a policy without guided sampling
                cell = success_cell([(r["successes"], r["episodes"]) for r in mine])
                rows.append(
                    {
                        "policy": label,
                        "delay_ms": d,
                        "strategy": s,
                        "label": mine[0]["label"],
                        "success": cell.to_dict(),
                        **{
                            m: nanmean([r[m] for r in mine])
                            for m in ("missed_ticks", "boundary_jump", "within_chunk_jump")
                        },
                    }
                )
    table = {
        "suite": "runtime",
        "env": env,
        "tasks": tasks,
        "policies": groups,
        "delays_ms": delays,
        "control_hz": control_hz,
        "strategies": strategies,
        "episodes_per_task": episodes_per_task,
        "max_ticks": max_ticks,
        "time": "virtual",
        "rows": rows,
        "runs": [{k: v for k, v in r.items() if k != "per_episode"} for r in runs],
    }
    write_json(out / "runtime.json", {**table, "episodes": runs})
    write_runtime_page(out, table)
    return table


def write_runtime_page(out: Path, table: dict[str, Any]) -> Path:
    rows = table["rows"]
    plots = []
    delays = list(table["delays_ms"])
    for label in table["policies"]:
        mine = [r for r in rows if r["policy"] == label]
        by_s: dict[str, Sequence[tuple[float, float, float] | None]] = {}
        missed: dict[str, Sequence[tuple[float, float, float] | None]] = {}
        for s in table["strategies"]:
            pts: list[tuple[float, float, float] | None] = []
            mt: list[tuple[float, float, float] | None] = []
            for d in delays:
                r = next((x for x in mine if x["strategy"] == s and x["delay_ms"] == d), None)
                c = SuccessCell.from_dict(r["success"]) if r else None
                pts.append((c.rate or 0.0, *c.ci95) if c and c.n else None)
                v = r["missed_ticks"] if r else float("nan")
                mt.append(None if math.isnan(v) else (v, v, v))
            if any(p is not None for p in pts):
                by_s[s], missed[s] = pts, mt
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
        plots.append(
            line_plot(
                out / f"runtime_success_{safe}.png",
                delays,
                by_s,
                title=f"{label}: success vs inference delay ({table['control_hz']:g} Hz)",
                xlabel="inference delay (ms)",
                ylabel="success rate (%)",
            )
        )
        plots.append(
            line_plot(
                out / f"runtime_missed_{safe}.png",
                delays,
                missed,
                title=f"{label}: missed control ticks per episode",
                xlabel="inference delay (ms)",
                ylabel="missed ticks / episode",
                percent=False,
            )
        )
    n_ckpt = {k: len(v) for k, v in table["policies"].items()}
    return write_section(
        out,
        title=f"Real-time strategies x inference delay on {table['env']}",
        setup=[
            f"tasks: {', '.join(table['tasks'])}; {table['episodes_per_task']} episodes per task "
            f"per cell per checkpoint, the same episode seeds in every cell; cap "
            f"{table['max_ticks']} ticks",
            "policies (checkpoints = training seeds): "
            + ", ".join(f"{k} ({n})" for k, n in n_ckpt.items()),
            f"control {table['control_hz']:g} Hz emulated (one tick = one env step), virtual "
            f"time: each inference takes exactly the delay; delays {delays} ms",
        ],
        columns=[
            "policy",
            "delay ms",
            "strategy",
            "success % [95% CI] (succ/n)",
            "seed spread",
            "missed ticks/ep",
            "jump @switch",
            "jump inside",
        ],
        rows=[
            [
                r["policy"],
                f"{r['delay_ms']:g}",
                r["label"],
                success_text(c := SuccessCell.from_dict(r["success"])),
                spread_text(c.per_seed),
                num(r["missed_ticks"]),
                num(r["boundary_jump"], nd=4),
                num(r["within_chunk_jump"], nd=4),
            ]
            for r in rows
        ],
        plots=plots,
        notes=[
            "Jumps: mean ‖a_t − a_{t−1}‖ of the commands sent, at ticks where the executing "
            "chunk changed and at the other ticks (for scale). A missed tick holds the robot. "
            "rtc appears only for policies with guided sampling (flow matching)."
        ],
    )


__all__ = [
    "STRATEGIES",
    "metaworld_hold",
    "nanmean",
    "parse_policies",
    "runtime_suite",
    "sim_strategies",
    "write_runtime_page",
]
