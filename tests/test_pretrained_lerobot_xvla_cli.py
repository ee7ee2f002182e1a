"""Imported X-VLA folders where a checkpoint goes: the registered ``lerobot_xvla`` format
(``Policy.from_checkpoint``, with the tokenizer from a local folder as a real one loads),
``vlastack inspect``, ``vlastack list formats``, ``vlastack bench latency`` and ``vlastack eval``
in PushT with a PushT-shaped X-VLA folder (the fixture's weights: X-VLA pads the state to
max_state_dim and the action to max_action_dim, and DaViT takes any frame size, so only
config.json's features change)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import _lerobot_cli as L
import _lerobot_golden as G
from _lerobot_golden import raw_obs
from _lerobot_tokenizer import write_byte_tokenizer
from vlastack.cli.main import main
from vlastack.policy import Policy
from vlastack.policy_formats import detect_policy_format

TOKENS = "observation.language.tokens"


@pytest.fixture(autouse=True)
def _one_thread():
    """The goldens' thread count; also keeps these tiny models from oversubscribing a busy
    2-core box (two threads made each chunk ~100x slower there; conftest restores it)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def kind_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "xvla")


@pytest.fixture(scope="module")
def folder(kind_dir: Path, tmp_path_factory) -> Path:
    """The fixture with its tokenizer_name pointing at a tokenizers-built byte tokenizer in
    the folder (it tokenizes as the fixtures' stand-in; README "Tokenization")."""
    dst = tmp_path_factory.mktemp("xvla_cli") / "pretrained_model"
    shutil.copytree(kind_dir / "pretrained_model", dst)
    write_byte_tokenizer(dst / "tokenizer")
    pre = json.loads((dst / "policy_preprocessor.json").read_text())
    for step in pre["steps"]:
        if step["registry_name"] == "tokenizer_processor":
            step["config"]["tokenizer_name"] = "tokenizer"
    (dst / "policy_preprocessor.json").write_text(json.dumps(pre))
    return dst


def test_from_checkpoint_loads_the_folder_as_lerobot_xvla(folder, kind_dir):
    torch.set_num_threads(1)
    fmt = detect_policy_format(folder)
    assert fmt is not None and fmt.name == "lerobot_xvla"
    policy = Policy.from_checkpoint(folder, device="cpu")
    assert type(policy).__name__ == "LeRobotXVLAPolicy"
    golden = G.golden(kind_dir)
    tasks = json.loads((kind_dir / "golden.json").read_text())["observations"]
    for i in G.OBS:
        ids, _ = policy.tokenize([tasks[i]["task"]])
        assert torch.equal(ids, golden[f"obs{i}.preprocessed.{TOKENS}"])
    obs = {**raw_obs(golden, 0), "task": tasks[0]["task"]}
    reply = policy.infer(obs)["actions"]
    pre = policy.preprocess([obs])
    noise = torch.randn((1, 10, 20), generator=torch.Generator().manual_seed(0))
    want = policy.postprocess(policy.predict_normalized(pre, noise=noise))[0].numpy()
    assert reply.shape == (10, 6) and np.allclose(reply, want, rtol=0, atol=1e-6)
    # the recorded noise gives LeRobot's chunk through this loading path too
    chunk = policy.postprocess(policy.predict_normalized(pre, noise=golden["obs0.noise"]))
    assert (
        G.max_abs(chunk, golden["obs0.action_chunk"])
        <= G.tolerance(kind_dir)["action_chunk (dataset units)"]
    )
    assert policy.metadata["format"] == "lerobot_xvla"
    assert policy.metadata["execute_horizon"] == 10 and policy.metadata["language"]


