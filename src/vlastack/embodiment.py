"""Typed description of a robot: its cameras, state and action features.

An ``EmbodimentSpec`` says what a policy's inputs and outputs mean (names, units, absolute or
delta, ranges, which dimension is the gripper). It is stored with a dataset
(``meta/embodiment.json``) and with a checkpoint, printed by ``vlastack data info``, checked when a
policy meets an environment, and used to pad and mask vectors when datasets of different robots
are mixed in one training run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlastack import atomic
from vlastack.errors import DataError

FORMAT_VERSION = 1
ActionKind = Literal["absolute", "delta", "velocity"]
Orientation = Literal["upright", "rot180", "flip_vertical", "flip_horizontal"]


@dataclass
class CameraSpec:
    """One camera: its feature key suffix, image size and how the stored image is oriented."""

    name: str
    height: int
    width: int
    channels: int = 3
    orientation: Orientation = "upright"
    description: str = ""

    @property
    def key(self) -> str:
        return f"observation.images.{self.name}"


@dataclass
class VectorSpec:
    """A state or action vector: one name (and optionally unit and range) per dimension."""

    names: list[str]
    units: list[str] | None = None
    kind: ActionKind = "absolute"
    low: list[float] | None = None
    high: list[float] | None = None
    gripper_index: int | None = None
    description: str = ""

    @property
    def dim(self) -> int:
        return len(self.names)

    def validate(self, what: str) -> None:
        n = self.dim
        if n == 0:
            raise DataError(f"embodiment {what}.names is empty; list one name per dimension")
        for attr in ("units", "low", "high"):
            v = getattr(self, attr)
            if v is not None and len(v) != n:
                raise DataError(
                    f"embodiment {what}.{attr} has {len(v)} entries but {what}.names has {n}; "
                    f"give one {attr[:-1] if attr == 'units' else attr} value per dimension"
                )
        if self.gripper_index is not None and not (0 <= self.gripper_index < n):
            raise DataError(
                f"embodiment {what}.gripper_index={self.gripper_index} is outside 0..{n - 1}"
            )
        if self.kind not in ("absolute", "delta", "velocity"):
            raise DataError(
                f"embodiment {what}.kind={self.kind!r}; expected 'absolute', 'delta' or 'velocity'"
            )


@dataclass
class EmbodimentSpec:
    """Cameras, state and action of one robot, plus its control rate."""

    robot_type: str
    cameras: list[CameraSpec]
    state: VectorSpec
    action: VectorSpec
    control_hz: float
    description: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "embodiment") -> EmbodimentSpec:
        try:
            version = int(d.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise DataError(
                    f"{source}: embodiment format_version {version} is newer than this vlastack "
                    f"understands ({FORMAT_VERSION}); upgrade vlastack"
                )
            spec = cls(
                robot_type=str(d["robot_type"]),
                cameras=[CameraSpec(**c) for c in d.get("cameras", [])],
                state=VectorSpec(**d["state"]),
                action=VectorSpec(**d["action"]),
                control_hz=float(d["control_hz"]),
                description=str(d.get("description", "")),
                format_version=version,
                extra=dict(d.get("extra", {})),
            )
        except KeyError as exc:
            raise DataError(f"{source}: embodiment is missing the field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise DataError(f"{source}: malformed embodiment ({exc})") from None
        spec.validate(source)
        return spec

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> EmbodimentSpec:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: embodiment file not found") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); restore or regenerate it") from None
        return cls.from_dict(d, source=str(path))

    # ---- checks ------------------------------------------------------------------------
    def validate(self, source: str = "embodiment") -> None:
        self.state.validate(f"{source}: state")
        self.action.validate(f"{source}: action")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise DataError(f"{source}: duplicate camera names {names}")
        for c in self.cameras:
            if c.height <= 0 or c.width <= 0 or c.channels not in (1, 3, 4):
                raise DataError(
                    f"{source}: camera {c.name!r} has size {c.height}x{c.width}x{c.channels}; "
                    "height/width must be positive and channels 1, 3 or 4"
                )
        if self.control_hz <= 0:
            raise DataError(f"{source}: control_hz must be positive, got {self.control_hz}")

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise DataError(
            f"embodiment {self.robot_type!r} has no camera {name!r}; "
            f"cameras: {[c.name for c in self.cameras]}"
        )

    def differences(self, other: EmbodimentSpec) -> list[str]:
        """Human-readable list of what differs between two specs (empty if compatible). Action
        names are not compared when either spec has ``extra["names_unknown"]`` (placeholder
        names, e.g. of an imported LeRobot checkpoint, whose config stores sizes only)."""
        out: list[str] = []
        unknown = self.extra.get("names_unknown") or other.extra.get("names_unknown")
        if self.action.dim != other.action.dim:
            out.append(f"action dim {self.action.dim} vs {other.action.dim}")
        elif self.action.names != other.action.names and not unknown:
            out.append(f"action names {self.action.names} vs {other.action.names}")
        if self.action.kind != other.action.kind:
            out.append(f"action kind {self.action.kind} vs {other.action.kind}")
        if self.state.dim != other.state.dim:
            out.append(f"state dim {self.state.dim} vs {other.state.dim}")
        mine = {c.name: (c.height, c.width) for c in self.cameras}
        theirs = {c.name: (c.height, c.width) for c in other.cameras}
        if set(mine) != set(theirs):
            out.append(f"cameras {sorted(mine)} vs {sorted(theirs)}")
        return out

    def describe(self) -> str:
        """Multi-line explanation of inputs and outputs, for ``vlastack data info``."""
        lines = [f"robot: {self.robot_type} @ {self.control_hz:g} Hz"]
        if self.description:
            lines.append(f"  {self.description}")
        lines.append("cameras:")
        for c in self.cameras or []:
            lines.append(
                f"  {c.key}: {c.height}x{c.width}x{c.channels} uint8, orientation {c.orientation}"
            )
        if not self.cameras:
            lines.append("  (none)")
        for what, v in (("state", self.state), ("action", self.action)):
            lines.append(f"{what}: {v.dim} dims, {v.kind}")
            for i, n in enumerate(v.names):
                unit = v.units[i] if v.units else "?"
                rng = ""
                if v.low is not None and v.high is not None:
                    rng = f" range [{v.low[i]:g}, {v.high[i]:g}]"
                grip = "  (gripper)" if v.gripper_index == i else ""
                lines.append(f"  [{i}] {n} ({unit}){rng}{grip}")
        return "\n".join(lines)


def pad_vector(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad the last axis of ``x`` to ``dim``; return (padded, mask) with mask True = real.

    Used to mix robots with different state/action sizes in one batch (the loss ignores padded
    dimensions through the mask).
    """
    n = x.shape[-1]
    if n > dim:
        raise DataError(f"cannot pad a {n}-dim vector to {dim} dims; raise the padded size")
    out = np.zeros((*x.shape[:-1], dim), dtype=x.dtype)
    out[..., :n] = x
    mask = np.zeros(dim, dtype=bool)
    mask[:n] = True
    return out, mask
