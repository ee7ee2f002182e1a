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
from safetensors.torch import load_file, save_file

from vlastack.atomic import fsync_dir, fsync_file
from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import DataError

FORMAT_VERSION = 1
STEP_PREFIX = "step_"


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
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "structure" not in meta:
        raise DataError(f"{path}: missing 'structure' metadata; the file is not a vlastack state")
    return unflatten_state(json.loads(meta["structure"]), load_file(str(path)))


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


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder, a run folder, a ``checkpoints`` folder, or a pointer name."""
    p = Path(path)
    for cand in (p, p / "checkpoints" / "last", p / "last"):
        if cand.is_file() and not (cand / "format_version").exists():
            try:
                cand = cand.parent / cand.read_text().strip()
            except (OSError, UnicodeDecodeError):
                continue
        if (cand / "format_version").is_file():
            return cand.resolve()
    raise DataError(
        f"{path}: no checkpoint found (looked for format_version in it, in checkpoints/last "
        "and in last). Pass a checkpoint folder such as runs/NAME/checkpoints/step_001000"
    )


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


# ---- reading ------------------------------------------------------------------------------


@dataclass
class EmbodimentEntry:
    """One robot a checkpoint can drive: a mixture member, or the single dataset's robot.

    ``state_dim`` / ``action_dim`` / ``cameras`` are the robot's own (None for a single-dataset
    checkpoint, where they equal the model's).
    """

    name: str
    normalization: dict[str, Any]  # Normalizer.to_dict() of this robot's own stats
    embodiment: EmbodimentSpec | None
    state_dim: int | None = None
    action_dim: int | None = None
    cameras: list[str] | None = None
    dataset: str | None = None
    weight: float | None = None  # share of training samples


@dataclass
class Checkpoint:
    path: Path
    weights: dict[str, torch.Tensor]
    config: dict[str, Any]
    normalization: dict[str, Any]
    embodiment: EmbodimentSpec | None
    format_version: int

    @property
    def step(self) -> int | None:
        name = self.path.name
        return int(name[len(STEP_PREFIX) :]) if name.startswith(STEP_PREFIX) else None

    @property
    def is_mixture(self) -> bool:
        return bool(self.config.get("mixture"))

    def embodiments(self) -> list[EmbodimentEntry]:
        """Every robot this checkpoint was trained on, default first.

        A mixture stores ``config.json["mixture"]["members"]`` (name, dataset, weight, sizes,
        cameras, embodiment) and ``normalization.json["members"]`` (each member's own stats);
        a single-dataset checkpoint has one entry read from normalization.json/embodiment.json.
        """
        members = _mixture_members(self.path, self.config, self.normalization)
        if members:
            return members
        name = self.embodiment.robot_type if self.embodiment is not None else "default"
        return [EmbodimentEntry(name, self.normalization, self.embodiment)]

    def select_embodiment(self, name: str | None = None) -> EmbodimentEntry:
        """The entry called ``name`` (a member name, or a robot_type naming one member);
        None = the default (first) one."""
        entries = self.embodiments()
        if name is None:
            return entries[0]
        for e in entries:
            if e.name == name:
                return e
        by_robot = [e for e in entries if e.embodiment and e.embodiment.robot_type == name]
        if len(by_robot) == 1:
            return by_robot[0]
        hint = " (robot_type is shared; use the member name)" if by_robot else ""
        raise DataError(
            f"{self.path}: no embodiment {name!r}{hint}; this checkpoint was trained on "
            f"{[e.name for e in entries]}. Pass one of those names"
        )


def _mixture_members(
    path: Path, config: Mapping[str, Any], normalization: Mapping[str, Any]
) -> list[EmbodimentEntry]:
    mix = config.get("mixture")
    if not mix:
        return []
    stats = {m.get("name"): m for m in normalization.get("members", [])}
    out = []
    for m in mix.get("members", []):
        name = str(m.get("name"))
        if name not in stats:
            raise DataError(
                f"{path}/normalization.json has no stats for mixture member {name!r} (listed in "
                "config.json mixture.members); the checkpoint is incomplete, re-save it"
            )
        norm = {k: v for k, v in stats[name].items() if k != "name"}
        emb_d = m.get("embodiment")
        out.append(
            EmbodimentEntry(
                name=name,
                normalization=norm,
                embodiment=EmbodimentSpec.from_dict(emb_d, source=f"{path}/config.json")
                if emb_d
                else None,
                state_dim=int(m["state_dim"]) if m.get("state_dim") is not None else None,
                action_dim=int(m["action_dim"]) if m.get("action_dim") is not None else None,
                cameras=list(m["cameras"]) if m.get("cameras") is not None else None,
                dataset=m.get("dataset"),
                weight=m.get("weight"),
            )
        )
    return out


def load_checkpoint(
    path: str | Path,
    expect_stats: Mapping[str, Any] | None = None,
    expect_embodiment: EmbodimentSpec | None = None,
) -> Checkpoint:
    """Load a checkpoint folder; refuse an unknown format or mismatching stats / embodiment.

    Only safetensors and JSON are read, so loading never runs code from the checkpoint.
    """
    p = resolve_checkpoint(path)
    try:
        version = int((p / "format_version").read_text().strip())
    except ValueError:
        raise DataError(f"{p}/format_version: not an integer; the checkpoint is damaged") from None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{p}: checkpoint format_version {version}, but this vlastack reads version "
            f"{FORMAT_VERSION}; {'upgrade vlastack' if version > FORMAT_VERSION else 'migrate it'}"
        )
    for name in ("model.safetensors", "config.json", "normalization.json"):
        if not (p / name).is_file():
            raise DataError(f"{p}: missing {name}; the checkpoint is incomplete")
    config = _read_json(p / "config.json")
    normalization = _read_json(p / "normalization.json")
    emb = EmbodimentSpec.load(p / "embodiment.json") if (p / "embodiment.json").is_file() else None
    # A mixture checkpoint passes a check when any of its embodiments does.
    members = _mixture_members(p, config, normalization)
    if expect_stats is not None:
        candidates = [m.normalization for m in members] or [normalization]
        tried = [normalization_differences(c, expect_stats) for c in candidates]
        diffs = [] if any(not d for d in tried) else tried[0]
        if diffs:
            which = " (of any mixture member; first member shown)" if members else ""
            raise DataError(
                f"{p}/normalization.json does not match the expected normalization{which}: "
                + "; ".join(diffs[:8])
                + ("" if len(diffs) <= 8 else f"; and {len(diffs) - 8} more")
                + ". Use the checkpoint trained on this data, or retrain."
            )
    if expect_embodiment is not None and members:
        specs = [m.embodiment for m in members if m.embodiment is not None]
        if specs and not any(not e.differences(expect_embodiment) for e in specs):
            raise DataError(
                f"{p}/config.json: no embodiment of this mixture checkpoint "
                f"({[m.name for m in members]}) matches robot {expect_embodiment.robot_type!r}; "
                f"first member vs expected: {'; '.join(specs[0].differences(expect_embodiment))}"
            )
    elif expect_embodiment is not None:
        if emb is None:
            raise DataError(
                f"{p}: has no embodiment.json, so it cannot be checked against "
                f"robot {expect_embodiment.robot_type!r}"
            )
        diffs = emb.differences(expect_embodiment)
        if diffs:
            raise DataError(
                f"{p}/embodiment.json does not match the expected embodiment "
                f"(checkpoint vs expected): {'; '.join(diffs)}"
            )
    weights = load_file(str(p / "model.safetensors"))
    return Checkpoint(p, weights, config, normalization, emb, version)


def load_resume_state(path: str | Path) -> ResumeState:
    p = resolve_checkpoint(path)
    if not (p / "trainer_state.json").is_file():
        raise DataError(f"{p}: has no trainer_state.json, so it cannot be resumed (weights only)")
    st = _read_json(p / "trainer_state.json")
    return ResumeState(
        step=int(st["step"]),
        optimizer=load_state_file(p / "optimizer.safetensors"),
        scheduler=st["scheduler"],
        rng=st["rng"],
        sampler=st["sampler"],
        train_weights=load_file(str(p / "train_weights.safetensors"))
        if st.get("has_train_weights")
        else None,
        ema=load_file(str(p / "ema.safetensors")) if st.get("has_ema") else None,
        extra=st.get("extra", {}),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def normalization_differences(saved: Mapping[str, Any], expect: Mapping[str, Any]) -> list[str]:
    """Compare a checkpoint's normalization.json with a Normalizer dict or a raw stats dict.

    With raw stats (feature -> stat -> values, e.g. a dataset's), only the features the
    checkpoint normalizes are compared: those must be present and equal.
    """
    saved_stats = saved.get("stats", {})
    if "stats" in expect:
        out = []
        if dict(saved.get("modes", {})) != dict(expect.get("modes", {})):
            out.append(f"modes {saved.get('modes')} vs {expect.get('modes')}")
        return out + stats_differences(saved_stats, expect["stats"])
    from vlastack.data.normalization import check_stats_match

    return check_stats_match(saved_stats, expect, keys=sorted(saved_stats))


def stats_differences(
    got: Mapping[str, Any], want: Mapping[str, Any], prefix: str = "", rtol: float = 1e-5
) -> list[str]:
    """Human-readable differences between two nested stats dicts (keys and numeric values)."""
    out: list[str] = []
    for k in sorted(set(got) | set(want)):
        name = f"{prefix}{k}"
        if k not in got:
            out.append(f"'{name}' missing in checkpoint")
            continue
        if k not in want:
            out.append(f"'{name}' only in checkpoint")
            continue
        a, b = got[k], want[k]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(stats_differences(a, b, f"{name}.", rtol))
        elif isinstance(a, str) or isinstance(b, str) or a is None or b is None:
            if a != b:
                out.append(f"'{name}': {a!r} vs {b!r}")
        else:
            try:
                x = np.asarray(a, dtype=np.float64)
                y = np.asarray(b, dtype=np.float64)
            except (TypeError, ValueError):
                if a != b:
                    out.append(f"'{name}': {a!r} vs {b!r}")
                continue
            if x.shape != y.shape:
                out.append(f"'{name}': shape {x.shape} vs {y.shape}")
            elif not np.allclose(x, y, rtol=rtol, atol=1e-8, equal_nan=True):
                i = int(np.argmax(np.abs(x - y).reshape(-1))) if x.size else 0
                out.append(f"'{name}'[{i}]: {x.reshape(-1)[i]:.6g} vs {y.reshape(-1)[i]:.6g}")
    return out
