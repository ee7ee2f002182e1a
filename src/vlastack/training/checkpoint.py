"""Checkpoint folders: safetensors weights + JSON metadata, written atomically, loaded without pickle.

Layout of ``<run>/checkpoints/step_000100/``::

    model.safetensors       deployable weights (EMA applied, LoRA merged) with the model's own keys
    config.json             {"train": TrainConfig, "model": model config, "recipe": name}
    normalization.json      Normalizer.to_dict() (stats + modes)
    embodiment.json         EmbodimentSpec
    format_version          a single integer
    optimizer.safetensors   optimizer state tensors; its structure as JSON in the file metadata
    trainer_state.json      step, epoch, sampler position, scheduler, RNG states, flags
    train_weights.safetensors / ema.safetensors   (resume only, when EMA or LoRA is on)

A folder is written under ``.tmp-*``, its files and the folder fsynced, and renamed, so a crash
never leaves half a checkpoint under a ``step_*`` name. Re-saving a step swaps the old folder out
to ``.old-*`` first and pruning renames a folder to ``.trash-*`` before deleting it;
``recover_checkpoints`` (run on resume) finishes or undoes whatever a kill interrupted and
re-points a dangling ``last``. ``last`` and ``best`` are symlinks (or one-line pointer files
where symlinks fail).

A mixture checkpoint (several robots) keeps that layout for its first (default) member and adds
``config.json["mixture"]`` = {default, members: [{name, dataset, weight, state_dim, action_dim,
cameras, embodiment}]} and ``normalization.json["members"]`` = [{name, modes, stats}], each robot
with its own stats at its own size; ``Checkpoint.select_embodiment(name)`` picks one.

Reading a folder (``resolve_checkpoint``, ``load_checkpoint``, ``Checkpoint``) lives in
``vlastack.checkpoints``, below the policy and evaluation; this module writes, prunes and
recovers folders and re-exports the reading names.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vlastack.atomic import fsync_dir, fsync_file
from vlastack.checkpoints import (
    FORMAT_VERSION,
    STEP_PREFIX,
    Checkpoint,
    EmbodimentEntry,
    load_checkpoint,
    normalization_differences,
    read_json,
    resolve_checkpoint,
    stats_differences,
)
from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import DataError

# ---- pickle-free (de)serialisation of nested state dicts ---------------------------------------


def flatten_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tuples, tensors, scalars) into JSON + named tensors.

    Tensors are replaced by ``{"__tensor__": key}``; tuples by ``{"__tuple__": [...]}`` and
    dicts with non-string keys (optimizer states are keyed by int) by ``{"__items__": [[k, v]]}``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def rec(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            key = path or "root"
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, Mapping):
            if all(isinstance(k, str) for k in x):
                return {k: rec(v, f"{path}.{k}" if path else k) for k, v in x.items()}
            return {
                "__items__": [[k, rec(v, f"{path}.{k}" if path else str(k))] for k, v in x.items()]
            }
        if isinstance(x, tuple):
            return {"__tuple__": [rec(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [rec(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, (np.integer, np.floating)):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at '{path}' without pickle")

    return rec(obj, ""), tensors


def unflatten_state(structure: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    def rec(x: Any) -> Any:
        if isinstance(x, dict):
            if set(x) == {"__tensor__"}:
                return tensors[x["__tensor__"]]
            if set(x) == {"__tuple__"}:
                return tuple(rec(v) for v in x["__tuple__"])
            if set(x) == {"__items__"}:
                return {k: rec(v) for k, v in x["__items__"]}
            return {k: rec(v) for k, v in x.items()}
        if isinstance(x, list):
            return [rec(v) for v in x]
        return x

    return rec(structure)


def save_state_file(path: Path, state: Any) -> None:
    structure, tensors = flatten_state(state)
    save_file(_unshare(tensors), str(path), metadata={"structure": json.dumps(structure)})


def load_state_file(path: Path) -> Any:
    from vlastack.checkpoints import check_safetensors, load_safetensors

    check_safetensors(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "structure" not in meta:
        raise DataError(f"{path}: missing 'structure' metadata; the file is not a vlastack state")
    try:
        return unflatten_state(json.loads(meta["structure"]), load_safetensors(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: its 'structure' metadata does not fit its tensors ({exc}); the file is "
            "corrupt: resume from another checkpoint step"
        ) from None


def save_weights(path: Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(_unshare(sd), str(path), metadata={"format": "pt"})


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights); copy the later ones.
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen and ptr != -1:
            v = v.clone()
        seen.add(ptr)
        out[k] = v
    return out


# ---- RNG state ----------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU + CUDA) RNG states as JSON-able values."""
    py = random.getstate()
    np_state: Any = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            np.asarray(np_state[1]).tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    if torch.cuda.is_available():
        out["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()
        ]
    return out


