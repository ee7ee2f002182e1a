"""Real-time chunking over the wire: the optional ``rtc/*`` fields of an openpi observation.

openpi's protocol has one request kind (an observation map -> an action chunk). A robot running
real-time chunking (RTC, Black, Galliker & Levine 2025; REFERENCE.md §3.6) must also tell the
server what it has committed to: the previous chunk's not-yet-executed actions and how many of
them will execute while this request is computed. It does so with extra keys in the same
observation map, all under ``rtc/`` (openpi's own keys never use that prefix):

``rtc/prev_actions``       float (L, A): the previous chunk's not-yet-executed actions in the
                           robot's units, row 0 = the action for this observation's tick.
``rtc/prev_chunk_start``   int k >= 0, instead of ``rtc/prev_actions``: rows k.. of the last chunk
                           this server sent on this connection (k = ticks executed since that
                           chunk's observation); the server keeps that one chunk per connection.
``rtc/inference_delay``    int d >= 0 (required with either of the above): control ticks that will
                           pass before the new chunk arrives; its first min(d, L) actions are frozen
                           to the committed ones, the rest of the L decay to weight 0 (soft mask).
``rtc/max_guidance_weight`` float >= 0, optional (the policy's default, 5.0 for vlastack's).
``rtc/schedule``           str, optional: exp (default), linear, ones or zeros.

A request without any ``rtc/`` key is a plain openpi request and gets exactly the plain reply.
A guided reply adds ``"rtc": {"prefix_steps": L, "inference_delay": min(d, L)}`` (what was
applied), so a client can tell guidance happened. A server advertises support in its metadata
frame under ``"rtc"`` (``guidance_metadata``); an openpi server, or a vlastack server whose policy
cannot sample with guidance (not a flow-matching head), has no ``"rtc"`` key, and the latter
answers a guided request with a text error frame (the connection stays usable).

Decoding is strict, like the rest of the server: a malformed field (wrong shape or dtype, NaN or
Inf, a negative or non-integer delay, an unknown ``rtc/`` key) raises ``ProtocolError`` naming the
field and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlastack.serving.protocol import ProtocolError

PREFIX = "rtc/"
PREV_ACTIONS = "rtc/prev_actions"
PREV_CHUNK_START = "rtc/prev_chunk_start"
INFERENCE_DELAY = "rtc/inference_delay"
MAX_GUIDANCE_WEIGHT = "rtc/max_guidance_weight"
SCHEDULE = "rtc/schedule"
# the soft-mask schedules of ``functional.rtc.prefix_weights`` (a test checks they agree)
SCHEDULES = ("exp", "linear", "ones", "zeros")
PROTOCOL_VERSION = 1

FIELDS = {
    PREV_ACTIONS: "float (L, A): the previous chunk's not-yet-executed actions, robot units, "
    "row 0 at this observation's tick",
    PREV_CHUNK_START: "int k >= 0, instead of rtc/prev_actions: rows k.. of the last chunk this "
    "connection received",
    INFERENCE_DELAY: "int d >= 0, required with either: ticks until the new chunk arrives "
    "(its first min(d, L) actions are frozen)",
    MAX_GUIDANCE_WEIGHT: "float >= 0, optional: the guidance weight cap (beta)",
    SCHEDULE: f"str, optional: the soft mask after the frozen steps, one of {', '.join(SCHEDULES)}",
}


@dataclass(frozen=True)
class Guidance:
    """One request's decoded guidance: what ``policy.infer_guided`` takes."""

    prev_actions: np.ndarray  # float32 (L, A)
    inference_delay: int
    max_guidance_weight: float | None = None
    schedule: str | None = None

    def kwargs(self) -> dict[str, Any]:
        """The optional settings the client gave (absent ones keep the policy's defaults)."""
        kw: dict[str, Any] = {}
        if self.max_guidance_weight is not None:
            kw["max_guidance_weight"] = self.max_guidance_weight
        if self.schedule is not None:
            kw["schedule"] = self.schedule
        return kw

    def applied(self, action_horizon: int | None) -> dict[str, int]:
        """What the policy applies: L committed steps (at most H), the first min(d, L) frozen."""
        steps = len(self.prev_actions)
        if action_horizon is not None:
            steps = min(steps, action_horizon)
        return {"prefix_steps": steps, "inference_delay": min(self.inference_delay, steps)}


def encode_guidance(
    prev_actions: Any = None,
    inference_delay: int = 0,
    *,
    prev_chunk_start: int | None = None,
    max_guidance_weight: float | None = None,
    schedule: str | None = None,
) -> dict[str, Any]:
    """The ``rtc/*`` fields to merge into an observation (client side)."""
    if (prev_actions is None) == (prev_chunk_start is None):
        raise ValueError("give exactly one of prev_actions and prev_chunk_start")
    fields: dict[str, Any] = {INFERENCE_DELAY: int(inference_delay)}
    if prev_actions is not None:
        fields[PREV_ACTIONS] = np.ascontiguousarray(prev_actions, dtype=np.float32)
    else:
        fields[PREV_CHUNK_START] = int(prev_chunk_start)  # type: ignore[arg-type]
    if max_guidance_weight is not None:
        fields[MAX_GUIDANCE_WEIGHT] = float(max_guidance_weight)
    if schedule is not None:
        fields[SCHEDULE] = str(schedule)
    return fields


def has_guidance(obs: Mapping[Any, Any]) -> bool:
    return any(isinstance(k, str) and k.startswith(PREFIX) for k in obs)


