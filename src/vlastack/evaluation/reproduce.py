"""Re-running an evaluation from its manifest, and checking that it came out the same.

``evaluate_manifest`` repeats the protocol a ``manifest.json`` recorded (tasks, seeds, horizon,
camera, resolution, ...) with ``evaluate``; the new summary gains a ``reproduction`` block that
compares the checkpoint's weights hash, the package versions and the initial-state fingerprints.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError
from vlastack.evaluation.manifest import checkpoint_fingerprint, load_manifest, package_versions
from vlastack.evaluation.results import write_summary
from vlastack.evaluation.rollout import evaluate


def evaluate_manifest(
    manifest_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    executor: Any = None,
    ray_address: str | None = None,
) -> Any:
    """Re-run the protocol of a manifest exactly; the results' summary gains a ``reproduction``
    block comparing the checkpoint hash, versions and initial-state fingerprints."""
    m = load_manifest(manifest_path)
    p = m["protocol"]
    ckpt = checkpoint or (m.get("checkpoint") or {}).get("path")
    if not ckpt:
        raise ConfigError(
            f"{manifest_path}: the run used an in-memory policy factory; pass the checkpoint "
            "explicitly (vlastack eval CHECKPOINT --manifest FILE)"
        )
    if not Path(ckpt).exists():
        raise ConfigError(
            f"{manifest_path}: checkpoint.path {ckpt} does not exist here; pass it explicitly "
            "(vlastack eval CHECKPOINT --manifest FILE)"
        )
    expected_sha = (m.get("checkpoint") or {}).get("weights_sha256")
    actual_sha = checkpoint_fingerprint(ckpt)["weights_sha256"]
    if expected_sha and expected_sha != actual_sha:
        warnings.warn(
            f"checkpoint {ckpt} has weights sha256 {actual_sha[:12]}…, the manifest recorded "
            f"{expected_sha[:12]}…: this is not the same checkpoint",
            stacklevel=2,
        )
    results = evaluate(
        str(ckpt),
        p["env"],
        tasks=p["tasks"],
        seeds={t: list(s) for t, s in p["seeds"].items()},
        episodes_per_task=int(p["episodes_per_task"]),
        seed=int(p["seed"]),
        workers=int(workers if workers is not None else m.get("workers", 1)),
        execute_horizon=p.get("execute_horizon"),
        ensemble=bool(p.get("ensemble", False)),
        max_steps=p.get("max_steps"),
        image_size=tuple(p["image_size"]),
        camera=p.get("camera"),
        video_episodes_per_task=int(p.get("video_episodes_per_task", 0)),
        action_remap=p.get("action_remap", "strict"),
        clip_actions=bool(p.get("clip_actions", True)),
        condition=p.get("condition", "default"),
        out_dir=out_dir,
        progress=progress,
        video_fps=float(p.get("video_fps", 20.0)),
        embodiment=p.get("embodiment"),  # a member forced with --embodiment (mixtures)
        high_level_hz=p.get("high_level_hz"),  # two rates (hierarchical checkpoints)
        high_level_async=bool(p.get("high_level_async", False)),
        executor=executor,
        ray_address=ray_address,
    )
    old = m.get("initial_states", {})
    new = results.manifest.get("initial_states", {})
    mismatched = sorted(k for k in old if k in new and old[k] != new[k])
    versions_now = package_versions()
    changed = {
        k: [v, versions_now.get(k)]
        for k, v in (m.get("versions") or {}).items()
        if versions_now.get(k) != v
    }
    results.summary["reproduction"] = {
        "manifest": str(manifest_path),
        "checkpoint_sha_matches": expected_sha is None or expected_sha == actual_sha,
        "initial_states_compared": len([k for k in old if k in new]),
        "initial_states_mismatched": mismatched,
        "versions_changed": changed,
    }
    if mismatched:
        warnings.warn(
            f"{len(mismatched)} episode(s) started from different initial states than in the "
            f"manifest (e.g. {mismatched[0]}); the simulator version or seeding differs",
            stacklevel=2,
        )
    if results.out_dir:
        write_summary(results.out_dir, results.summary)
    return results


__all__ = ["evaluate_manifest"]
