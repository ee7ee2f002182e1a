"""Meta-World success per difficulty group, beside the published MT50 rows.

The MT50 protocol SmolVLA and LeRobot report (REFERENCE.md, "Meta-World MT50"): 10 evaluation
episodes per task on held-out seeds, a 500-step limit, ``info["success"]`` at any step, success
per difficulty group (Seo et al. 2022: easy 28, medium 11, hard 6, very hard 5 tasks) and the
average. The published average is the mean of the four group rates (SmolVLA-0.45B:
(82.5 + 41.8 + 45.0 + 60.0) / 4 = 57.3), not the rate over all 500 episodes, so this table gives
both: ``average`` (mean of the groups present, comparable to the published column) and ``pooled``
(every episode counted once, with its Wilson interval).

``group_table`` builds the table from a demo output folder (``eval/summary.json`` for the policy,
``data/meta/collect_state.json`` for the scripted experts' own success, ``demo_summary.json`` for
the training budget); ``write_group_table`` writes it as ``groups.md``, ``groups.json`` and
``groups.png`` (bars with Wilson 95% intervals and the published rows beside).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from vlastack.envs.metaworld_tasks import DIFFICULTY, difficulty_of
from vlastack.errors import ConfigError
from vlastack.evaluation.metrics import wilson_interval

GROUPS = list(DIFFICULTY)  # easy, medium, hard, very_hard
GROUP_TITLES = {"easy": "easy", "medium": "medium", "hard": "hard", "very_hard": "very hard"}

# Published MT50 success (%), as REFERENCE.md lists them from SmolVLA's MT50 table (arXiv
# 2506.01844; secondary copies, "consistent across 4 copies"). None = not given per group there.
# REFERENCE.md notes that the table's "pi0" row may be what other papers label pi0-FAST.
PUBLISHED_MT50: list[dict[str, Any]] = [
    {"name": "SmolVLA-2.25B", "easy": 87.14, "medium": 51.82, "hard": 70.0, "very_hard": 64.0,
     "average": 68.24},
    {"name": "SmolVLA-0.45B", "easy": 82.5, "medium": 41.8, "hard": 45.0, "very_hard": 60.0,
     "average": 57.3},
    {"name": "SmolVLA-0.24B", "easy": 86.43, "medium": 46.36, "hard": 35.0, "very_hard": 60.0,
     "average": 56.95},
    {"name": "pi0 (3.3B)", "easy": None, "medium": None, "hard": None, "very_hard": None,
     "average": 47.9},
    {"name": "TinyVLA", "easy": 77.6, "medium": 21.5, "hard": 11.4, "very_hard": 15.8,
     "average": 31.6},
    {"name": "Diffusion Policy", "easy": None, "medium": None, "hard": None, "very_hard": None,
     "average": 10.5},
]  # fmt: skip
PUBLISHED_SOURCE = (
    "SmolVLA (Shukor et al. 2025, arXiv 2506.01844) MT50 table, as copied in REFERENCE.md; "
    "GPU-trained on LeRobot's MT50 dataset (50 episodes per task)"
)


def _load(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing ({what}); run `vlastack demo --out {path.parent}` first"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON ({exc}); rerun the stage that wrote it"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def machine() -> dict[str, Any]:
    """The CPU this ran on: model name, logical cores, load average (for honest timings)."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {"cpu": model or "unknown", "cores": os.cpu_count(), "loadavg": load}


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {
        "successes": k,
        "episodes": n,
        "success_rate": k / n if n else None,
        "ci95": [lo, hi] if n else None,
    }


