"""The survey's proposed checks as one-call benchmark suites, each writing report-ready folders.

``heads``: the same recipe backbone, data and training budget for each action head, trained and
evaluated (survey: "real-time performance analysis" / action-head comparison). ``stress``:
evaluation-time perturbations (``envs/perturbations.py``), reported as drops from unperturbed
success on the same seeds. ``transfer``: train on the native Sawyer, evaluate zero-shot and
after a small fine-tune on a re-parametrized 7-d Sawyer (``envs/reparam.py``). ``chain``: ≥10
subtasks in a row (``envs/chains.py``, CALVIN-style average chain length) against the modular
perception/planning/control baseline (``envs/modular.py``) on the same seeds.
"""

from __future__ import annotations

import json
import os
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
    summarize,
)

DEFAULT_HEADS = ("bins", "fast", "l1", "diffusion", "flow_matching", "act")
# Action normalization each head was published with where it needs a bounded range (diffusion
# clips x̂0 to [-1, 1]: Diffusion Policy's min-max; the bins and FAST: OpenVLA's / π0-FAST's
# quantiles). The other heads keep the recipe's (mean-std for `demo`).
HEAD_ACTION_NORMALIZATION = {
    "diffusion": "min_max",
    "bins": "quantile",
    "bins_ar": "quantile",
    "fast": "quantile",
}


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------
def register_env_names(names: list[str]) -> None:
    """Register the suite env names (``stress/``, ``chain/``, ``sawyer7/``) in ``ENVS``."""
    from vlastack.envs import chains, perturbations, reparam

    stress = [n for n in names if n.startswith(perturbations.PREFIX)]
    if stress:
        perturbations.register(stress)
    if any(n.startswith(chains.PREFIX) for n in names):
        chains.register()
    if any(n.startswith(reparam.PREFIX) for n in names):
        reparam.register()


class SuitePolicy:
    """Picklable zero-arg policy factory for ``evaluate``: loads ``checkpoint``.

    Unpickling it in a spawned evaluation worker registers the suite's env names first, so the
    worker's ``make_env`` finds ``stress/...`` and ``sawyer7/...`` (they are registered on
    demand, not at ``vlastack.envs`` import).
    """

    def __init__(self, checkpoint: str | Path, env_names: list[str]) -> None:
        self.checkpoint = str(checkpoint)
        self.env_names = list(env_names)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        register_env_names(self.env_names)

    def __call__(self) -> Any:
        from vlastack.evaluation.rollout import load_policy

        return load_policy(self.checkpoint)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def write_results(
    out: Path,
    records: list[EpisodeRecord],
    *,
    run: dict[str, Any],
    manifest: dict[str, Any],
    baseline_condition: str = "default",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A results folder that ``vlastack report`` reads: manifest, episodes.jsonl, summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records, baseline_condition=baseline_condition)
    summary["run"] = run
    if extra:
        summary.update(extra)
    _write_json(out / "manifest.json", manifest)
    tmp = out / f".episodes.jsonl.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    tmp.replace(out / "episodes.jsonl")
    _write_json(out / "summary.json", summary)
    return summary


def _checkpoint_info(checkpoint: str | Path) -> dict[str, Any]:
    from vlastack.evaluation.rollout import checkpoint_label, resolve_checkpoint_dir

    path = resolve_checkpoint_dir(checkpoint)
    return {"checkpoint": str(path), "checkpoint_label": checkpoint_label(path)}


def _fmt(x: Any, pct: bool = False, nd: int = 1) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.{nd}f}" if pct else f"{x:.{nd}f}"


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    Console(width=160).print(table)


