"""``vlastack train`` refuses a dataset whose decoded frames do not have the shape its info.json
declares (what ``vlastack data doctor`` flags), unless told to go on (issue 27.7)."""

from __future__ import annotations

import json
import shutil

import pytest

from vlastack.cli.main import main

FLAGS = ["--steps=1", "--batch_size=4", "--log=none", "--progress=false", "--num_workers=0"]
FLAGS += ["--num_threads=1", "--val_fraction=0"]


@pytest.fixture()
def mismatched(tmp_path, lerobot_fixture):
    ds = tmp_path / "ds"
    shutil.copytree(lerobot_fixture, ds)
    info = json.loads((ds / "meta" / "info.json").read_text())
    cam = next(k for k, f in info["features"].items() if f["dtype"] in ("video", "image"))
    h, w, c = info["features"][cam]["shape"]
    info["features"][cam]["shape"] = [h * 2, w, c]
    (ds / "meta" / "info.json").write_text(json.dumps(info))
    return ds, cam


def test_train_refuses_an_image_shape_mismatch(mismatched, tmp_path, capsys):
    ds, cam = mismatched
    code = main(["train", "cpu_default", "--data", str(ds), f"--out_dir={tmp_path / 'a'}", *FLAGS])
    err = capsys.readouterr().err
    assert code == 2
    assert cam in err and "doctor" in err and "--allow_image_shape_mismatch" in err, err
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_the_flag_lets_training_go_on(mismatched, tmp_path):
    ds, _ = mismatched
    argv = ["train", "cpu_default", "--data", str(ds), f"--out_dir={tmp_path / 'b'}", *FLAGS]
    assert main([*argv, "--allow_image_shape_mismatch=true"]) == 0
    assert (tmp_path / "b" / "checkpoints" / "last").exists()