def split_guidance(
    obs: Mapping[Any, Any],
    *,
    action_dim: int | None = None,
    last_chunk: np.ndarray | None = None,
) -> tuple[dict[Any, Any], Guidance | None]:
    """(the observation without ``rtc/`` keys, its decoded guidance or None).

    ``action_dim`` (from the policy's metadata) checks the width of ``rtc/prev_actions``;
    ``last_chunk`` is the last chunk sent on this connection (for ``rtc/prev_chunk_start``)."""
    rest = {k: v for k, v in obs.items() if not (isinstance(k, str) and k.startswith(PREFIX))}
    given = {k: v for k, v in obs.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if not given:
        return rest, None
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ProtocolError(
            f"unknown guidance field {unknown[0]!r}: the rtc/ fields are {', '.join(FIELDS)}"
        )
    if PREV_ACTIONS in given and PREV_CHUNK_START in given:
        raise ProtocolError(
            f"send {PREV_ACTIONS!r} or {PREV_CHUNK_START!r}, not both (the committed actions, "
            "or where they start in the last chunk this connection received)"
        )
    if PREV_ACTIONS in given:
        prev = _prev_actions(given[PREV_ACTIONS], action_dim)
    elif PREV_CHUNK_START in given:
        prev = _from_last_chunk(given[PREV_CHUNK_START], last_chunk)
    else:
        raise ProtocolError(
            f"guidance needs the committed actions: {PREV_ACTIONS!r} (float (L, A)) or "
            f"{PREV_CHUNK_START!r} (int), besides {INFERENCE_DELAY!r}"
        )
    if INFERENCE_DELAY not in given:
        raise ProtocolError(
            f"{INFERENCE_DELAY!r} is missing: send the control ticks (int >= 0) that will pass "
            "before the new chunk arrives"
        )
    delay = _non_negative_int(given[INFERENCE_DELAY], INFERENCE_DELAY, "control ticks")
    weight = None
    if MAX_GUIDANCE_WEIGHT in given:
        weight = _weight(given[MAX_GUIDANCE_WEIGHT])
    schedule = None
    if SCHEDULE in given:
        schedule = _schedule(given[SCHEDULE])
    return rest, Guidance(prev, delay, weight, schedule)


def _prev_actions(value: Any, action_dim: int | None) -> np.ndarray:
    want = f"float (L, {action_dim if action_dim is not None else 'A'})"
    try:
        arr = np.asarray(value)
    except Exception:
        arr = None
    if arr is None or arr.dtype.kind not in "fiu":
        got = "a non-numeric value" if arr is None else f"dtype {arr.dtype.str}"
        raise ProtocolError(f"{PREV_ACTIONS!r} has {got}: expected {want} actions")
    if arr.ndim != 2 or (action_dim is not None and arr.shape[1] != action_dim and arr.size):
        raise ProtocolError(
            f"{PREV_ACTIONS!r} has shape {tuple(arr.shape)}: expected {want} (the previous "
            "chunk's not-yet-executed actions, one row per control tick)"
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        what = "NaN" if np.isnan(arr).any() else "Inf"
        raise ProtocolError(
            f"{PREV_ACTIONS!r} holds a non-finite value ({what}): send finite numbers"
        )
    return arr


def _from_last_chunk(value: Any, last_chunk: np.ndarray | None) -> np.ndarray:
    start = _non_negative_int(value, PREV_CHUNK_START, "rows")
    if last_chunk is None:
        raise ProtocolError(
            f"{PREV_CHUNK_START!r}: this connection has received no chunk yet; send "
            f"{PREV_ACTIONS!r} instead (or a plain request first)"
        )
    if start > len(last_chunk):
        raise ProtocolError(
            f"{PREV_CHUNK_START!r} is {start} but the last chunk this connection received has "
            f"{len(last_chunk)} rows"
        )
    return np.asarray(last_chunk[start:], dtype=np.float32)


def _non_negative_int(value: Any, field: str, unit: str) -> int:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or int(value) < 0:
        raise ProtocolError(f"{field!r} is {value!r}: expected an integer >= 0 ({unit})")
    return int(value)


def _weight(value: Any) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not ok or not math.isfinite(float(value)) or float(value) < 0:
        raise ProtocolError(
            f"{MAX_GUIDANCE_WEIGHT!r} is {value!r}: expected a finite number >= 0 (0 = no guidance)"
        )
    return float(value)


def _schedule(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or value not in SCHEDULES:
        raise ProtocolError(f"{SCHEDULE!r} is {value!r}: expected one of {', '.join(SCHEDULES)}")
    return value


# ---- what a server says about itself ------------------------------------------------------


def guidance_support(policy: Any) -> tuple[bool, str]:
    """(whether ``policy`` can answer guided requests, why not)."""
    if not callable(getattr(policy, "infer_guided", None)):
        return False, f"{type(policy).__name__} has no infer_guided (not a flow-matching policy)"
    if not bool(getattr(policy, "supports_guided_sampling", True)):
        return False, (
            f"{type(policy).__name__} {getattr(policy, 'source', '')} has no flow-matching "
            "action head".replace("  ", " ")
        )
    return True, ""


def guidance_metadata() -> dict[str, Any]:
    """The metadata frame's ``"rtc"`` entry of a server whose policy takes guidance."""
    return {"version": PROTOCOL_VERSION, "fields": dict(FIELDS), "schedules": list(SCHEDULES)}


def server_supports_guidance(metadata: Mapping[str, Any] | None) -> bool:
    """Client side: whether a server's metadata frame advertises the ``rtc/`` fields."""
    entry = (metadata or {}).get("rtc")
    return isinstance(entry, Mapping) and entry.get("version") == PROTOCOL_VERSION


__all__ = [
    "FIELDS",
    "Guidance",
    "encode_guidance",
    "guidance_metadata",
    "guidance_support",
    "has_guidance",
    "server_supports_guidance",
    "split_guidance",
]
