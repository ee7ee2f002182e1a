"""A self-contained HTML report of one or more evaluation results folders.

Plots (inline SVG from matplotlib): success by task with Wilson 95% error bars, success against
latency across runs, drops under stress conditions, chain length for long-horizon runs. Tables of
the aggregates, the rollout videos (embedded as data URIs or linked relatively) and the manifests.
No scripts or external resources, so the page works opened from disk or from any static server.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError

EMBED_LIMIT_BYTES = 25 * 1024 * 1024  # "auto" embeds videos while their total stays below this


@dataclass
class Run:
    """One results folder as written by ``evaluate``."""

    path: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    episodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.summary.get("run", {}).get("label") or self.path.name)

    @property
    def condition(self) -> str:
        return str(self.summary.get("run", {}).get("condition") or "default")


def load_run(path: str | Path) -> Run:
    path = Path(path)
    summary_path = path / "summary.json"
    if not summary_path.exists():
        raise ConfigError(
            f"{path} is not a results folder (no summary.json); pass folders written by "
            "`vlastack eval --out DIR`"
        )
    try:
        summary = json.loads(summary_path.read_text())
        manifest_path = path / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        episodes = []
        ep_path = path / "episodes.jsonl"
        if ep_path.exists():
            episodes = [json.loads(x) for x in ep_path.read_text().splitlines() if x.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: a results file is not valid JSON ({exc})") from None
    return Run(path, manifest, summary, episodes)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype; inline SVG needs neither


def _rate_err(agg: dict[str, Any]) -> tuple[float, float, float]:
    rate = agg.get("success_rate")
    if rate is None:
        return float("nan"), 0.0, 0.0
    return (
        100 * rate,
        max(0.0, 100 * (rate - agg["ci95_low"])),
        max(0.0, 100 * (agg["ci95_high"] - rate)),
    )


def plot_success_by_task(runs: list[Run]) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = sorted({t for r in runs for t in r.summary.get("per_task", {})})
    n_runs = len(runs)
    width = 0.8 / n_runs
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(tasks) * max(1, n_runs) + 2), 3.8))
    x = np.arange(len(tasks))
    for i, run in enumerate(runs):
        rates, lo, hi = [], [], []
        for t in tasks:
            r, e_lo, e_hi = _rate_err(run.summary["per_task"].get(t, {}))
            rates.append(r)
            lo.append(e_lo)
            hi.append(e_hi)
        ax.bar(
            x + (i - (n_runs - 1) / 2) * width,
            rates,
            width,
            yerr=[lo, hi],
            capsize=3,
            label=run.label,
        )
    ax.set_xticks(x, [t.split("/")[-1] for t in tasks], rotation=40, ha="right")
    ax.set_ylabel("success % (Wilson 95% CI)")
    ax.set_ylim(0, 105)
    ax.set_title("Success by task")
    if n_runs > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def plot_success_vs_latency(runs: list[Run]) -> str | None:
    import matplotlib.pyplot as plt

    pts = []
    for run in runs:
        o = run.summary["overall"]
        lat = (o.get("latency") or {}).get("p50_ms")
        if lat is None or o.get("success_rate") is None:
            continue
        pts.append((run.label, lat, (o["latency"].get("p95_ms") or lat), *_rate_err(o)))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, p50, p95, rate, lo, hi in pts:
        ax.errorbar(p50, rate, yerr=[[lo], [hi]], xerr=[[0], [p95 - p50]], fmt="o", capsize=3)
        ax.annotate(label, (p50, rate), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("inference latency per chunk, p50 (bar to p95), ms")
    ax.set_ylabel("success %")
    ax.set_ylim(0, 105)
    ax.set_title("Success vs latency")
    ax.grid(alpha=0.3)
    return _svg(fig)


def stress_drops(runs: list[Run]) -> list[tuple[str, str, float]]:
    """(run label, condition, drop in percentage points) from per-condition summaries, or from
    several runs of one label that differ only in their condition."""
    out: list[tuple[str, str, float]] = []
    for run in runs:
        per_cond = run.summary.get("per_condition") or {}
        base = run.summary.get("baseline_condition", "default")
        for cond, agg in per_cond.items():
            if cond != base and agg.get("drop") is not None:
                out.append((run.label, cond, 100 * agg["drop"]))
    by_label: dict[str, dict[str, float]] = {}
    for run in runs:
        rate = run.summary["overall"].get("success_rate")
        if rate is not None:
            by_label.setdefault(run.label, {})[run.condition] = rate
    for label, conds in by_label.items():
        if "default" in conds and len(conds) > 1:
            out += [
                (label, c, 100 * (conds["default"] - r)) for c, r in conds.items() if c != "default"
            ]
    return out


def plot_stress(drops: list[tuple[str, str, float]]) -> str | None:
    import matplotlib.pyplot as plt

    if not drops:
        return None
    labels = [f"{c}" if len({d[0] for d in drops}) == 1 else f"{r}: {c}" for r, c, _ in drops]
    fig, ax = plt.subplots(figsize=(6.0, 0.4 * len(drops) + 1.5))
    values = [d for _, _, d in drops]
    ax.barh(labels, values, color=["#d9534f" if v > 0 else "#5cb85c" for v in values])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("success drop vs unperturbed (percentage points)")
    ax.set_title("Generalization stress")
    ax.invert_yaxis()
    return _svg(fig)


def plot_chain_length(runs: list[Run]) -> str | None:
    import matplotlib.pyplot as plt

    curves = [
        (
            r.label,
            r.summary["overall"]["chain_success_at"],
            r.summary["overall"]["chain_length_mean"],
        )
        for r in runs
        if r.summary["overall"].get("chain_success_at")
    ]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, at, mean in curves:
        ks = sorted(int(k) for k in at)
        ax.plot(ks, [100 * at[str(k)] for k in ks], marker="o", label=f"{label} (avg {mean:.2f})")
    ax.set_xlabel("subtasks completed in a row (≥ k)")
    ax.set_ylabel("% of chains")
    ax.set_ylim(0, 105)
    ax.set_title("Long-horizon chain length")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _svg(fig)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot svg{max-width:100%;height:auto}
.videos{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}
figcaption{font-size:.8em;text-align:center}.success{color:#2a8a3a}.fail{color:#c0392b}
.error{color:#8e44ad}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.8em}
.muted{color:#777;font-size:.9em}
"""


