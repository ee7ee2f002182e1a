import json

import numpy as np
import pytest

from vlastack.cli.main import main

h5py = pytest.importorskip("h5py", reason="h5py ([convert] extra) not installed")


def test_info_and_doctor_on_fixture(lerobot_fixture, capsys):
    assert main(["data", "info", str(lerobot_fixture)]) == 0
    out = capsys.readouterr().out
    assert "observation.images.front" in out and "48×64" in out and "press the button" in out
    assert main(["data", "info", str(lerobot_fixture), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frames"] == 47 and d["features"]["observation.state"]["shape"] == [4]
    assert main(["data", "doctor", str(lerobot_fixture)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "embodiment" in out
    assert main(["data", "doctor", str(lerobot_fixture), "--strict"]) == 1  # one warning


def test_convert_then_doctor_then_stats(tmp_path, capsys):
    from test_data_convert import make_robomimic

    src = make_robomimic(tmp_path / "demo.hdf5")
    dst = tmp_path / "ds"
    rc = main(["data", "convert", "hdf5", str(src), str(dst), "--no-progress", "--images", "png"])
    assert rc == 0 and (dst / "meta" / "embodiment.json").exists()
    capsys.readouterr()
    assert main(["data", "doctor", str(dst), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["summary"]["episodes"] == 3
    # stats: recompute, compare, write
    stats_path = dst / "meta" / "stats.json"
    stored = json.loads(stats_path.read_text())
    stored["action"]["mean"] = [99.0] * 7
    stats_path.write_text(json.dumps(stored))
    assert main(["data", "stats", str(dst), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert any("'action'.mean: differs" in d for d in res["differences"])
    assert json.loads(stats_path.read_text())["action"]["mean"] == [99.0] * 7  # not written
    assert main(["data", "stats", str(dst), "--write"]) == 0
    fixed = np.asarray(json.loads(stats_path.read_text())["action"]["mean"])
    assert np.all(np.abs(fixed) < 10)


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    zpath = tmp_path / "x.zarr"
    import zarr

    root = zarr.open_group(str(zpath), mode="w", zarr_format=2)
    root.create_array("data/action", shape=(4, 2), dtype="f4")
    root.create_array("meta/episode_ends", shape=(1,), dtype="i8")[:] = [4]
    rc = main(["data", "convert", "zarr", str(zpath), str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "no 'state'" in capsys.readouterr().err


def test_doctor_exit_code_on_errors(tmp_path, capsys):
    from test_data_doctor import healthy_episode, write_dataset

    root = write_dataset(tmp_path / "d", [healthy_episode(10, 0)])
    (root / "meta" / "stats.json").write_text(json.dumps({}))
    assert main(["data", "doctor", str(root)]) == 1
    out = capsys.readouterr().out
    assert "2 error(s)" in out and "meta/stats.json has no entry" in out.replace("\n", " ")
    assert main(["data", "doctor", str(root), "--json"]) == 1
    fixes = [f["fix"] for f in json.loads(capsys.readouterr().out)["findings"]]
    assert "recompute them: `vlastack data stats PATH --write`" in fixes