# ---------------------------------------------------------------------------------------------
# Generalization stress
# ---------------------------------------------------------------------------------------------
def stress(
    checkpoint: str | Path,
    env: str,
    *,
    conditions: list[str] | None = None,
    episodes_per_task: int = 10,
    seed: int = 0,
    workers: int = 1,
    out_dir: str | Path = "results/stress",
    image_size: tuple[int, int] = (128, 128),
    max_steps: int | None = None,
    execute_horizon: int | None = None,
    video_episodes_per_task: int = 0,
    label: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``env`` unperturbed and under each perturbation, same seeds.

    Writes ``out_dir/<condition>/`` (one ``evaluate`` folder each) and ``out_dir/`` with all
    episodes, ``per_condition`` aggregates and each condition's ``drop`` (percentage points /
    100) from the ``default`` success rate. Returns that summary.
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
    info = _checkpoint_info(checkpoint)
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
                _fmt(agg["success_rate"], True),
                f"{_fmt(agg['ci95_low'], True)}–{_fmt(agg['ci95_high'], True)}",
                str(agg["completed"]),
                "-" if cond == "default" else _fmt(agg.get("drop"), True),
            ]
        )
    print_table(
        f"stress: {label} on {env}", ["condition", "success %", "95% CI", "n", "drop pp"], rows
    )
    return summary


