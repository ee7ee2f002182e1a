"""What every suite shares: its env names, its policy factory, its results folder and its table.

A suite's env names (``stress/...``, ``chain/...``, ``sawyer7/...``) are registered on demand
(``register_env_names``), also in spawned evaluation workers (``SuitePolicy``); its results
folders are the ones ``vlastack report`` reads (``write_results``); its console summary is a rich
table (``print_table``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlastack.atomic import write_text
from vlastack.evaluation.loading import checkpoint_label, load_policy, resolve_checkpoint_dir
from vlastack.evaluation.metrics import EpisodeRecord, summarize
from vlastack.evaluation.results import write_results_folder


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
        return load_policy(self.checkpoint)


def write_json(path: Path, obj: Any) -> None:
    """A suite's own JSON file (``heads.json``, ...), written atomically; ``str`` for values
    JSON lacks."""
    write_text(path, json.dumps(obj, indent=2, default=str))


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
    write_results_folder(out, manifest, records, summary, json_default=str)
    return summary


def checkpoint_info(checkpoint: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint_dir(checkpoint)
    return {"checkpoint": str(path), "checkpoint_label": checkpoint_label(path)}


def fmt(x: Any, pct: bool = False, nd: int = 1) -> str:
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


__all__ = [
    "SuitePolicy",
    "checkpoint_info",
    "fmt",
    "print_table",
    "register_env_names",
    "write_json",
    "write_results",
]