@pytest.mark.skipif(
    not L.OPENPI_PY.exists(),
    reason="the real openpi-client lives in .venv-openpi: python3 -m venv .venv-openpi && "
    ".venv-openpi/bin/pip install openpi-client typing_extensions",
)
def test_serve_xvla_to_the_openpi_client(folder, kind_dir, tmp_path):
    from vlastack.serving.protocol import packb, unpackb
    from vlastack.serving.server import ServerThread

    served = L.serve_policy([str(folder), "--device", "cpu", "--threads", "1"])
    assert type(served).__name__ == "LeRobotXVLAPolicy"
    obs = raw_obs(G.golden(kind_dir), 0)
    sent = [
        {**obs, "prompt": "pick up the red block"},
        {**{f"observation/{k.split('.')[-1]}": v for k, v in obs.items()}, "task": "open it"},
    ]
    (tmp_path / "obs.msgpack").write_bytes(packb(sent))
    with ServerThread(served) as srv:
        proc = L.openpi_client_run(srv.port, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = unpackb((tmp_path / "out.msgpack").read_bytes())
    assert rec["metadata"]["format"] == "lerobot_xvla" and rec["metadata"]["language"]
    replies = [np.asarray(r["ok"]["actions"]) for r in rec["replies"]]
    assert all(a.shape == (10, 6) and np.isfinite(a).all() for a in replies)
    assert not np.allclose(replies[0], replies[1])  # another task and a fresh noise draw


def test_inspect_explains_the_folder(folder, capsys):
    assert main(["inspect", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "format lerobot_xvla" in text and "action_mode auto" in text
    assert "ImageNet mean/std inside the policy" in text
    assert "tokenized by 'tokenizer' (local folder" in text and "domain id 0" in text
    assert "model.vlm.vision_tower" in text and "model.transformer" in text
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["language"]["max_length"] == 64 and info["chunk_length"] == 10


def test_list_formats_names_xvla(capsys):
    assert main(["list", "formats", "--json"]) == 0
    formats = json.loads(capsys.readouterr().out)["formats"]
    assert "X-VLA" in formats["lerobot_xvla"] and "lerobot_smolvla" in formats


def test_bench_latency_times_an_xvla_folder(folder, capsys):
    assert L.bench_latency(folder) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "lerobot_xvla" and res["total"]["p50_ms"] > 0
    stages = {row["stage"]: row["p50_ms"] for row in res["stages"]}
    for name in ("preprocess", "vision", "language", "backbone", "head", "unnormalize"):
        assert stages[name] > 0, name


def test_eval_runs_an_xvla_folder_in_pusht(folder, tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    dst = tmp_path / "pusht_model"
    shutil.copytree(folder, dst)
    L.pusht_config(dst, dst)  # one 96x96 'top' camera, 2-d state and action, 5 steps a chunk
    for name in ("policy_preprocessor", "policy_postprocessor"):
        pipeline = json.loads((dst / f"{name}.json").read_text())
        for step in pipeline["steps"]:
            if "state_file" in step:
                outputs = L.PUSHT_OUTPUTS
                feats = {**L.PUSHT_INPUTS, **outputs} if name == "policy_preprocessor" else outputs
                step["config"]["features"] = feats
        (dst / f"{name}.json").write_text(json.dumps(pipeline))
    out = tmp_path / "res"
    argv = ["eval", str(dst), "--env", "pusht", "--episodes-per-task", "1", "--max-steps", "10"]
    argv += ["--image-size", "96", "--out", str(out), "--threads", "1", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    rec = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert rec["status"] in ("success", "failure") and rec["steps"] == 10
    assert rec["num_chunks"] == 2  # 10 steps / n_action_steps 5


def test_export_lerobot_gives_the_source_files_back(kind_dir, tmp_path):
    """``vlastack export lerobot`` on the unchanged fixture: every file byte for byte (the tied
    ``shared`` embedding is left out again, as safetensors' save_model did), and the export
    loads to the same weights; a changed weight is written and read back."""
    src = kind_dir / "pretrained_model"
    out = tmp_path / "out"
    assert main(["export", "lerobot", str(src), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    for f in src.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer
    from vlastack.pretrained.lerobot.write import write_pretrained
    from vlastack.pretrained.lerobot.xvla_policy import load_lerobot_xvla

    policy = load_lerobot_xvla(out, device="cpu", tokenizer=ByteTokenizer())
    with torch.no_grad():
        policy.network.model.transformer.soft_prompt_hub.weight.add_(0.5)
    again = load_lerobot_xvla(write_pretrained(policy, tmp_path / "tuned"), tokenizer=False)
    a, b = policy.network.state_dict(), again.network.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
