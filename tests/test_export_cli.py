"""``vlastack export quantize|onnx|compare`` round trips through the real entry point."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from _export_tiny import tiny_obs, write_tiny_checkpoint
from vlastack.cli.main import main


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_quantize_then_onnx_round_trip(tmp_path, capsys):
    from vlastack.export.quantize import load_policy

    ck = write_tiny_checkpoint(tmp_path / "run", "flow_matching")
    out = tmp_path / "int8"
    assert (
        main(["export", "quantize", str(tmp_path / "run"), "--method", "int8", "--out", str(out)])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["quantization"]["method"] == "int8"
        and cfg["model"] == json.loads((ck / "config.json").read_text())["model"]
    )
    actions = load_policy(out).infer(tiny_obs())["actions"]
    assert actions.shape == (4, 4) and np.isfinite(actions).all()

    tern = tmp_path / "tern"
    rc = main(
        [
            "export",
            "quantize",
            str(ck),
            "--method",
            "ternary",
            "--parts",
            "head",
            "--out",
            str(tern),
        ]
    )
    assert rc == 0
    assert json.loads((tern / "config.json").read_text())["model"]["ternary"] == ["head"]

    onnx_dir = tmp_path / "onnx"
    assert main(["export", "onnx", str(ck), "--out", str(onnx_dir), "--parts", "step,sampler"]) == 0
    printed = capsys.readouterr().out
    assert "flow_matching_step.onnx" in printed and "max |err|" in printed
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"flow_matching_step", "flow_matching_sampler"}


def test_user_mistakes_exit_2_without_traceback(tmp_path, capsys):
    ck = write_tiny_checkpoint(tmp_path / "run", "l1")
    rc = main(["export", "quantize", str(ck), "--parts", "wings", "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 2 and "wings" in err and "Traceback" not in err
    rc = main(["export", "onnx", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no checkpoint found" in capsys.readouterr().err


def test_compare_cli_prints_table_and_json(tmp_path, capsys, lerobot_fixture):
    from vlastack.data.format import DatasetReader

    ck = write_tiny_checkpoint(tmp_path / "run", "l1", stats=DatasetReader(lerobot_fixture).stats)
    q = tmp_path / "q"
    assert main(["export", "quantize", str(ck), "--out", str(q), "--backend", "weight_only"]) == 0
    capsys.readouterr()
    rc = main(
        [
            "export",
            "compare",
            str(ck),
            str(q),
            "--dataset",
            str(lerobot_fixture),
            "--max-windows",
            "4",
            "--repeats",
            "2",
            "--no-rss",
            "--json",
            str(tmp_path / "c.json"),
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["reference", "quantized"]
    res = json.loads(lines[-1])
    assert res == json.loads((tmp_path / "c.json").read_text())
    assert res["quantized"]["param_bytes"] < res["reference"]["param_bytes"]
