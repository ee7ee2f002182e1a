import numpy as np
import pytest

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec, pad_vector
from vlastack.errors import DataError


def make_spec() -> EmbodimentSpec:
    return EmbodimentSpec(
        robot_type="sawyer",
        cameras=[CameraSpec("corner2", 64, 64)],
        state=VectorSpec(["x", "y", "z", "grip"], units=["m", "m", "m", "1"]),
        action=VectorSpec(["dx", "dy", "dz", "grip"], kind="delta", gripper_index=3),
        control_hz=80,
    )


def test_roundtrip(tmp_path):
    spec = make_spec()
    spec.save(tmp_path / "e.json")
    back = EmbodimentSpec.load(tmp_path / "e.json")
    assert back == spec
    assert back.differences(spec) == []
    assert "gripper" in back.describe()


def test_validation_names_field():
    spec = make_spec()
    spec.action.units = ["m"]
    with pytest.raises(DataError, match="action.units has 1 entries"):
        spec.validate()
    d = make_spec().to_dict()
    del d["action"]
    with pytest.raises(DataError, match="missing the field 'action'"):
        EmbodimentSpec.from_dict(d)


def test_pad_vector():
    x = np.ones((5, 3), np.float32)
    out, mask = pad_vector(x, 7)
    assert out.shape == (5, 7) and mask.tolist() == [True] * 3 + [False] * 4
    assert out[:, 3:].sum() == 0
    with pytest.raises(DataError):
        pad_vector(x, 2)
