"""Bad inputs get a message, not a traceback (issue 27.6): each case runs the CLI in-process and
expects exit code 2, a one-paragraph ``error:`` on stderr naming what was wrong, and no traceback.
Server-side: values of the wrong kind get a ``bad request`` naming the key and what was expected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _export_tiny import tiny_obs, write_tiny_checkpoint
from vlastack.cli.main import main
from vlastack.errors import DataError

FLAGS = ["--steps=1", "--log=none", "--progress=false", "--num_workers=0", "--num_threads=1"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, lerobot_fixture) -> Path:
    root = tmp_path_factory.mktemp("bad")
    shape = root / "ds_shape"
    shutil.copytree(lerobot_fixture, shape)
    info = json.loads((shape / "meta" / "info.json").read_text())
    info["features"]["observation.state"]["shape"] = [7]  # the data has 4 values per frame
    (shape / "meta" / "info.json").write_text(json.dumps(info))
    (root / "file.txt").write_text("not a dataset")
    trunc = write_tiny_checkpoint(root / "ck_trunc", "l1")
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    stats_ck = write_tiny_checkpoint(root / "ck_stats", "l1")
    norm = json.loads((stats_ck / "normalization.json").read_text())
    norm["stats"]["observation.state"]["mean"][1] = "abc"
    (stats_ck / "normalization.json").write_text(json.dumps(norm))
    return root


CASES = [
    (["data", "info", "{root}/ds_shape"], r"info\.json.*observation\.state.*shape"),
    (["train", "cpu_default", "--data", "{root}/ds_shape", *FLAGS], r"observation\.state.*shape"),
    (["data", "info", "{root}/file.txt"], "is a file, not a dataset folder"),
    (["data", "stats", "{root}/file.txt"], "is a file, not a dataset folder"),
    (["train", "cpu_default", "--data", "{root}/file.txt", *FLAGS], "not a dataset folder"),
    (["fast", "fit", "{root}/file.txt", "--out", "{root}/tok"], "not a dataset folder"),
    (["inspect", "{root}/ck_trunc"], "model.safetensors.*truncated or corrupt"),
    (["bench", "latency", "{root}/ck_trunc"], "model.safetensors.*truncated or corrupt"),
    (["export", "quantize", "{root}/ck_trunc", "--out", "{root}/q"], "truncated or corrupt"),
    (["export", "onnx", "{root}/ck_trunc", "--out", "{root}/o"], "truncated or corrupt"),
    (["inspect", "{root}/ck_stats"], r"normalization\.json.*observation\.state.*not a number"),
]


@pytest.mark.parametrize(
    "argv, pattern", CASES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(CASES)]
)
def test_cli_bad_input_is_a_message(bad, capsys, argv, pattern):
    import re

    code = main([a.format(root=bad) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert re.search(pattern, err), err


@pytest.mark.parametrize("name, word", [("ds_shape", "declares shape"), ("file.txt", "is a file")])
def test_doctor_reports_a_bad_dataset_as_a_finding(bad, capsys, name, word):
    """The doctor reports what it cannot load as an error finding (exit 1), not a traceback."""
    code = main(["data", "doctor", str(bad / name)])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    assert word in out and "1 error(s)" in out, out


def test_corrupt_optimizer_state_on_resume_is_a_data_error(tmp_path):
    from vlastack.training import checkpoint as C

    weights = {"w": torch.zeros(4)}
    resume = C.ResumeState(
        step=1,
        optimizer={"state": {0: {"exp_avg": torch.ones(4)}}, "param_groups": [{"params": [0]}]},
        scheduler={},
        rng={},
        sampler={"epoch": 0, "batch_in_epoch": 1},
        extra={},
    )
    ck = C.save_checkpoint(
        tmp_path, 1, weights=weights, config={}, normalization=None, embodiment=None, resume=resume
    )
    opt = ck / "optimizer.safetensors"
    data = bytearray(opt.read_bytes())
    data[10:40] = b"\xff" * 30  # garbage in the JSON header
    opt.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"optimizer\.safetensors.*(truncated or corrupt)"):
        C.load_resume_state(ck)
    opt.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match=r"optimizer\.safetensors"):
        C.load_resume_state(ck)


def _server_cases() -> list[tuple[dict, str]]:
    good = tiny_obs(0)
    no_state = {k: v for k, v in good.items() if k != "observation.state"}  # mixed str/bytes keys
    return [
        ({**good, "observation.state": "0.1 0.2 0.3 0.4"}, r"observation\.state.*4 numbers"),
        ({**good, "observation.state": {"a": 1}}, r"observation\.state.*4 numbers"),
        ({**good, "observation.images.front": "pixels"}, r"front.*image"),
        ({**good, "observation.images.front": {"x": 1}}, r"front.*image"),
        ({**good, "observation.images.front": np.zeros((0, 0, 3), np.uint8)}, r"front.*empty"),
        (
            {**no_state, b"observation.state": np.zeros(4, np.float32)},
            r"missing 'observation\.state'",
        ),
        ({**good, "task": {"text": "x"}}, r"task.*string"),
    ]


def test_server_says_what_was_expected():
    import re

    from websockets.sync.client import connect

    from test_serving_hardening import tiny_policy
    from vlastack.serving.protocol import packb, unpackb
    from vlastack.serving.server import ServerThread

    with ServerThread(tiny_policy()) as srv:
        ws = connect(srv.url, compression=None, max_size=None)
        unpackb(ws.recv(timeout=10))
        for obs, pattern in _server_cases():
            ws.send(packb(obs))
            reply = ws.recv(timeout=10)
            assert isinstance(reply, str) and reply.startswith("bad request:"), reply
            assert re.search(pattern, reply), reply
            ws.send(packb(tiny_obs(1)))
            assert unpackb(ws.recv(timeout=10))["actions"].shape == (4, 4)
        ws.close()