def group_rows(
    per_task: dict[str, dict[str, Any]], expert: dict[str, float] | None = None
) -> dict[str, Any]:
    """Per-group success from per-task counts.

    ``per_task`` maps a Meta-World task to ``{"successes": k, "episodes": n}`` (errored episodes
    count as failures: pass the headline counts); ``expert`` maps a task to the scripted expert's
    success rate during collection. Returns ``{"groups": {group: row}, "average": ...,
    "pooled": ...}``; a group without tasks here is left out (and ``missing_groups`` says so).
    """
    expert = expert or {}
    groups: dict[str, Any] = {}
    for g in GROUPS:
        tasks = sorted(t for t in per_task if difficulty_of(t) == g)
        if not tasks:
            continue
        k = sum(int(per_task[t]["successes"]) for t in tasks)
        n = sum(int(per_task[t]["episodes"]) for t in tasks)
        ex = [expert[t] for t in tasks if t in expert]
        groups[g] = {
            "tasks": len(tasks),
            "of_mt50": len(DIFFICULTY[g]),
            **_rate(k, n),
            "expert_success_rate": sum(ex) / len(ex) if ex else None,
        }
    rates = [r["success_rate"] for r in groups.values() if r["success_rate"] is not None]
    ex_rates = [r["expert_success_rate"] for r in groups.values()]
    k_all = sum(int(r["successes"]) for r in per_task.values())
    n_all = sum(int(r["episodes"]) for r in per_task.values())
    return {
        "groups": groups,
        "missing_groups": [g for g in GROUPS if g not in groups],
        "average": sum(rates) / len(rates) if rates else None,
        "expert_average": (
            sum(ex_rates) / len(ex_rates) if ex_rates and None not in ex_rates else None
        ),
        "pooled": _rate(k_all, n_all),
    }


def group_table(out: Path | str) -> dict[str, Any]:
    """The per-group table of a ``vlastack demo`` output folder (see the module docstring)."""
    out = Path(out)
    summary = _load(out / "eval" / "summary.json", "the evaluation summary")
    per_task_raw = summary.get("per_task")
    if not isinstance(per_task_raw, dict) or not per_task_raw:
        raise ConfigError(f"{out / 'eval' / 'summary.json'}: no per_task results")
    per_task = {
        t: {"successes": int(a["successes"]), "episodes": int(a["episodes"])}
        for t, a in per_task_raw.items()
    }
    expert: dict[str, float] = {}
    state_path = out / "data" / "meta" / "collect_state.json"
    if state_path.is_file():
        for t, st in _load(state_path, "the collection state").get("tasks", {}).items():
            if st.get("next_attempt"):
                expert[t] = st["successes"] / st["next_attempt"]
    demo = _load(out / "demo_summary.json", "the demo summary")
    timings = demo.get("timings_s", {})
    cfg = demo.get("config", {})
    table = group_rows(per_task, expert)
    table["per_task"] = {
        t: {**_rate(v["successes"], v["episodes"]), "expert_success_rate": expert.get(t),
            "group": difficulty_of(t)}
        for t, v in sorted(per_task.items())
    }  # fmt: skip
    table["budget"] = {
        "episodes_per_task": cfg.get("episodes_per_task"),
        "eval_episodes_per_task": cfg.get("eval_episodes_per_task"),
        "recipe": cfg.get("recipe"),
        "image_size": cfg.get("image_size"),
        "train_steps": demo.get("train_steps"),
        "train_samples_per_s": demo.get("train_samples_per_s"),
        "collect_s": timings.get("collect_s"),
        "train_s": timings.get("train_s"),
        "eval_s": timings.get("eval_s"),
        "total_s": sum(v for v in timings.values() if isinstance(v, (int, float))) or None,
    }
    # a demo from before the machine was recorded: the CPU now, without today's load
    table["machine"] = demo.get("machine") or {**machine(), "loadavg": None}
    table["published"] = PUBLISHED_MT50
    table["published_source"] = PUBLISHED_SOURCE
    return table


def _pct(rate: float | None, ci: list[float] | None = None) -> str:
    if rate is None:
        return "–"
    s = f"{100 * rate:.1f}"
    if ci:
        s += f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"
    return s


