"""The main job: collect → train → evaluate → report, on Meta-World, from nothing, on a CPU.

``vlastack demo`` (and ``make demo``) runs the whole path of the survey's VLA pipeline with no hub
access and no data beforehand: scripted experts write a LeRobot-v3 dataset with a language
instruction per task, a VLA with pretrained (offline) vision and language encoders and a
continuous action head is trained on it, rolled out on held-out seeds with the official success
criterion, and summarised in an HTML report. Every knob scales the same command up to MT10/MT50.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError

# Four "easy"-group Meta-World tasks whose targets are visible from corner2 at 96x96 and whose
# scripted experts succeed ~100% of the time. (reach-v3 is left out: its goal is a few pixels
# wide at this resolution, and a policy that cannot see the goal reaches it 10% of the time.)
DEMO_TASKS = [
    "metaworld/button-press-topdown-v3",
    "metaworld/drawer-open-v3",
    "metaworld/door-open-v3",
    "metaworld/handle-press-v3",
]
EVAL_SEED = 100_000  # evaluation seeds start here; collection seeds are hashed (see envs/collect)


@dataclass
class DemoConfig:
    """Knobs of ``vlastack demo``; the defaults fit ~20 minutes on a 2-core CPU."""

    tasks: list[str] = field(default_factory=lambda: list(DEMO_TASKS))
    episodes_per_task: int = 40
    eval_episodes_per_task: int = 10
    recipe: str = "demo"
    train_minutes: float = 8.0  # a cap; the cosine schedule is laid out over `steps`
    steps: int = 1500
    batch_size: int = 64
    image_size: int = 96
    camera: str = "corner2"
    workers: int = 2
    seed: int = 0
    out: str = "demo_out"
    videos_per_task: int = 1
    noise: float = 0.1
    max_steps: int | None = None  # evaluation episode cap (None = the benchmark's 500 steps)
    overrides: list[str] = field(default_factory=list)  # extra `--key=value` for training
    progress: bool = True
    # the per-difficulty-group table (groups.md/.json/.png); None = when --tasks names a suite
    group_table: bool | None = None


def _say(msg: str) -> None:
    print(f"\n=== {msg}", flush=True)


def _check_tasks(tasks: list[str]) -> list[str]:
    """Env names with suites expanded (``metaworld/mt10`` -> 10 tasks; a bare task name gets the
    ``metaworld/`` prefix); an unknown name raises with did-you-mean."""
    from vlastack.envs import list_tasks

    if not tasks:
        raise ConfigError("the demo needs at least one task (--tasks)")
    out: list[str] = []
    for t in tasks:
        out.extend(list_tasks(t if "/" in t else f"metaworld/{t}"))
    return out


def _names_suite(tasks: list[str]) -> bool:
    """Whether any ``--tasks`` entry is a suite (mt10, mt50, a difficulty group), not one task."""
    from vlastack.envs import list_tasks

    return any(len(list_tasks(t if "/" in t else f"metaworld/{t}")) > 1 for t in tasks)


def _set_aside(path: Path) -> Path | None:
    """Rename a non-empty ``path`` to the first free ``path.1``, ``path.2``, ... (nothing is
    deleted); None when there was nothing to move."""
    if not path.is_dir() or not any(path.iterdir()):
        return None
    i = 1
    while path.with_name(f"{path.name}.{i}").exists():
        i += 1
    dest = path.with_name(f"{path.name}.{i}")
    path.rename(dest)
    return dest


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage; return the headline numbers (also written to ``<out>/demo_summary.json``)."""
    from vlastack.envs.collect import collect
    from vlastack.evaluation.groups import machine
    from vlastack.evaluation.report import build_report
    from vlastack.evaluation.rollout import evaluate
    from vlastack.training.config import TrainConfig
    from vlastack.training.loop import train

    tasks = _check_tasks(cfg.tasks)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, run_dir, eval_dir = out / "data", out / "run", out / "eval"
    # a second `make demo` in the same folder: the collected episodes are reused (collect tops
    # them up), the earlier run and its evaluation are kept under a numbered name
    for old in (run_dir, eval_dir):
        moved = _set_aside(old)
        if moved is not None:
            _say(f"an earlier demo's {old.name}/ is kept as {moved}")
    timings: dict[str, float] = {}
    size = (cfg.image_size, cfg.image_size)

    # 1. demonstrations ---------------------------------------------------------------------
    _say(
        f"1/4 collect: {len(tasks)} tasks x {cfg.episodes_per_task} scripted episodes -> {data_dir}"
    )
    t0 = time.perf_counter()
    expert_success: dict[str, float] = {}
    for task in tasks:
        summary = collect(
            task,
            data_dir,
            episodes_per_task=cfg.episodes_per_task,
            workers=cfg.workers,
            image_size=size,
            camera=cfg.camera,
            noise=cfg.noise,
            seed=cfg.seed,
            progress=cfg.progress,
        )
        for name, st in summary.tasks.items():
            if st.attempts:
                expert_success[name] = st.successes / st.attempts
    timings["collect_s"] = time.perf_counter() - t0

    # 2. training ---------------------------------------------------------------------------
    _say(f"2/4 train recipe '{cfg.recipe}' for up to {cfg.train_minutes:g} min -> {run_dir}")
    t0 = time.perf_counter()
    tcfg = TrainConfig.from_recipe(
        cfg.recipe,
        [
            f"--out_dir={run_dir}",
            f"--steps={cfg.steps}",
            f"--batch_size={cfg.batch_size}",
            f"--seed={cfg.seed}",
            f"--max_minutes={cfg.train_minutes}",
            f"--model.image_size=[{cfg.image_size},{cfg.image_size}]",
            *cfg.overrides,
        ],
    )
    tcfg.data = [str(data_dir)]
    tcfg.progress = cfg.progress
    result = train(tcfg)
    timings["train_s"] = time.perf_counter() - t0
    ckpt = result.last_checkpoint
    if ckpt is None:
        raise ConfigError(f"training wrote no checkpoint under {run_dir}")

    # 3. evaluation on held-out seeds -------------------------------------------------------
    _say(
        f"3/4 evaluate {ckpt.name} on {len(tasks)} tasks x {cfg.eval_episodes_per_task} held-out seeds"
    )
    t0 = time.perf_counter()
    results = evaluate(
        ckpt,
        tasks[0],
        tasks=tasks,
        episodes_per_task=cfg.eval_episodes_per_task,
        seed=cfg.seed + EVAL_SEED,
        workers=cfg.workers,
        image_size=size,
        camera=cfg.camera,
        video_episodes_per_task=cfg.videos_per_task,
        max_steps=cfg.max_steps,
        out_dir=eval_dir,
        label=f"{cfg.recipe} on {len(tasks)} Meta-World tasks",
        progress=cfg.progress,
    )
    timings["eval_s"] = time.perf_counter() - t0
    train_seeds = _collected_seeds(data_dir)
    seen = sum((r.task, r.seed) in train_seeds for r in results.records)

    # 4. report -----------------------------------------------------------------------------
    _say("4/4 report")
    report = build_report([eval_dir], out / "report.html", title="vlastack demo: Meta-World")
    overall = results.summary["overall"]
    per_task = {
        t: {
            "success_rate": agg.get("success_rate"),
            "ci95": [agg.get("ci95_low"), agg.get("ci95_high")],
            "expert_success_rate": expert_success.get(t),
            "successes": agg.get("successes"),
            "episodes": agg.get("episodes"),
        }
        for t, agg in results.summary.get("per_task", {}).items()
    }
    headline = {
        "tasks": tasks,
        "episodes_per_task": cfg.episodes_per_task,
        "eval_episodes_per_task": cfg.eval_episodes_per_task,
        "success_rate": overall.get("success_rate"),
        "ci95": [overall.get("ci95_low"), overall.get("ci95_high")],
        "expert_success_rate": (
            sum(expert_success.values()) / len(expert_success) if expert_success else None
        ),
        "per_task": per_task,
        "eval_seeds_seen_in_training": seen,
        "train_steps": result.step,
        "train_samples_per_s": result.samples_per_s,
        "latency_ms": overall.get("latency"),
        "mean_squared_jerk": overall.get("mean_squared_jerk"),
        "timings_s": timings,
        "report": str(report),
        "checkpoint": str(ckpt),
        "config": asdict(cfg),
        "machine": machine(),
    }
    (out / "demo_summary.json").write_text(json.dumps(headline, indent=2, default=str))
    _print_headline(headline)
    want_groups = cfg.group_table if cfg.group_table is not None else _names_suite(cfg.tasks)
    if want_groups:
        headline["groups"] = write_groups(out)
    return headline