# ---------------------------------------------------------------------------------------------
# Head-to-head
# ---------------------------------------------------------------------------------------------
def head_kwargs(head: str, base: dict[str, Any]) -> dict[str, Any]:
    """The recipe head's size (width/depth/num_heads) plus each head's own sampler settings."""
    size: dict[str, Any] = {k: base[k] for k in ("width", "num_heads") if k in base}
    depth = int(base.get("depth", 2))
    if head == "act":
        return {**size, "encoder_depth": max(1, depth // 2), "decoder_depth": depth}
    kw = {**size, "depth": depth}
    if head == "diffusion":
        kw.update(num_inference_steps=10)
    elif head == "flow_matching":
        kw.update(num_steps=10)
    elif head == "bins":
        kw.update(num_bins=256)
    return kw


def ensure_dataset(
    env: str,
    data: str | Path | None,
    out: Path,
    *,
    episodes_per_task: int,
    image_size: tuple[int, int],
    seed: int,
    workers: int,
    progress: bool,
) -> Path:
    """``data`` if given (must exist), else expert demonstrations collected into ``out``
    (``env`` may list several envs or suites, comma-separated: one dataset for all)."""
    if data is not None:
        p = Path(data)
        if not (p / "meta" / "info.json").exists():
            raise ConfigError(
                f"--data {p}: not a LeRobot v3 dataset (no meta/info.json); omit --data to "
                "collect one"
            )
        return p
    from vlastack.envs.collect import collect

    names = split_envs(env)
    register_env_names(names)
    for name in names:  # collect appends each env's tasks to the same dataset (and resumes)
        collect(
            name,
            out,
            episodes_per_task=episodes_per_task,
            image_size=image_size,
            seed=seed,
            workers=max(1, workers),
            progress=progress,
        )
    return out


def split_envs(env: str) -> list[str]:
    """``"metaworld/door-open-v3,metaworld/drawer-open-v3"`` -> the names; one name -> [name]."""
    names = [e.strip() for e in env.split(",") if e.strip()]
    if not names:
        raise ConfigError(f"env {env!r}: name at least one environment or suite")
    return names


def _train_one(
    recipe: str,
    data: Path,
    out: Path,
    *,
    steps: int,
    max_minutes: float | None,
    model: dict[str, Any],
    seed: int,
    progress: bool,
    build: Callable[[Any], Any] | None = None,
    extra_overrides: list[str] | None = None,
) -> tuple[Any, float]:
    from vlastack.training.config import TrainConfig
    from vlastack.training.loop import train

    cfg = TrainConfig.from_recipe(recipe, list(extra_overrides or []))
    cfg.data = [str(data)]
    cfg.out_dir = str(out)
    cfg.steps = steps
    cfg.max_minutes = max_minutes
    cfg.seed = seed
    cfg.log = "none"
    cfg.progress = progress
    cfg.model = {**cfg.model, **model}
    cfg.warmup_steps = min(cfg.warmup_steps, max(1, steps // 10))
    t0 = time.perf_counter()
    result = train(cfg, build)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        # train() saved a checkpoint and returned; a suite must stop, not go on to evaluate
        raise KeyboardInterrupt(f"training stopped by {result.stopped_by}; run dir {out}")
    return result, time.perf_counter() - t0


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
    image_size: tuple[int, int] = (96, 96),
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
    )
    base = get_recipe(recipe)
    rows: list[dict[str, Any]] = []
    for head in heads:
        if progress:
            print(f"[heads] {head}: training {steps} steps of recipe {recipe}")
        kw = head_kwargs(head, base.model.head_kwargs)
        model: dict[str, Any] = {"head": head, "head_kwargs": kw}
        if head in HEAD_ACTION_NORMALIZATION:
            model["normalization"] = {"action": HEAD_ACTION_NORMALIZATION[head]}
        result, train_s = _train_one(
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
            image_size=image_size,
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
    _write_json(out / "heads.json", table)
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
                _fmt(r["success_rate"], True),
                f"{_fmt(r['ci95'][0], True)}–{_fmt(r['ci95'][1], True)}",
                "-" if r["mean_squared_jerk"] is None else f"{r['mean_squared_jerk']:.3g}",
                _fmt(r["chunk_jump"], nd=3),
                _fmt(r["latency_p50_ms"]),
                _fmt(r["latency_p95_ms"]),
                _fmt(r["peak_rss_mb"], nd=0),
                _fmt(r["train_s"], nd=0),
                f"{(r['params_total'] or 0) / 1e6:.2f}M",
            ]
            for r in rows
        ],
    )
    return table


# ---------------------------------------------------------------------------------------------
# Embodiment transfer
# ---------------------------------------------------------------------------------------------
def _warm_start_build(source: Path) -> Callable[[Any], Any]:
    """A ``build`` for ``train`` that copies every source-checkpoint tensor whose name and shape
    match (encoders, trunk, most of the head) and leaves the rest (action in/out) fresh."""

    def build(cfg: Any) -> Any:
        from vlastack.training.checkpoint import load_checkpoint
        from vlastack.training.loop import build_parts

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
    image_size: tuple[int, int] = (96, 96),
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
        )
        res, src_train_s = _train_one(
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
    )
    ft, ft_s = _train_one(
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
    _write_json(out / "transfer.json", summary)
    print_table(
        f"transfer {src_env} -> {tgt_env}",
        ["run", "env", "success %", "95% CI"],
        [
            [
                k,
                v["env"],
                _fmt(v["success_rate"], True),
                f"{_fmt(v['ci95'][0], True)}–{_fmt(v['ci95'][1], True)}",
            ]
            for k, v in rates.items()
        ],
    )
    return summary


# ---------------------------------------------------------------------------------------------
# Long-horizon chains vs the modular baseline
# ---------------------------------------------------------------------------------------------
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
    image_size: tuple[int, int] = (128, 128),
    execute_horizon: int | None = None,
    modular: bool = True,
    out_dir: str | Path = "results/chain",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``episodes`` chains of ``num_subtasks`` with the VLA (``checkpoint``; None skips it)
    and the modular baseline on the same seeds; writes ``out_dir/vla`` and ``out_dir/modular``
    (report: chain-length curves) and ``chain.json``. Runs in this process."""
    from tqdm.auto import tqdm

    from vlastack.envs.chains import ChainEnv
    from vlastack.envs.modular import ModularPolicy

    if checkpoint is None and not modular:
        raise ConfigError("chain: nothing to run; give a checkpoint or keep the modular baseline")
    out = Path(out_dir)
    seeds = [seed + i for i in range(episodes)]
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

            info = _checkpoint_info(checkpoint)
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
    _write_json(out / "chain.json", {**proto, "results": table})
    print_table(
        f"chain/{task}: {num_subtasks} subtasks, {episodes} chains",
        ["policy", "avg chain length", "P(>=1)", "P(>=5)", f"P(={num_subtasks})"],
        [
            [
                k,
                _fmt(v["chain_length_mean"], nd=2),
                _fmt((v["chain_success_at"] or {}).get("1"), True),
                _fmt((v["chain_success_at"] or {}).get("5"), True),
                _fmt((v["chain_success_at"] or {}).get(str(num_subtasks)), True),
            ]
            for k, v in table.items()
        ],
    )
    return table


__all__ = [
    "DEFAULT_HEADS",
    "SuitePolicy",
    "chain",
    "ensure_dataset",
    "head_kwargs",
    "heads",
    "register_env_names",
    "stress",
    "transfer",
    "write_results",
]