def table_markdown(table: dict[str, Any], label: str = "vlastack (this run)") -> str:
    """The table as markdown: this run, its scripted experts, the published rows, the budget."""
    g = table["groups"]
    head = [""]
    for x in GROUPS:
        n = g[x]["tasks"] if x in g else 0
        head.append(f"{GROUP_TITLES[x]} ({n} of {len(DIFFICULTY[x])} tasks)")
    head.append("average of groups")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, cells: list[str], avg: str) -> None:
        lines.append("| " + " | ".join([name, *cells, avg]) + " |")

    row(
        f"**{label}**, % [Wilson 95%]",
        [_pct(g[x]["success_rate"], g[x]["ci95"]) if x in g else "not run" for x in GROUPS],
        f"**{_pct(table['average'])}**",
    )
    row(
        "scripted expert (collection), %",
        [_pct(g[x]["expert_success_rate"]) if x in g else "not run" for x in GROUPS],
        _pct(table["expert_average"]),
    )
    for p in table["published"]:
        cells = ["–" if p[x] is None else f"{p[x]:g}" for x in GROUPS]
        row(f"{p['name']} (published, MT50)", cells, f"{p['average']:g}")
    pooled = table["pooled"]
    b, m = table["budget"], table["machine"]

    def sec(key: str) -> str:
        v = b.get(key)
        return "?" if v is None else f"{v:.0f} s"

    if table["missing_groups"]:
        lines += [
            "",
            f"The average is over the {len(g)} groups run here; the published MT50 averages are "
            "over all four groups (mean of the group rates), so they compare group by group only.",
        ]
    lines += [
        "",
        f"Pooled over all {pooled['episodes']} evaluation episodes: "
        f"{_pct(pooled['success_rate'], pooled['ci95'])} %. Published rows: {table['published_source']}.",
        "",
        f"Budget: {b.get('episodes_per_task')} scripted demonstrations per task, recipe "
        f"`{b.get('recipe')}`, {b.get('image_size')}x{b.get('image_size')} images, "
        f"{b.get('train_steps')} training steps; collect {sec('collect_s')}, train "
        f"{sec('train_s')}, evaluate {sec('eval_s')} ({b.get('eval_episodes_per_task')} "
        f"held-out episodes per task), total {sec('total_s')}. Machine: {m.get('cpu')}, "
        f"{m.get('cores')} logical cores, no GPU.",
    ]
    return "\n".join(lines) + "\n"


def plot_groups(table: dict[str, Any], path: Path, label: str = "vlastack (this run)") -> Path:
    """Bar plot: success per group and the average, this run with Wilson 95% intervals, the
    scripted experts, and the published rows beside (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [*GROUPS, "average"]
    g = table["groups"]
    series: list[tuple[str, list[float], list[list[float]] | None, dict[str, Any]]] = []
    rates = [100 * g[x]["success_rate"] if x in g else np.nan for x in GROUPS]
    rates.append(100 * table["average"] if table["average"] is not None else np.nan)
    err_lo = [rates[i] - 100 * g[x]["ci95"][0] if x in g else 0.0 for i, x in enumerate(GROUPS)]
    err_hi = [100 * g[x]["ci95"][1] - rates[i] if x in g else 0.0 for i, x in enumerate(GROUPS)]
    series.append((label, rates, [[*err_lo, np.nan], [*err_hi, np.nan]], {"color": "tab:blue"}))
    ex = [
        100 * g[x]["expert_success_rate"]
        if x in g and g[x]["expert_success_rate"] is not None
        else np.nan
        for x in GROUPS
    ]
    ex.append(100 * table["expert_average"] if table["expert_average"] is not None else np.nan)
    series.append(("scripted expert", ex, None, {"color": "0.75", "hatch": "//"}))
    for p in table["published"]:
        vals = [np.nan if p[x] is None else p[x] for x in GROUPS] + [p["average"]]
        series.append((f"{p['name']} (published)", vals, None, {"alpha": 0.75}))

    x = np.arange(len(cols))
    width = 0.85 / len(series)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for i, (name, vals, err, style) in enumerate(series):
        pos = x - 0.425 + width * (i + 0.5)
        ax.bar(pos, vals, width, label=name, yerr=err, capsize=2 if err else 0, **style)
    labels = [
        f"{GROUP_TITLES[c]}\n({g[c]['tasks']}/{g[c]['of_mt50']} tasks)"
        if c in g
        else f"{GROUP_TITLES[c]}\n(not run)"
        for c in GROUPS
    ] + ["average\nof groups"]
    ax.set_xticks(x, labels)
    ax.set_ylabel("success %")
    ax.set_ylim(0, 105)
    ax.set_title("Meta-World success per difficulty group (bars: Wilson 95% intervals)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def write_group_table(out: Path | str, label: str = "vlastack (this run)") -> dict[str, Any]:
    """Write ``groups.md``, ``groups.json`` and ``groups.png`` into ``out``; return the table."""
    out = Path(out)
    table = group_table(out)
    (out / "groups.json").write_text(json.dumps(table, indent=2))
    (out / "groups.md").write_text(table_markdown(table, label))
    plot_groups(table, out / "groups.png", label)
    return table