def _pct(rate: Any) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}"


def _num(x: Any, nd: int = 1) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _ci(agg: dict[str, Any]) -> str:
    if agg.get("success_rate") is None:
        return "–"
    return f"{_pct(agg['success_rate'])} [{_pct(agg['ci95_low'])}, {_pct(agg['ci95_high'])}]"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _overall_table(runs: list[Run]) -> str:
    rows = []
    for r in runs:
        o = r.summary["overall"]
        lat = o.get("latency") or {}
        timing = r.summary.get("timing") or {}
        rows.append(
            [
                r.label,
                r.summary.get("run", {}).get("env", ""),
                r.condition,
                _ci(o),
                f"{o['successes']}/{o['completed']}",
                str(o["errors"]),
                _num(o.get("steps_to_success_mean")),
                "–" if o.get("mean_squared_jerk") is None else f"{o['mean_squared_jerk']:.3g}",
                _num(o.get("chunk_jump"), 3),
                f"{_num(lat.get('p50_ms'))} / {_num(lat.get('p95_ms'))} / {_num(lat.get('p99_ms'))}",
                _num(o.get("peak_rss_mb"), 0),
                _num(o.get("peak_cuda_mb"), 0),
                _num(timing.get("steps_per_s"), 0),
            ]
        )
        per_task = r.summary.get("per_task") or {}
        if len(per_task) > 1:  # a multi-task run: every task gets its own row under the run's
            for task, a in per_task.items():
                tl = a.get("latency") or {}
                rows.append(
                    [
                        f"{r.label} · {task.split('/')[-1]}",
                        task,
                        r.condition,
                        _ci(a),
                        f"{a['successes']}/{a['completed']}",
                        str(a["errors"]),
                        _num(a.get("steps_to_success_mean")),
                        "–"
                        if a.get("mean_squared_jerk") is None
                        else f"{a['mean_squared_jerk']:.3g}",
                        _num(a.get("chunk_jump"), 3),
                        f"{_num(tl.get('p50_ms'))} / {_num(tl.get('p95_ms'))} / "
                        f"{_num(tl.get('p99_ms'))}",
                        "",
                        "",
                        "",
                    ]
                )
    return _table(
        [
            "run",
            "env",
            "condition",
            "success % [95% CI]",
            "succ/n",
            "errors",
            "steps→success",
            "mean sq. jerk",
            "chunk jump",
            "latency p50/p95/p99 ms",
            "peak RSS MB",
            "peak CUDA MB",
            "env steps/s",
        ],
        rows,
    )