def write_groups(out: Path | str) -> dict[str, Any]:
    """The per-difficulty-group table of a demo folder: write groups.md/.json/.png and print it."""
    from vlastack.evaluation.groups import write_group_table

    table = write_group_table(out)
    print("\n" + (Path(out) / "groups.md").read_text(), flush=True)
    print(f"per-group table: {Path(out) / 'groups.md'} (+ groups.json, groups.png)", flush=True)
    return table


def _collected_seeds(data_dir: Path) -> set[tuple[str, int]]:
    """(task, seed) of every collected episode, to prove evaluation seeds are held out."""
    path = data_dir / "meta" / "collect_state.json"
    if not path.exists():
        return set()
    episodes = json.loads(path.read_text()).get("episodes", [])
    return {(str(e["env"]), int(e["seed"])) for e in episodes}


def _fmt_rate(rate: Any, ci: Any) -> str:
    if rate is None:
        return "n/a"
    s = f"{100 * rate:.0f}%"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        s += f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"
    return s


def _print_headline(h: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vlastack demo: success on held-out seeds (Wilson 95% CI)")
    table.add_column("task")
    table.add_column("policy")
    table.add_column("scripted expert")
    for task, row in h["per_task"].items():
        exp = row["expert_success_rate"]
        table.add_row(
            task,
            _fmt_rate(row["success_rate"], row["ci95"]),
            "n/a" if exp is None else f"{100 * exp:.0f}%",
        )
    exp_all = h["expert_success_rate"]
    table.add_row(
        "[b]average[/b]",
        _fmt_rate(h["success_rate"], h["ci95"]),
        "n/a" if exp_all is None else f"{100 * exp_all:.0f}%",
    )
    console = Console()
    console.print(table)
    t = h["timings_s"]
    console.print(
        f"collect {t['collect_s']:.0f} s · train {t['train_s']:.0f} s ({h['train_steps']} steps) · "
        f"eval {t['eval_s']:.0f} s"
    )
    console.print(f"report: [b]{h['report']}[/b]")
