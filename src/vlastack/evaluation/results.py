"""A results folder: what ``evaluate`` and ``evaluate_remote`` return and write.

``manifest.json`` (the protocol, ``evaluation.manifest``) is written before the first episode and
``episodes.jsonl`` grows as episodes finish (``evaluation.pool``), so an interrupted run keeps
what it did; at the end the three files are rewritten whole (each atomically) in episode order,
with ``summary.json`` (``metrics.summarize`` plus ``run`` and ``timing``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlastack.atomic import write_text
from vlastack.evaluation.metrics import EpisodeRecord


@dataclass
class EvalResults:
    records: list[EpisodeRecord]
    summary: dict[str, Any]
    manifest: dict[str, Any]
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        return self.summary["overall"]["success_rate"]


def start_results_folder(
    out: Path, manifest: dict[str, Any], kept: Sequence[EpisodeRecord] = ()
) -> None:
    """Create ``out`` with the manifest of the run about to start and an episode log holding
    only ``kept`` (the episodes a resumed run already has)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    write_text(out / "episodes.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in kept))


def finished_records(
    out: Path, manifest: dict[str, Any], jobs: Sequence[Any]
) -> list[EpisodeRecord]:
    """The episodes an interrupted run in ``out`` finished, to keep when resuming it: those of
    ``out/episodes.jsonl`` that match one of ``jobs`` (task, episode and seed). Refuses a folder
    whose manifest has another protocol or other weights."""
    from vlastack.errors import ConfigError

    path = out / "manifest.json"
    if not path.exists():
        raise ConfigError(
            f"--resume: {path} not found; {out} holds no run to resume (drop --resume)"
        )
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--resume: {path} is not valid JSON ({exc}); drop --resume") from None
    old_protocol = old.get("protocol", {})
    for key, value in manifest["protocol"].items():
        if json.loads(json.dumps(value)) != old_protocol.get(key):
            raise ConfigError(
                f"--resume: {path} has {key}={old_protocol.get(key)!r} but this run asks for "
                f"{key}={value!r}; resume with the same settings or choose a new --out"
            )
    old_w = (old.get("checkpoint") or {}).get("weights_sha256")
    new_w = (manifest.get("checkpoint") or {}).get("weights_sha256")
    if old_w != new_w:
        raise ConfigError(
            f"--resume: {path} was made with other weights (sha256 {old_w} vs {new_w}); "
            "resume with the same checkpoint or choose a new --out"
        )
    wanted = {(j.task, j.episode): j.seed for j in jobs}
    kept: dict[tuple[str, int], EpisodeRecord] = {}
    log = out / "episodes.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        try:
            rec = EpisodeRecord.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
            continue  # the line being written when the run was killed
        if wanted.get((rec.task, rec.episode)) == rec.seed:
            kept[(rec.task, rec.episode)] = rec
    return list(kept.values())


def write_results_folder(
    out: Path,
    manifest: dict[str, Any],
    records: Sequence[EpisodeRecord],
    summary: dict[str, Any],
    *,
    json_default: Callable[[Any], Any] | None = None,
) -> None:
    """Write the finished run: manifest, every episode in order, summary. ``json_default``
    (``json.dumps``'s ``default``) turns values JSON lacks into ones it has (the suites: ``str``)."""
    write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=json_default))
    write_text(out / "episodes.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in records))
    write_summary(out, summary, json_default=json_default)


def write_summary(
    out: Path, summary: dict[str, Any], *, json_default: Callable[[Any], Any] | None = None
) -> None:
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=json_default))


def initial_states(records: Sequence[EpisodeRecord]) -> dict[str, str]:
    """``task#episode`` -> fingerprint of the initial simulator state (the manifest's
    ``initial_states``, which a re-run must reproduce)."""
    return {f"{r.task}#{r.episode}": r.initial_state_sha for r in records if r.initial_state_sha}


def resolved_horizons(records: Sequence[EpisodeRecord]) -> list[str]:
    """The execute horizons the episodes actually used (the checkpoint's default when unset)."""
    return sorted({str(r.extra.get("execute_horizon")) for r in records if r.extra})


def run_timing(records: Sequence[EpisodeRecord], wall_s: float, workers: int) -> dict[str, Any]:
    """The summary's ``timing`` block: wall time, env steps per second, env vs policy time."""
    steps = sum(r.steps for r in records if r.status != "error")
    return {
        "wall_s": wall_s,
        "workers": workers,
        "env_steps": steps,
        "steps_per_s": steps / wall_s if wall_s > 0 else None,
        "env_s": sum(r.extra.get("env_s", 0.0) for r in records),
        "policy_s": sum(r.extra.get("policy_s", 0.0) for r in records),
    }


__all__ = [
    "EvalResults",
    "initial_states",
    "resolved_horizons",
    "run_timing",
    "finished_records",
    "start_results_folder",
    "write_results_folder",
    "write_summary",
]