def _grouped_table(runs: list[Run], key: str, title: str) -> str:
    names = sorted({k for r in runs for k in (r.summary.get(key) or {})})
    if not names:
        return ""
    rows = []
    for name in names:
        row = [name]
        for r in runs:
            agg = (r.summary.get(key) or {}).get(name)
            if agg is None:
                row += ["–", "–"]
            else:
                row += [_ci(agg), f"{agg['successes']}/{agg['completed']} (+{agg['errors']} err)"]
        rows.append(row)
    headers = [title] + [h for r in runs for h in (f"{r.label}: success %", "succ/n")]
    return _table(headers, rows)


def _subgoal_table(runs: list[Run]) -> str:
    """CoT-VLA runs: the generated subgoal against the real frame k steps later, in latent space
    (evaluation/subgoal.py says what each column is)."""
    from vlastack.evaluation.subgoal import aggregate

    rows = []
    for r in runs:
        a = aggregate(r.episodes)
        if a is not None:
            rows.append(
                [r.label]
                + [f"{a[k]:.3f}" for k in ("cos", "cos_copy", "top1", "top1_copy", "chance")]
                + [f"{a['pairs']:.1f}", str(int(a["episodes"]))]
            )
    if not rows:
        return ""
    headers = [
        "run",
        "cosine subgoal↔real t+k",
        "cosine current↔real t+k",
        "nearest-frame top-1 (subgoal)",
        "top-1 (current frame)",
        "chance",
        "pairs/episode",
        "episodes",
    ]
    note = (
        "<p class='muted'>The subgoal is a latent of the frozen vision encoder (no image to "
        "show): each generated subgoal is compared with the encoder's latent of the frame the "
        "robot saw k steps later (global latents centred on the episode's mean real future; "
        "top-1 = the subgoal is nearest its own real future among the episode's). 'Current' is "
        "the frame the subgoal was predicted from, the guess that nothing changes.</p>"
    )
    return "<h2>Subgoal vs the real future frame</h2>" + note + _table(headers, rows)


def _video_src(path: Path, out_dir: Path, embed: bool) -> str:
    if embed:
        return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    rel = os.path.relpath(path.resolve(), out_dir.resolve())
    return urllib.parse.quote(Path(rel).as_posix())


def _videos(runs: list[Run], out_dir: Path, mode: str) -> str:
    items = []
    for r in runs:
        for ep in r.episodes:
            if ep.get("video") and (r.path / ep["video"]).exists():
                items.append((r, ep, r.path / ep["video"]))
    if not items:
        return "<p class='muted'>No rollout videos were recorded (use --videos-per-task).</p>"
    total = sum(p.stat().st_size for _, _, p in items)
    embed = mode == "embed" or (mode == "auto" and total <= EMBED_LIMIT_BYTES)
    figs = []
    for r, ep, p in items:
        status = ep.get("status", "")
        css = "success" if status == "success" else "fail"
        cap = (
            f"{html.escape(r.label)} · {html.escape(ep['task'])} ep{ep['episode']} "
            f"(seed {ep['seed']}) · <span class='{css}'>{html.escape(status)}</span>"
        )
        figs.append(
            f"<figure><video controls muted loop playsinline preload='metadata' width='320' "
            f"src='{html.escape(_video_src(p, out_dir, embed), quote=True)}'></video>"
            f"<figcaption>{cap}</figcaption></figure>"
        )
    note = (
        "embedded" if embed else "linked relative to this page (keep the results folders beside it)"
    )
    return f"<p class='muted'>{len(items)} videos, {note}.</p><div class='videos'>{''.join(figs)}</div>"


