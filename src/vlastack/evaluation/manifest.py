"""The evaluation manifest: the exact protocol of a run, as JSON, so it can be repeated.

Users' top complaint is "success lower than the paper" from undocumented protocol details
(how much of each chunk is executed, seeds, init states, camera, resolution, checkpoint). The
manifest records all of them plus the software versions and the checkpoint's sha256;
``evaluate_manifest`` re-runs one and checks that the initial states came out the same.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError

MANIFEST_FORMAT_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx", ".npz")
VERSIONED_PACKAGES = (
    "vlastack",
    "numpy",
    "torch",
    "gymnasium",
    "metaworld",
    "mujoco",
    "gym-pusht",
    "av",
    "transformers",
)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def checkpoint_fingerprint(checkpoint: str | Path) -> dict[str, Any]:
    """sha256 of every weight file in a checkpoint folder, and one combined hash of them."""
    root = Path(checkpoint)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    weights = [p for p in files if p.suffix in WEIGHT_SUFFIXES] or files
    per_file = {
        str(p.relative_to(root) if root.is_dir() else p.name): sha256_file(p) for p in weights
    }
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in per_file.items()).encode())
    return {"path": str(root.resolve()), "weights_sha256": combined.hexdigest(), "files": per_file}


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info() -> dict[str, Any] | None:
    """Commit and dirty flag of the vlastack source tree, if it is a git checkout."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
    }
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def build_manifest(
    spec: Any,
    *,
    tasks: list[str],
    episodes_per_task: int,
    seed: int,
    workers: int,
    video_episodes_per_task: int,
    seeds: dict[str, list[int]],
) -> dict[str, Any]:
    """The manifest of an evaluation about to run with ``spec`` (a rollout.RunSpec)."""
    from vlastack.evaluation.rollout import difficulty

    if spec.checkpoint is not None:
        policy: dict[str, Any] = checkpoint_fingerprint(spec.checkpoint)
    else:
        factory = spec.policy_factory
        policy = {"path": None, "factory": repr(factory)}
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "kind": "vlastack.eval",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "protocol": {
            "env": spec.env,
            "tasks": list(tasks),
            "difficulty": {t: difficulty(spec.env, t) for t in tasks},
            "episodes_per_task": episodes_per_task,
            "seed": seed,
            "seeds": seeds,
            "seed_rule": "seed + task_index * max(1000, episodes_per_task) + episode",
            "max_steps": spec.max_steps,
            "execute_horizon": spec.execute_horizon,
            "ensemble": spec.ensemble,
            "image_size": list(spec.image_size),
            "camera": spec.camera,
            "action_remap": spec.action_remap,
            "clip_actions": spec.clip_actions,
            "condition": spec.condition,
            "video_episodes_per_task": video_episodes_per_task,
            "video_fps": spec.video_fps,
            "success": "info['success'] at any step ends the episode",
        },
        "checkpoint": policy,
        "workers": workers,
        "versions": package_versions(),
        "git": git_info(),
        "host": host_info(),
    }


def load_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"manifest {path} not found; pass a results folder or its manifest.json"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"manifest {path} is not valid JSON ({exc})") from None
    if not isinstance(m, dict) or "protocol" not in m:
        raise ConfigError(f"{path}: no 'protocol' field; this is not a vlastack eval manifest")
    if int(m.get("format_version", 1)) > MANIFEST_FORMAT_VERSION:
        raise ConfigError(
            f"{path}: manifest format {m['format_version']} is newer; upgrade vlastack"
        )
    return m


def evaluate_manifest(
    manifest_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Any:
    """Re-run the protocol of a manifest exactly; the results' summary gains a ``reproduction``
    block comparing the checkpoint hash, versions and initial-state fingerprints."""
    from vlastack.evaluation.rollout import evaluate

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
        tmp = results.out_dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(results.summary, indent=2))
        tmp.replace(results.out_dir / "summary.json")
    return results
