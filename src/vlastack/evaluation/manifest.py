"""The evaluation manifest: the exact protocol of a run, as JSON, so it can be repeated.

Users' top complaint is "success lower than the paper" from undocumented protocol details
(how much of each chunk is executed, seeds, init states, camera, resolution, checkpoint). The
manifest records all of them plus the software versions and the checkpoint's sha256;
``evaluation.reproduce.evaluate_manifest`` re-runs one and checks that the initial states came
out the same.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError
from vlastack.evaluation.loading import difficulty

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
    """The manifest of an evaluation about to run with ``spec`` (an ``episode.RunSpec``)."""
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
            **(
                {"high_level_hz": spec.high_level_hz, "high_level_async": spec.high_level_async}
                if spec.high_level_hz is not None
                else {}
            ),
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
