"""openpi's wire format: msgpack documents with numpy arrays as tagged maps.

Byte-identical to ``openpi_client.msgpack_numpy`` (REFERENCE.md §1.2) so that the real
``openpi-client`` talks to our server unchanged. Written from the spec rather than imported
because openpi-client pins numpy<2. Decoding is hardened for a server that faces untrusted
clients: unknown dtypes, object arrays and data/shape mismatches raise ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from vlastack.errors import VlastackError

# dtype kinds that cannot be carried as raw bytes: void (structured), object, complex (openpi
# rejects these too, with ValueError, when packing).
_REJECTED_KINDS = ("V", "O", "c")


class ProtocolError(VlastackError):
    """A frame is not a valid openpi msgpack-numpy document (or holds an unsupported value)."""


def _pack_numpy(obj: Any) -> Any:
    """msgpack ``default`` hook: ndarray / numpy scalar -> tagged map with bytes keys."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REJECTED_KINDS:
        raise ValueError(f"cannot send numpy dtype {obj.dtype} over the openpi protocol")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": obj.tobytes(),  # C order, also for non-contiguous views
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        # np.float64 never gets here: it subclasses float and msgpack packs it natively.
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize object of type {type(obj).__name__}")


def _decode_dtype(value: Any) -> np.dtype:
    if not isinstance(value, str):
        raise ProtocolError(f"array dtype must be a numpy dtype string like '<f4', got {value!r}")
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ProtocolError(f"unknown array dtype {value!r}; expected e.g. '<f4', '|u1'") from None
    if dtype.kind in _REJECTED_KINDS:
        raise ProtocolError(f"array dtype {value!r} is not allowed; send numeric or bool arrays")
    return dtype


def _unpack_numpy(obj: dict) -> Any:
    """msgpack ``object_hook``: tagged map -> read-only ndarray view / numpy scalar."""
    if b"__ndarray__" in obj:
        try:
            data, shape = obj[b"data"], obj[b"shape"]
        except KeyError as exc:
            raise ProtocolError(f"ndarray map is missing {exc.args[0]!r}") from None
        dtype = _decode_dtype(obj.get(b"dtype"))
        if not isinstance(data, bytes) or not isinstance(shape, list):
            raise ProtocolError("ndarray map needs bytes 'data' and a list 'shape'")
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ProtocolError(f"ndarray shape {shape} must be non-negative integers")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != len(data):
            raise ProtocolError(
                f"ndarray of shape {tuple(shape)} and dtype {dtype.str} needs "
                f"{count * dtype.itemsize} bytes, got {len(data)}"
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if b"__npgeneric__" in obj:
        dtype = _decode_dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj[b"data"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ProtocolError(f"bad numpy scalar of dtype {dtype.str}") from None
    return obj


def packb(obj: Any) -> bytes:
    """Encode one message (dicts, lists, str, numbers, ndarrays) as openpi does."""
    return msgpack.packb(obj, default=_pack_numpy)  # use_bin_type=True is msgpack's default


class Packer:
    """Reusable packer (same API as ``openpi_client.msgpack_numpy.Packer().pack``)."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(default=_pack_numpy)

    def pack(self, obj: Any) -> bytes:
        return self._packer.pack(obj)


def unpackb(data: bytes) -> Any:
    """Decode one frame; any malformation raises ``ProtocolError`` with a one-line reason."""
    try:
        return msgpack.unpackb(data, object_hook=_unpack_numpy)
    except ProtocolError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"frame is not one msgpack document ({type(exc).__name__})") from None
    except (ValueError, TypeError) as exc:
        # e.g. truncated data, non-str/bytes map keys (strict_map_key), unhashable keys.
        raise ProtocolError(f"frame is not valid msgpack ({exc})") from None


# ---- observation checks, for policies that want to validate with the same short messages ----


@dataclass(frozen=True)
class FieldSpec:
    """What one observation entry must look like. ``shape`` entries of None match any size."""

    shape: tuple[int | None, ...] | None = None
    kinds: str = "fiub"  # numpy dtype kinds accepted: float, int, uint, bool
    required: bool = True

    def describe(self) -> str:
        shape = "any shape" if self.shape is None else str(_fmt_shape(self.shape))
        return f"array {shape} of kind {'/'.join(_KIND_NAMES[k] for k in self.kinds)}"


_KIND_NAMES = {"f": "float", "i": "int", "u": "uint", "b": "bool", "U": "str"}


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return (
        "("
        + ", ".join("*" if n is None else str(n) for n in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )


def validate_observation(obs: Any, schema: Mapping[str, FieldSpec]) -> None:
    """Raise ``ProtocolError`` naming the first key that is missing or has a wrong shape/dtype.

    Keys may be nested with "/" meaning dict nesting only when the flat key is absent (ALOHA sends
    ``{"images": {"cam_high": ...}}``).
    """
    if not isinstance(obs, Mapping):
        raise ProtocolError(f"observation must be a map of named arrays, got {type(obs).__name__}")
    for key, spec in schema.items():
        value = _lookup(obs, key)
        if value is None:
            if spec.required:
                raise ProtocolError(
                    f"observation is missing {key!r}: expected {spec.describe()}; "
                    f"got keys {sorted(map(str, obs))[:12]}"
                )
            continue
        if spec.kinds == "U":
            if not isinstance(value, (str, bytes)):
                raise ProtocolError(f"observation[{key!r}] must be a string")
            continue
        arr = value if isinstance(value, (np.ndarray, np.generic)) else None
        if arr is None:
            try:
                arr = np.asarray(value)
            except Exception:
                arr = None
        if arr is None or arr.dtype.kind not in spec.kinds:
            got = "a non-numeric value" if arr is None else f"dtype {arr.dtype.str}"
            raise ProtocolError(f"observation[{key!r}] has {got}: expected {spec.describe()}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            what = "NaN" if np.isnan(arr).any() else "Inf"
            raise ProtocolError(
                f"observation[{key!r}] holds a non-finite value ({what}): send finite numbers"
            )
        if spec.shape is not None and (
            arr.ndim != len(spec.shape)
            or any(w is not None and w != n for w, n in zip(spec.shape, arr.shape))
        ):
            raise ProtocolError(
                f"observation[{key!r}] has shape {tuple(arr.shape)}: expected {spec.describe()}"
            )


def _lookup(obs: Mapping, key: str) -> Any:
    if key in obs:
        return obs[key]
    node: Any = obs
    for part in key.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
