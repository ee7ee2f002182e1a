"""openpi msgpack-numpy wire format: exact bytes (REFERENCE.md §1.2) and hardened decoding."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgpack
import numpy as np
import pytest

from vlastack.serving.protocol import (
    FieldSpec,
    Packer,
    ProtocolError,
    packb,
    unpackb,
    validate_observation,
)

OPENPI_PY = Path(__file__).resolve().parents[1] / ".venv-openpi" / "bin" / "python"
needs_openpi = pytest.mark.skipif(
    not OPENPI_PY.exists(),
    reason="needs .venv-openpi (python3 -m venv .venv-openpi && "
    ".venv-openpi/bin/pip install openpi-client typing_extensions)",
)


def test_hex_of_reference_example():
    # §1.2: 81 a7 "actions" 84 c4 0b "__ndarray__" c3 c4 04 "data" c4 08 <8 bytes>
    #       c4 05 "dtype" a3 "<f4" c4 05 "shape" 92 01 02
    expected = (
        b"\x81\xa7actions\x84"
        + b"\xc4\x0b__ndarray__\xc3"
        + b"\xc4\x04data\xc4\x08"
        + np.array([1, 2], "<f4").tobytes()
        + b"\xc4\x05dtype\xa3<f4"
        + b"\xc4\x05shape\x92\x01\x02"
    )
    assert packb({"actions": np.array([[1, 2]], "<f4")}) == expected
    assert Packer().pack({"actions": np.array([[1, 2]], "<f4")}) == expected


def test_scalars():
    assert packb(np.float64(1.5)) == msgpack.packb(1.5)  # natively, no wrapper
    f32 = unpackb(packb(np.float32(1.5)))
    assert isinstance(f32, np.float32) and f32 == 1.5
    b = unpackb(packb(np.bool_(True)))
    assert isinstance(b, np.bool_) and bool(b)
    assert b"__npgeneric__" in packb(np.int64(3))
    assert msgpack.unpackb(packb(np.int64(3)))[b"dtype"] == "<i8"


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(6, dtype=np.float64),
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([True, False]),
        np.array(["ab", "c"]),
        np.zeros((0, 3), np.int16),
        np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2],  # non-contiguous view
        np.array(3.0, dtype=np.float32),  # 0-d
    ],
)
def test_roundtrip(arr):
    out = unpackb(packb({"x": arr, "nested": {"y": arr}}))
    for got in (out["x"], out["nested"]["y"]):
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
        assert not got.flags.writeable  # zero-copy view over the frame


@pytest.mark.parametrize(
    "bad", [np.array([1 + 2j]), np.array([object()], dtype=object), np.complex64(1)]
)
def test_pack_rejects_object_and_complex(bad):
    with pytest.raises(ValueError, match="dtype"):
        packb({"x": bad})


def _ndmap(data: bytes, dtype: str, shape: list) -> bytes:
    return msgpack.packb(
        {"x": {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}}
    )


@pytest.mark.parametrize(
    "frame, match",
    [
        (b"\xc1\xc1garbage", "msgpack"),
        (packb({"x": 1})[:-1], "msgpack"),
        (packb({"x": 1}) + b"\x00", "msgpack"),
        (_ndmap(b"\x00" * 8, "|O", [1]), "not allowed"),
        (_ndmap(b"\x00" * 8, "nonsense", [1]), "unknown array dtype"),
        (_ndmap(b"\x00" * 7, "<f4", [2]), "needs 8 bytes"),
        (_ndmap(b"\x00" * 8, "<f4", [-2]), "non-negative"),
        (msgpack.packb({(1, 2): 3}, use_bin_type=True), "msgpack"),
    ],
)
def test_unpack_malformed_raises_protocol_error(frame, match):
    with pytest.raises(ProtocolError, match=match):
        unpackb(frame)


def test_validate_observation_messages():
    schema = {
        "observation/state": FieldSpec(shape=(8,), kinds="f"),
        "images/cam_high": FieldSpec(shape=(3, None, None), kinds="u"),
    }
    good = {
        "observation/state": np.zeros(8, np.float32),
        "images": {"cam_high": np.zeros((3, 4, 4), np.uint8)},
    }
    validate_observation(good, schema)
    with pytest.raises(ProtocolError, match=r"missing 'observation/state'.*\(8,\)"):
        validate_observation({"images": good["images"]}, schema)
    with pytest.raises(ProtocolError, match=r"shape \(7,\): expected array \(8,\)"):
        validate_observation({**good, "observation/state": np.zeros(7, np.float32)}, schema)
    with pytest.raises(
        ProtocolError, match=r"dtype <f4: expected array \(3, \*, \*\) of kind uint"
    ):
        validate_observation(
            {**good, "images": {"cam_high": np.zeros((3, 4, 4), np.float32)}}, schema
        )


# The same objects built in both interpreters; the openpi side packs them with its own packer.
_FIXTURE_SRC = """
import numpy as np
objs = [
    {"actions": np.array([[1, 2]], "<f4")},
    {"observation/image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
     "observation/state": np.linspace(0, 1, 8).astype(np.float32), "prompt": "pick"},
    {"state": np.arange(14, dtype=np.float64), "images": {"cam_high": np.ones((3, 2, 2), np.uint8)}},
    {"a": np.float32(2.5), "b": np.float64(0.25), "c": np.int64(-7), "d": np.bool_(False),
     "e": np.array(["x", "yz"]), "f": [1, 2.0, None, True], "g": np.arange(6, dtype=np.int32)[::2]},
]
"""


@needs_openpi
def test_bytes_identical_to_real_openpi_client():
    script = (
        _FIXTURE_SRC
        + """
import json, sys
from openpi_client import msgpack_numpy as m
packer = m.Packer()
ours = json.loads(sys.stdin.read())
# re-encode what we sent, after decoding it with openpi's unpacker
back = [packer.pack(m.unpackb(bytes.fromhex(h))).hex() for h in ours]
print(json.dumps({"theirs": [packer.pack(o).hex() for o in objs], "back": back}))
"""
    )
    ns: dict = {}
    exec(_FIXTURE_SRC, ns)
    ours = [packb(o) for o in ns["objs"]]
    proc = subprocess.run(
        [str(OPENPI_PY), "-c", script],
        input=json.dumps([b.hex() for b in ours]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    for mine, theirs, back in zip(ours, result["theirs"], result["back"]):
        assert mine.hex() == theirs
        assert back == mine.hex()
        # and we decode theirs to the same values
        assert packb(unpackb(bytes.fromhex(theirs))) == mine
