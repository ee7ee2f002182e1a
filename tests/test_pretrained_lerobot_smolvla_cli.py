"""Imported SmolVLA folders in the commands: ``vlastack bench latency``, ``vlastack serve`` to the
real openpi client (instruction sent as ``prompt``), and ``vlastack eval`` in PushT with a
PushT-shaped SmolVLA folder (the fixture's weights: SmolVLA resizes every camera and pads state
and action to 32, so only config.json's features and the stats change)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import _lerobot_cli as L
import _lerobot_golden as G
from _lerobot_golden import raw_obs
from _lerobot_tokenizer import write_byte_tokenizer
from vlastack.cli.main import main


@pytest.fixture(scope="module")
def kind_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "smolvla")


@pytest.fixture(scope="module")
def root(kind_dir: Path, tmp_path_factory) -> Path:
    """{pretrained_model, smolvlm2_tiny_config (config.json + a tokenizers-built tokenizer)}."""
    root = tmp_path_factory.mktemp("smolvla_cli")
    shutil.copytree(kind_dir / "pretrained_model", root / "pretrained_model")
    vlm = root / "smolvlm2_tiny_config"
    vlm.mkdir()
    shutil.copy(kind_dir / "smolvlm2_tiny_config" / "config.json", vlm / "config.json")
    write_byte_tokenizer(vlm)
    return root


def test_bench_latency_times_a_smolvla_folder(root, capsys):
    rc = L.bench_latency(root / "pretrained_model")
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "lerobot_smolvla" and res["total"]["p50_ms"] > 0


@pytest.mark.skipif(
    not L.OPENPI_PY.exists(),
    reason="the real openpi-client lives in .venv-openpi: python3 -m venv .venv-openpi && "
    ".venv-openpi/bin/pip install openpi-client typing_extensions",
)
def test_serve_smolvla_to_the_openpi_client(root, kind_dir, tmp_path):
    from vlastack.serving.protocol import packb, unpackb
    from vlastack.serving.server import ServerThread

    served = L.serve_policy([str(root / "pretrained_model"), "--device", "cpu", "--threads", "1"])
    assert type(served).__name__ == "LeRobotSmolVLAPolicy"
    golden = G.golden(kind_dir)
    obs = raw_obs(golden, 0)
    sent = [
        {**obs, "prompt": "pick up the red block"},
        {**{f"observation/{k.split('.')[-1]}": v for k, v in obs.items()}, "prompt": "open it"},
    ]
    (tmp_path / "obs.msgpack").write_bytes(packb(sent))
    with ServerThread(served) as srv:
        proc = L.openpi_client_run(srv.port, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = unpackb((tmp_path / "out.msgpack").read_bytes())
    assert rec["metadata"]["format"] == "lerobot_smolvla" and rec["metadata"]["language"]
    for reply in rec["replies"]:
        assert "ok" in reply, reply
        actions = np.asarray(reply["ok"]["actions"])
        assert actions.shape == (10, 6) and np.isfinite(actions).all()


def write_pusht_smolvla_folder(root: Path, dst: Path) -> Path:
    """The fixture with PushT's features (one 96x96 'top' camera, 2-d state and action),
    n_action_steps 5, and stats in PushT's pixel units."""
    shutil.copytree(root / "pretrained_model", dst)
    L.pusht_config(dst, dst)
    inputs, outputs = L.PUSHT_INPUTS, L.PUSHT_OUTPUTS
    stats = L.pusht_stats()
    for name, keep in (
        ("policy_preprocessor", lambda k: True),
        ("policy_postprocessor", lambda k: k.startswith("action")),
    ):
        pipeline = json.loads((dst / f"{name}.json").read_text())
        for step in pipeline["steps"]:
            if "state_file" in step:
                feats = {**inputs, **outputs} if name == "policy_preprocessor" else outputs
                step["config"]["features"] = feats
                save_file(
                    {k: v for k, v in stats.items() if keep(k)}, str(dst / step["state_file"])
                )
        (dst / f"{name}.json").write_text(json.dumps(pipeline))
    return dst


def test_eval_runs_a_smolvla_folder_in_pusht(root, tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    folder = write_pusht_smolvla_folder(root, root / "pusht_model")
    out = tmp_path / "res"
    rc = L.eval_pusht(folder, out)
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert rec["status"] in ("success", "failure") and rec["steps"] == 10
    assert rec["num_chunks"] == 2  # 10 steps / n_action_steps 5


# ---- a hub id whose VLM is a hub id too, both from the local Hugging Face cache -------------
def _cache_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copyfile(src, snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snap.name)


def test_hub_ids_for_the_policy_and_its_vlm_from_the_local_cache(
    root, kind_dir, tmp_path, monkeypatch, capsys
):
    """As ``lerobot/smolvla_base`` is used: config.json names the VLM by hub id, and that repo
    in the cache gives the architecture config and the tokenizer."""
    from vlastack.evaluation.rollout import load_policy

    policy_src = tmp_path / "policy"
    shutil.copytree(root / "pretrained_model", policy_src)
    cfg = json.loads((policy_src / "config.json").read_text())
    cfg["vlm_model_name"] = "someone/tiny-smolvlm"
    (policy_src / "config.json").write_text(json.dumps(cfg))
    pre = json.loads((policy_src / "policy_preprocessor.json").read_text())
    for step in pre["steps"]:
        if step["registry_name"] == "tokenizer_processor":
            step["config"]["tokenizer_name"] = "someone/tiny-smolvlm"
    (policy_src / "policy_preprocessor.json").write_text(json.dumps(pre))
    cache = tmp_path / "hf_cache"
    _cache_repo(cache, "lerobot/smolvla_tiny", {p.name: p for p in policy_src.iterdir()})
    vlm = root / "smolvlm2_tiny_config"
    _cache_repo(cache, "someone/tiny-smolvlm", {p.name: p for p in vlm.iterdir()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)

    torch.set_num_threads(1)
    golden = G.golden(kind_dir)
    policy = load_policy("lerobot/smolvla_tiny")
    assert type(policy).__name__ == "LeRobotSmolVLAPolicy"
    assert "local Hugging Face cache" in policy.metadata["vlm_config_source"]
    pre_t = policy.preprocess([{**raw_obs(golden, 0), "task": "pick up the red block"}])
    chunk = policy.postprocess(policy.predict_normalized(pre_t, noise=golden["obs0.noise"]))
    err = G.max_abs(chunk, golden["obs0.action_chunk"])
    assert err <= G.tolerance(kind_dir)["action_chunk (dataset units)"], err
    assert main(["inspect", "lerobot/smolvla_tiny"]) == 0
    out = capsys.readouterr().out
    assert "tokenized by 'someone/tiny-smolvlm' (local Hugging Face cache" in out