def restore_rng(state: Mapping[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [_bytes_tensor(s) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _bytes_tensor(b64: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(b64)), dtype=torch.uint8).clone()


# ---- writing ------------------------------------------------------------------------------


@dataclass
class ResumeState:
    """What is needed, beyond the deployable weights, to continue a run exactly."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    sampler: dict[str, int]
    train_weights: dict[str, torch.Tensor] | None = None  # raw weights when they differ
    ema: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # best metric, elapsed time, ...


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:06d}"


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    weights: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    normalization: Mapping[str, Any] | None,
    embodiment: EmbodimentSpec | Mapping[str, Any] | None,
    resume: ResumeState | None = None,
) -> Path:
    """Write ``root/step_NNNNNN`` atomically, point ``root/last`` at it and return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(tmp / "model.safetensors", weights)
    _write_json(tmp / "config.json", dict(config))
    _write_json(tmp / "normalization.json", dict(normalization or {}))
    if embodiment is not None:
        emb = embodiment.to_dict() if isinstance(embodiment, EmbodimentSpec) else dict(embodiment)
        _write_json(tmp / "embodiment.json", emb)
    (tmp / "format_version").write_text(f"{FORMAT_VERSION}\n")
    if resume is not None:
        save_state_file(tmp / "optimizer.safetensors", resume.optimizer)
        if resume.train_weights is not None:
            save_weights(tmp / "train_weights.safetensors", resume.train_weights)
        if resume.ema is not None:
            save_weights(tmp / "ema.safetensors", resume.ema)
        _write_json(
            tmp / "trainer_state.json",
            {
                "step": resume.step,
                "scheduler": resume.scheduler,
                "rng": resume.rng,
                "sampler": resume.sampler,
                "has_train_weights": resume.train_weights is not None,
                "has_ema": resume.ema is not None,
                "extra": resume.extra,
            },
        )
    for f in tmp.iterdir():
        fsync_file(f)
    fsync_dir(tmp)
    if final.exists():
        # No atomic swap of two folders: between these renames step_N is missing, and
        # recover_checkpoints puts .old-step_N back.
        old = root / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        fsync_dir(root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
        fsync_dir(root)
    set_pointer(root, "last", final.name)
    return final


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default))


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def set_pointer(root: Path, name: str, target: str) -> None:
    """Atomically point ``root/name`` at ``target`` (a sibling folder name)."""
    link = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(target, tmp, target_is_directory=True)
    except OSError:
        tmp.write_text(target + "\n")
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    os.replace(tmp, link)
    fsync_dir(root)


def list_step_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    out = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    out = [p for p in out if p.name.startswith(STEP_PREFIX)]
    return sorted(out, key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def prune_checkpoints(root: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` step folders, never the one ``best`` points at."""
    root = Path(root)
    keep: set[str] = set()
    for name in ("best", "last"):
        with contextlib.suppress(DataError):
            keep.add(resolve_checkpoint(root / name).name)
    dirs = list_step_dirs(root)
    removed = []
    for p in dirs[: max(0, len(dirs) - keep_last)]:
        if p.name not in keep:
            # Renamed away first: a kill mid-delete must not leave a partial step_* folder.
            trash = root / f".trash-{p.name}-{os.getpid()}"
            p.rename(trash)
            shutil.rmtree(trash)
            removed.append(p)
    return removed


def is_complete_checkpoint(path: Path, resumable: bool = False) -> bool:
    """Whether ``path`` holds every file of a checkpoint (and of its resume state), each one
    parseable (JSON read, safetensors headers opened); no tensor data is read."""
    try:
        if int((path / "format_version").read_text().strip()) != FORMAT_VERSION:
            return False
        names = ["config.json", "normalization.json"]
        tensors = ["model.safetensors"]
        if (path / "embodiment.json").exists():
            names.append("embodiment.json")
        if resumable or (path / "trainer_state.json").exists():
            st = json.loads((path / "trainer_state.json").read_text())
            tensors.append("optimizer.safetensors")
            if st.get("has_train_weights"):
                tensors.append("train_weights.safetensors")
            if st.get("has_ema"):
                tensors.append("ema.safetensors")
        for name in names:
            json.loads((path / name).read_text())
        for name in tensors:
            with safe_open(str(path / name), "pt") as f:
                f.keys()
    except Exception:
        return False
    return True


def recover_checkpoints(root: str | Path) -> Path | None:
    """Repair what a process killed inside ``save_checkpoint`` / ``prune_checkpoints`` /
    ``set_pointer`` left in ``root``; return the checkpoint to resume from (``last``), or None.

    A step folder swapped out to ``.old-*`` by an interrupted re-save is put back; left-over
    ``.old-*`` (superseded), ``.trash-*`` (pruned) and ``.tmp-*`` (never committed) folders and
    pointer temp files are deleted; an incomplete step folder (left by an older vlastack) is
    moved aside to ``.incomplete-*``; a ``last`` that is missing, dangling or incomplete is
    pointed at the newest complete step folder.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    for p in sorted(root.iterdir()):
        name = p.name
        if name.startswith(".old-") and p.is_dir():
            step = name[len(".old-") :].rsplit("-", 1)[0]
            if not (root / step).exists() and is_complete_checkpoint(p):
                p.rename(root / step)
            else:
                shutil.rmtree(p, ignore_errors=True)
        elif name.startswith((".trash-", ".tmp-")) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif name.startswith((".last.tmp-", ".best.tmp-")) and (p.is_symlink() or p.is_file()):
            p.unlink()
    for p in list_step_dirs(root):
        if not is_complete_checkpoint(p):
            p.rename(root / f".incomplete-{p.name}-{os.getpid()}")
    fsync_dir(root)
    last: Path | None = None
    with contextlib.suppress(DataError):
        last = resolve_checkpoint(root / "last")
    if last is None or last.parent != root.resolve() or not is_complete_checkpoint(last, True):
        last = None
        for p in reversed(list_step_dirs(root)):
            if is_complete_checkpoint(p, resumable=True):
                set_pointer(root, "last", p.name)
                last = p.resolve()
                break
    return last


def load_resume_state(path: str | Path) -> ResumeState:
    from vlastack.checkpoints import load_safetensors

    p = resolve_checkpoint(path)
    if not (p / "trainer_state.json").is_file():
        raise DataError(f"{p}: has no trainer_state.json, so it cannot be resumed (weights only)")
    st = read_json(p / "trainer_state.json")
    return ResumeState(
        step=int(st["step"]),
        optimizer=load_state_file(p / "optimizer.safetensors"),
        scheduler=st["scheduler"],
        rng=st["rng"],
        sampler=st["sampler"],
        train_weights=load_safetensors(p / "train_weights.safetensors")
        if st.get("has_train_weights")
        else None,
        ema=load_safetensors(p / "ema.safetensors") if st.get("has_ema") else None,
        extra=st.get("extra", {}),
    )


__all__ = [
    "FORMAT_VERSION",
    "STEP_PREFIX",
    "capture_rng",
    "Checkpoint",
    "EmbodimentEntry",
    "flatten_state",
    "is_complete_checkpoint",
    "list_step_dirs",
    "load_checkpoint",
    "load_resume_state",
    "load_state_file",
    "normalization_differences",
    "prune_checkpoints",
    "recover_checkpoints",
    "resolve_checkpoint",
    "restore_rng",
    "ResumeState",
    "save_checkpoint",
    "save_state_file",
    "save_weights",
    "set_pointer",
    "stats_differences",
    "step_dir_name",
    "unflatten_state",
]
