"""Reading a checkpoint folder: finding it, its format, its metadata and the robots it drives.

The one place a checkpoint is read from (``Policy.from_checkpoint``, evaluation, export and
``vlastack inspect`` all come here); ``training/checkpoint.py`` writes, prunes and recovers the
folders and re-exports these names. Only safetensors and JSON are read, so loading never runs
code from the checkpoint; torch and safetensors are imported only when weights are loaded, so
listing a checkpoint's robots or resolving its folder stays cheap (the evaluation's parent process).
See ``training/checkpoint.py`` for the folder layout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import DataError

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
STEP_PREFIX = "step_"


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
    config = read_json(p / "config.json")
    normalization = read_json(p / "normalization.json")
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
    from safetensors.torch import load_file

    weights = load_file(str(p / "model.safetensors"))
    return Checkpoint(p, weights, config, normalization, emb, version)


def read_json(path: Path) -> Any:
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


__all__ = [
    "FORMAT_VERSION",
    "STEP_PREFIX",
    "Checkpoint",
    "EmbodimentEntry",
    "load_checkpoint",
    "normalization_differences",
    "read_json",
    "resolve_checkpoint",
    "stats_differences",
    "top_module",
    "weight_summary",
]


def top_module(key: str) -> str:
    """A state-dict key's top-level module (``head.decoder.0.w`` -> ``head``)."""
    return key.split(".", 1)[0]


def weight_summary(path: Path, group: Callable[[str], str] = top_module) -> dict[str, Any]:
    """Parameter counts per module group (``group(key)``) and per dtype, and the file size, from
    a safetensors file's header: no tensor is read."""
    import math

    from safetensors import safe_open

    groups: dict[str, int] = {}
    dtypes: dict[str, int] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
            sl = f.get_slice(key)
            n = math.prod(sl.get_shape())
            g = group(key)
            groups[g] = groups.get(g, 0) + n
            dt = str(sl.get_dtype())
            dtypes[dt] = dtypes.get(dt, 0) + n
    return {
        "total": sum(groups.values()),
        "by_module": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "dtypes": dtypes,
        "file_mb": round(Path(path).stat().st_size / 2**20, 2),
    }