def _errors(runs: list[Run]) -> str:
    rows = [
        [r.label, ep["task"], str(ep["episode"]), str(ep["seed"]), (ep.get("error") or "")[-300:]]
        for r in runs
        for ep in r.episodes
        if ep.get("status") == "error"
    ]
    if not rows:
        return ""
    return (
        "<h2>Errored episodes</h2><p class='muted'>Excluded from success rates (retried once).</p>"
        + _table(["run", "task", "episode", "seed", "error (tail)"], rows)
    )


def _two_rate_table(runs: list[Run]) -> str:
    """Hierarchical runs at two rates (``eval --high-level-hz``): the rates, how often System 2
    ran and the per-tick latency (summary ``two_rate``)."""
    rows = []
    for r in runs:
        t = r.summary.get("two_rate")
        if t:
            rows.append(
                [
                    r.label,
                    f"{t['high_level_hz']:g} / {t['control_hz']:g}",
                    "background" if t["high_level_async"] else "synchronous",
                    str(t["high_level_runs"]),
                    _num(t["high_level_runs_per_episode"], 2),
                    str(t["high_level_skipped"]),
                    f"{_num(t['tick_ms_p50'], 2)} / {_num(t['tick_ms_p99'], 2)}",
                ]
            )
    if not rows:
        return ""
    headers = [
        "run",
        "System 2 / control Hz",
        "System 2 runs in",
        "System 2 runs",
        "per episode",
        "skipped (one in flight)",
        "tick p50 / p99 ms",
    ]
    return "<h2>Two rates (System 2 / System 1)</h2>" + _table(headers, rows)


def build_report(
    results_dirs: list[str | Path],
    out: str | Path = "report.html",
    *,
    videos: str = "auto",
    title: str | None = None,
) -> Path:
    """Write the HTML report of ``results_dirs`` to ``out``; returns its path.

    ``videos``: "embed" (base64 data URIs: one portable file), "link" (relative paths: the page
    needs the results folders beside it), "auto" (embed below 25 MB of video in total).
    """
    import matplotlib

    matplotlib.use("Agg")
    if videos not in ("auto", "embed", "link"):
        raise ConfigError(f"videos={videos!r}; expected 'auto', 'embed' or 'link'")
    if not results_dirs:
        raise ConfigError("vlastack report needs at least one results folder")
    runs = [load_run(p) for p in results_dirs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = title or "vlastack evaluation: " + ", ".join(r.label for r in runs)

    plots = [plot_success_by_task(runs)]
    for extra in (
        plot_success_vs_latency(runs),
        plot_stress(stress_drops(runs)),
        plot_chain_length(runs),
    ):
        if extra:
            plots.append(extra)
    plot_html = "".join(f"<div class='plot'>{p}</div>" for p in plots)
    manifests = "".join(
        f"<details><summary>Manifest: {html.escape(r.label)} ({html.escape(str(r.path))})"
        f"</summary><pre>{html.escape(json.dumps(r.manifest, indent=2))}</pre></details>"
        for r in runs
    )
    difficulty = _grouped_table(runs, "per_difficulty", "difficulty")
    conditions = _grouped_table(runs, "per_condition", "condition")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">Success rates exclude errored episodes and carry Wilson 95% intervals. Jerk is the
mean squared third derivative of the executed actions ((units/s³)², dt = 1/control rate); chunk
jump is the mean ‖first action of a chunk − last action of the previous one‖₂. Latency is per
policy call.</p>
<h2>Overview</h2>{_overall_table(runs)}
<h2>Plots</h2><div class="plots">{plot_html}</div>
<h2>Per task</h2>{_grouped_table(runs, "per_task", "task")}
{"<h2>Per difficulty group</h2>" + difficulty if difficulty else ""}
{"<h2>Per condition</h2>" + conditions if conditions else ""}
{_subgoal_table(runs)}
{_two_rate_table(runs)}
{_errors(runs)}
<h2>Rollout videos</h2>{_videos(runs, out.parent, videos)}
<h2>Protocols</h2>{manifests}
</body></html>
"""
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
