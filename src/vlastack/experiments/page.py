"""One results page per suite run: ``section.md`` (a table, the exact command, the machine and the
date) and PNG plots, written into the suite's output folder so a user can paste it into a report.

Every success cell pools the episodes of all training seeds into one Wilson score 95% interval
(``success_cell``) and also reports the spread of the per-seed success rates (``seed_spread``:
mean, sample standard deviation, min and max), so a reader sees both the evaluation noise and the
training-seed noise. A difference of two rates (a perturbation's drop, a transfer gap) carries
Newcombe's hybrid Wilson interval (``difference_interval``, Newcombe 1998, method 10).
Plots are matplotlib (Agg): bars with interval whiskers and the per-seed rates as dots, or lines
with interval bands for sweeps.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlastack.atomic import write_text
from vlastack.evaluation.metrics import wilson_interval

MEMORY_NOTE = (
    "Train mem est.: the trainer's estimate for one run (parameters, gradients, AdamW states, "
    "one micro-batch's activations). Process peak RSS: sampled while the run trained, but the "
    "runs share one process that keeps freed memory, so it also holds what earlier runs left: "
    "compare it only in run order."
)


@dataclass
class SuccessCell:
    """Success of one condition: episodes pooled over seeds, with the per-seed rates kept."""

    successes: int
    n: int
    per_seed: list[float] = field(default_factory=list)  # one success rate per training seed

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    @property
    def spread(self) -> dict[str, float | int | None]:
        return seed_spread(self.per_seed)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SuccessCell:
        return cls(int(d["successes"]), int(d["n"]), [float(v) for v in d.get("per_seed", [])])

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ci95
        return {
            "successes": self.successes,
            "n": self.n,
            "success_rate": self.rate,
            "ci95": [lo, hi],
            "per_seed": self.per_seed,
            "seed_spread": self.spread,
        }


def success_cell(counts: Sequence[tuple[int, int]]) -> SuccessCell:
    """``[(successes, episodes) per training seed]`` -> one pooled cell; seeds with 0 episodes
    count in neither the pool nor the spread."""
    for s, n in counts:
        if not 0 <= s <= n:
            raise ValueError(f"success count {s} must be within 0..{n}")
    kept = [(s, n) for s, n in counts if n > 0]
    return SuccessCell(
        successes=sum(s for s, _ in kept),
        n=sum(n for _, n in kept),
        per_seed=[s / n for s, n in kept],
    )


def record_counts(records: Sequence[Any]) -> tuple[int, int]:
    """(successes, episodes) of evaluation records; an errored episode counts as a failure (the
    evaluation's headline rule), so a crashing policy never looks better for it."""
    return sum(1 for r in records if r.status == "success"), len(records)


def aggregate_runs(
    runs: Sequence[dict[str, Any]], key: str, order: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per ``key`` value (in ``order``): ``success`` pooled over its runs (one run per
    training seed, each with ``successes`` and ``episodes``), each of ``metrics`` as the mean over
    the runs that measured it (None if none), and ``<metric>_per_seed`` with the values."""
    rows = []
    for name in order:
        mine = [r for r in runs if r[key] == name]
        cell = success_cell([(int(r["successes"]), int(r["episodes"])) for r in mine])
        row: dict[str, Any] = {key: name, "success": cell.to_dict()}
        for metric in metrics:
            vals = [float(r[metric]) for r in mine if r.get(metric) is not None]
            vals = [v for v in vals if not math.isnan(v)]
            row[metric] = sum(vals) / len(vals) if vals else None
            row[f"{metric}_per_seed"] = vals
        rows.append(row)
    return rows


def seed_spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (ddof 1; None for one seed), min and max across seeds."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"seeds": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"seeds": len(vals), "mean": mean, "std": std, "min": min(vals), "max": max(vals)}


def difference_interval(a: SuccessCell, b: SuccessCell) -> tuple[float, float, float] | None:
    """``rate(a) − rate(b)`` with Newcombe's hybrid Wilson 95% interval (independent samples);
    None when either has no episodes."""
    if a.rate is None or b.rate is None:
        return None
    p1, p2 = a.rate, b.rate
    l1, u1 = a.ci95
    l2, u2 = b.ci95
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lo, hi


# ---------------------------------------------------------------------------------------------
# Cell text


def pct(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{nd}f}"


def num(x: float | None, nd: int = 1, sig: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}" if sig else f"{x:.{nd}f}"


def success_text(cell: SuccessCell) -> str:
    """``"63.3 [54.4, 71.4] (57/90)"``: pooled success %, Wilson 95% interval, counts."""
    if cell.rate is None:
        return "-"
    lo, hi = cell.ci95
    return f"{pct(cell.rate)} [{pct(lo)}, {pct(hi)}] ({cell.successes}/{cell.n})"


def spread_text(values: Sequence[float], scale: float = 100.0, nd: int = 1) -> str:
    """``"± 4.1 (58.0–66.7, 3 seeds)"``: sample std and range across seeds (``scale`` 100: %)."""
    s = seed_spread(values)
    if not s["seeds"]:
        return "-"
    lo, hi = float(s["min"] or 0.0) * scale, float(s["max"] or 0.0) * scale
    if s["std"] is None:
        return "- (1 seed)"
    return f"± {float(s['std']) * scale:.{nd}f} ({lo:.{nd}f}–{hi:.{nd}f}, {s['seeds']} seeds)"


def difference_text(diff: tuple[float, float, float] | None) -> str:
    if diff is None:
        return "-"
    d, lo, hi = diff
    return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


# ---------------------------------------------------------------------------------------------
# Provenance


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: ``vlastack bench ...`` when run through the CLI."""
    args = list(sys.argv if argv is None else argv)
    if not args:
        return "(python API)"
    prog = Path(args[0]).name
    if prog in ("vlastack", "__main__.py", "-m") or args[0].endswith("vlastack/__main__.py"):
        return shlex.join(["vlastack", *args[1:]])
    return shlex.join(args)


def machine() -> str:
    """CPU model, core count and, when CUDA is in use, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                text += f", GPU {torch.cuda.get_device_name(0)}"
        except Exception:  # a broken CUDA install must not fail a page
            pass
    return text


# ---------------------------------------------------------------------------------------------
# Plots


def _pyplot() -> Any:
    from vlastack.errors import require

    matplotlib = require("matplotlib", "report", "the suites' result plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(
    path: Path,
    labels: Sequence[str],
    cells: Sequence[SuccessCell],
    *,
    title: str,
    ylabel: str = "success rate (%)",
) -> Path:
    """Bars of pooled success with Wilson 95% whiskers and each seed's rate as a dot."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.6), dpi=120)
    xs = list(range(len(labels)))
    rates = [100 * (c.rate or 0.0) for c in cells]
    err_lo = [r - 100 * c.ci95[0] for r, c in zip(rates, cells)]
    err_hi = [100 * c.ci95[1] - r for r, c in zip(rates, cells)]
    ax.bar(xs, rates, color="#4c78a8", alpha=0.85)
    ax.errorbar(xs, rates, yerr=[err_lo, err_hi], fmt="none", ecolor="black", capsize=4)
    for x, c in zip(xs, cells):
        if len(c.per_seed) > 1:
            ax.scatter([x] * len(c.per_seed), [100 * v for v in c.per_seed], s=12, c="#f58518")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 60), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def scatter_plot(
    path: Path,
    labels: Sequence[str],
    x: Sequence[float | None],
    cells: Sequence[SuccessCell],
    *,
    title: str,
    xlabel: str,
    ylabel: str = "success rate (%)",
) -> Path:
    """One labelled point per condition at (``x``, pooled success) with a Wilson whisker."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, xv, c in zip(labels, x, cells):
        if xv is None or c.rate is None:
            continue
        r = 100 * c.rate
        ax.errorbar(
            [xv],
            [r],
            yerr=[[r - 100 * c.ci95[0]], [100 * c.ci95[1] - r]],
            fmt="o",
            capsize=3,
            label=name,
        )
        ax.annotate(name, (xv, r), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.set_title(textwrap.fill(title, 60), fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def line_plot(
    path: Path,
    x: Sequence[float],
    series: Mapping[str, Sequence[tuple[float, float, float] | None]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    percent: bool = True,
) -> Path:
    """One line per series over ``x``; each point ``(value, low, high)`` (an interval band when
    low < high), None for a missing point. ``percent`` scales 0..1 values to %. Series are
    nudged apart along x by at most 1% of its range so equal ones do not hide each other."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    k = 100.0 if percent else 1.0
    # overlapping series (equal rates) stay visible: each is nudged by up to ±1% of the x range
    span = (max(x) - min(x)) if len(x) > 1 else 1.0
    n_series = max(1, len(series))
    for i, (name, pts) in enumerate(series.items()):
        dx = span * 0.02 * (i - (n_series - 1) / 2) / n_series
        xs = [xv + dx for xv, p in zip(x, pts) if p is not None]
        vals = [p for p in pts if p is not None]
        if not vals:
            continue
        (line,) = ax.plot(xs, [k * v[0] for v in vals], marker="o", label=name)
        if any(v[1] < v[2] for v in vals):
            ax.fill_between(
                xs,
                [k * v[1] for v in vals],
                [k * v[2] for v in vals],
                color=line.get_color(),
                alpha=0.15,
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(0, 105)
    ax.set_title(textwrap.fill(title, 60), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# The page


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    for r in rows:
        if len(r) != len(columns):
            raise ValueError(f"table row {list(r)} has {len(r)} cells for {len(columns)} columns")

    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|")
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(
    out: str | Path,
    *,
    title: str,
    setup: Sequence[str],
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    plots: Sequence[Path] = (),
    notes: Sequence[str] = (),
    extra_tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]] = (),
    command: str | None = None,
) -> Path:
    """``out/section.md``: title, the fixed settings (``setup`` bullets), the table, any
    ``extra_tables`` (caption, columns, rows), the plots (relative links), notes, and the exact
    command, machine and UTC date. Returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"## {title}", ""]
    parts += [f"- {s}" for s in setup]
    parts += ["", markdown_table(columns, rows), ""]
    for caption, cols, rws in extra_tables:
        parts += [caption, "", markdown_table(cols, rws), ""]
    for p in plots:
        rel = os.path.relpath(Path(p), out)
        parts += [f"![{Path(p).stem}]({rel})", ""]
    parts += [
        "Success cells: pooled success % over all seeds' episodes, [Wilson 95% interval], "
        "(successes/episodes); spread: sample std and range of the per-seed rates.",
        "",
    ]
    parts += [f"{n}" for n in notes]
    if notes:
        parts.append("")
    parts += [
        "```",
        command or command_line(),
        "```",
        "",
        f"Machine: {machine()}. Date: {now}.",
        "",
    ]
    path = out / "section.md"
    write_text(path, "\n".join(parts))
    return path


__all__ = [
    "MEMORY_NOTE",
    "SuccessCell",
    "aggregate_runs",
    "bar_plot",
    "command_line",
    "difference_interval",
    "difference_text",
    "line_plot",
    "machine",
    "markdown_table",
    "num",
    "pct",
    "record_counts",
    "scatter_plot",
    "seed_spread",
    "spread_text",
    "success_cell",
    "success_text",
    "write_section",
]
