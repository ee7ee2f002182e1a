"""The safety layer between the action runtime and the robot: on by default, one command per tick.

``SafetyLimits`` says what may reach the robot: the action range (clamped), the change per control
tick and the velocity (limited), the deadline after which a chunk is stale, and optionally a
declared safe action. ``limits_for`` builds them from the checkpoint's embodiment spec and stats
and the robot's own spec, overridden by a YAML/JSON file. ``SafetyFilter.command`` turns what the
runtime produced this tick (or nothing) into the command sent:

* a non-finite action, a stale action (no fresh chunk within ``stale_after_s``), a lost server or
  a policy error mean **hold**: the declared ``safe_action``, else the robot's own hold command
  (``Robot.hold_action``), else the generic hold of the action kind (absolute targets: the last
  command sent; delta/velocity: zero). Never the last policy action repeated or extrapolated;
* every command, holds included, is clamped to the range and rate-limited against the previous
  command with ``min(max_delta, max_velocity * dt)``, ``dt`` from an injectable clock: a clock
  that runs backwards gives ``dt = 0`` (no motion) and counts as a ``clock_jump``.

Every intervention adds to a per-kind counter and logs a line (the first tick of a run of the same
kind at WARNING, the run's length when it ends at INFO, so a 50 Hz loop does not flood the log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError

log = logging.getLogger("vlastack.robot.safety")

# Reasons a tick holds (given by the runner) and corrections of an action (found here).
HOLD_REASONS = ("nonfinite", "stale", "server_lost", "policy_error")
KINDS = (*HOLD_REASONS, "range_clamp", "rate_limit", "clock_jump")
WAIT = "wait"  # no action yet, chunk still fresh: the robot holds, not an intervention
DEFAULT_MAX_DELTA_FRACTION = 0.25  # of the action range, per control tick
FILE_KEYS = ("low", "high", "max_delta", "max_velocity", "safe_action", "stale_after_s")


@dataclass
class SafetyLimits:
    """What may be sent to a robot with ``dim`` action dimensions (arrays are float64 (dim,))."""

    low: np.ndarray
    high: np.ndarray
    max_delta: np.ndarray  # per control tick, action units
    max_velocity: np.ndarray  # action units per second
    stale_after_s: float
    kind: str = "absolute"  # the action kind: picks the generic hold
    safe_action: np.ndarray | None = None
    source: str = ""  # where the limits came from (logged at start)

    @property
    def dim(self) -> int:
        return len(self.low)

    def describe(self) -> str:
        def fmt(a: np.ndarray) -> str:
            return "[" + ", ".join(f"{v:.4g}" for v in a) + "]"

        safe = fmt(self.safe_action) if self.safe_action is not None else "robot hold"
        return (
            f"range low={fmt(self.low)} high={fmt(self.high)}; max change/tick {fmt(self.max_delta)}"
            f"; max velocity {fmt(self.max_velocity)}/s; stale after {self.stale_after_s:g} s; "
            f"hold: {safe} ({self.source})"
        )


def _vector(value: Any, names: list[str], field: str, where: str) -> np.ndarray:
    """A scalar, a list of ``len(names)`` numbers, or a {name: number} dict, as float64 (dim,)."""
    dim = len(names)
    fix = f"give a number, a list of {dim} numbers, or a mapping from action name to number"
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ConfigError(f"{where}: {field} names unknown action(s) {unknown}; names: {names}")
        missing = [n for n in names if n not in value]
        if missing:
            raise ConfigError(f"{where}: {field} lacks action(s) {missing}; {fix}")
        value = [value[n] for n in names]
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {field}={value!r} is not numeric; {fix}") from None
    if arr.ndim == 0:
        arr = np.full(dim, float(arr))
    if arr.shape != (dim,):
        raise ConfigError(f"{where}: {field} has {arr.size} values for {dim} actions; {fix}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{where}: {field} holds NaN or inf; {fix}")
    return arr


def read_limits_file(path: str | Path) -> dict[str, Any]:
    """The override file (YAML or JSON, by suffix) as a dict with only ``FILE_KEYS``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the safety limits file ({exc.strerror})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the "
                    "limits as JSON"
                ) from None
            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
    except Exception as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()} ({exc})") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(
            f"{path}: expected a mapping of {list(FILE_KEYS)}, got {type(d).__name__}"
        )
    unknown = [k for k in d if k not in FILE_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed keys: {list(FILE_KEYS)}")
    return d


def limits_for(
    action_names: list[str],
    control_hz: float,
    *,
    checkpoint: EmbodimentSpec | None = None,
    robot: EmbodimentSpec | None = None,
    stats: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "limits file",
    stale_after_s: float = 1.0,
    max_delta_fraction: float = DEFAULT_MAX_DELTA_FRACTION,
) -> SafetyLimits:
    """Limits for a robot whose actions are ``action_names``.

    The range is the intersection of the ranges the checkpoint's and the robot's embodiment
    declare; with neither, the checkpoint's action stats ``min``/``max`` widened by 5 %. The
    override file (``overrides``, keys ``FILE_KEYS``) replaces any of them. Without a range from
    any source this refuses to run (ConfigError): safety is not optional. ``max_delta`` defaults
    to ``max_delta_fraction`` of the range per tick, ``max_velocity`` to ``max_delta`` per tick
    at ``control_hz``.
    """
    dim = len(action_names)
    over = dict(overrides or {})
    where = overrides_source
    lows: list[np.ndarray] = []
    highs: list[np.ndarray] = []
    sources: list[str] = []
    for name, spec in (("checkpoint embodiment", checkpoint), ("robot embodiment", robot)):
        act = spec.action if spec is not None else None
        if act is not None and act.low is not None and act.high is not None and act.dim == dim:
            lows.append(np.asarray(act.low, dtype=np.float64))
            highs.append(np.asarray(act.high, dtype=np.float64))
            sources.append(name)
    st = (stats or {}).get("action") if stats else None
    if not lows and st is not None and "min" in st and "max" in st:
        lo = np.asarray(st["min"], dtype=np.float64).reshape(-1)
        hi = np.asarray(st["max"], dtype=np.float64).reshape(-1)
        if lo.shape == (dim,) and hi.shape == (dim,):
            margin = 0.05 * (hi - lo)
            lows.append(lo - margin)
            highs.append(hi + margin)
            sources.append("checkpoint action stats min/max +5%")
    if "low" in over:
        lows, sources = [_vector(over["low"], action_names, "low", where)], [where]
    if "high" in over:
        highs = [_vector(over["high"], action_names, "high", where)]
        sources = sources if "low" in over else [*sources, where]
    if not lows or not highs:
        raise ConfigError(
            f"no action range for the safety layer: neither the checkpoint's nor the robot's "
            f"embodiment declares action low/high for {action_names}, and there are no action "
            "stats; give 'low' and 'high' in a limits file (--limits FILE.yaml)"
        )
    low = np.max(np.stack(lows), axis=0)
    high = np.min(np.stack(highs), axis=0)
    if np.any(low > high):
        bad = [action_names[i] for i in np.flatnonzero(low > high)]
        raise ConfigError(
            f"the action ranges of {' and '.join(sources)} do not overlap for {bad}; "
            "fix the embodiment or give 'low'/'high' in a limits file"
        )
    span = np.maximum(high - low, 1e-9)
    max_delta = (
        _vector(over["max_delta"], action_names, "max_delta", where)
        if "max_delta" in over
        else max_delta_fraction * span
    )
    max_velocity = (
        _vector(over["max_velocity"], action_names, "max_velocity", where)
        if "max_velocity" in over
        else max_delta * control_hz
    )
    for field, arr in (("max_delta", max_delta), ("max_velocity", max_velocity)):
        if np.any(arr <= 0):
            raise ConfigError(f"{where}: {field} must be positive for every action, got {arr}")
    safe = None
    if "safe_action" in over:
        safe = _vector(over["safe_action"], action_names, "safe_action", where)
        if np.any(safe < low) or np.any(safe > high):
            raise ConfigError(f"{where}: safe_action {safe.tolist()} is outside the action range")
    stale = float(over.get("stale_after_s", stale_after_s))
    if not stale > 0:
        raise ConfigError(f"{where}: stale_after_s must be positive, got {stale}")
    kind = next((s.action.kind for s in (robot, checkpoint) if s is not None), "absolute")
    return SafetyLimits(
        low=low,
        high=high,
        max_delta=max_delta,
        max_velocity=max_velocity,
        stale_after_s=stale,
        kind=kind,
        safe_action=safe,
        source="range from " + " ∩ ".join(sources),
    )


class SafetyFilter:
    """Per-tick guard: ``command(action, now, hold, reason)`` -> the command to send.

    ``counts`` holds the number of ticks per intervention kind (``KINDS``) plus ``wait`` (no
    action yet, still fresh: held, not an intervention). ``reset()`` at every episode start.
    """

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.counts: dict[str, int] = dict.fromkeys((*KINDS, WAIT), 0)
        self._prev: np.ndarray | None = None
        self._prev_t: float | None = None
        self._runs: dict[str, int] = {}  # kind -> length of its current run of ticks
        self.last_kinds: list[str] = []

    def reset(self) -> None:
        """Start an episode: forget the previous command (the next is limited from the robot's
        measured pose)."""
        self._end_runs(set())
        self._prev = None
        self._prev_t = None

    def end_episode(self) -> None:
        """Log the length of the runs of interventions still going on."""
        self._end_runs(set())

    @property
    def interventions(self) -> int:
        return sum(v for k, v in self.counts.items() if k != WAIT)

    def _hold(self, robot_hold: np.ndarray | None) -> np.ndarray | None:
        lim = self.limits
        if lim.safe_action is not None:
            return lim.safe_action.copy()
        hold = _valid(robot_hold, lim.dim)
        if hold is not None:
            return hold
        if lim.kind == "absolute":  # the last command sent: stay at that target
            return None if self._prev is None else self._prev.copy()
        return np.zeros(lim.dim)  # delta / velocity: no motion

    def command(
        self,
        action: np.ndarray | None,
        now: float,
        hold: np.ndarray | None = None,
        reason: str | None = None,
    ) -> np.ndarray | None:
        """The command for this tick. ``action`` is the runtime's action (None: none this tick),
        ``hold`` the robot's hold command (or None), ``reason`` why the runner holds (one of
        ``HOLD_REASONS`` or ``WAIT``). Returns float64 (dim,), finite and within the limits, or
        None when the tick must hold but no hold is known (absolute targets, nothing sent yet,
        no measured pose, no ``safe_action``): then nothing may be sent."""
        lim = self.limits
        kinds: list[str] = []
        a: np.ndarray | None = None
        if reason is None and action is not None:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
            if a.shape != (lim.dim,):
                raise ConfigError(
                    f"the policy returned an action of {a.size} values for a robot with "
                    f"{lim.dim} action dimensions; check the checkpoint fits this robot"
                )
            if not np.all(np.isfinite(a)):
                reason = "nonfinite"
        if reason is not None or a is None:
            reason = reason or WAIT
            if reason != WAIT:
                kinds.append(reason)
            held = self._hold(hold)
            if held is None:
                if reason == WAIT:
                    self.counts[WAIT] += 1
                self._note(kinds)
                return None
            target = held
        else:
            target = a
        cmd = np.clip(target, lim.low, lim.high)
        if reason is None and np.any(cmd != target):
            kinds.append("range_clamp")
        prev = self._prev
        if prev is None:  # first command of the episode: limit it against where the robot is
            prev = _valid(hold, lim.dim) if lim.kind == "absolute" else np.zeros(lim.dim)
        if prev is not None:
            step = lim.max_delta
            if self._prev_t is not None:
                dt = now - self._prev_t
                if dt < 0:
                    kinds.append("clock_jump")
                    dt = 0.0
                step = np.minimum(step, lim.max_velocity * dt)
            limited = prev + np.clip(cmd - prev, -step, step)
            if np.any(np.abs(limited - cmd) > 1e-12):
                kinds.append("rate_limit")
            cmd = np.clip(limited, lim.low, lim.high)
        self._prev = cmd
        self._prev_t = now  # after a backward jump: measure from here on
        if reason == WAIT:
            self.counts[WAIT] += 1
        self._note(kinds)
        return cmd

    # ---- counters and log lines -----------------------------------------------------------
    def _note(self, kinds: list[str]) -> None:
        self.last_kinds = kinds
        for k in kinds:
            self.counts[k] += 1
            if k not in self._runs:
                log.warning("safety: %s (tick %d of this kind)", k, self.counts[k])
            self._runs[k] = self._runs.get(k, 0) + 1
        self._end_runs(set(kinds))

    def _end_runs(self, keep: set[str]) -> None:
        for k in [k for k in self._runs if k not in keep]:
            n = self._runs.pop(k)
            if n > 1:
                log.info("safety: %s ended after %d consecutive ticks", k, n)


def _valid(vector: Any, dim: int) -> np.ndarray | None:
    """``vector`` as float64 (dim,) if it is one and finite, else None."""
    if vector is None:
        return None
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    return v if v.shape == (dim,) and np.all(np.isfinite(v)) else None


def count_violations(commands: np.ndarray, limits: SafetyLimits, tol: float = 1e-9) -> int:
    """Commands (T, dim) that are non-finite, outside [low, high], or change by more than
    ``max_delta`` from the previous command: the figure the fault-injection tests pin to zero."""
    c = np.asarray(commands, dtype=np.float64)
    bad = ~np.all(np.isfinite(c), axis=1)
    bad |= np.any(c < limits.low - tol, axis=1) | np.any(c > limits.high + tol, axis=1)
    if len(c) > 1:
        jump = np.any(np.abs(np.diff(c, axis=0)) > limits.max_delta + tol, axis=1)
        bad[1:] |= jump
    return int(bad.sum())
