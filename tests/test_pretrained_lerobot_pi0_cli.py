"""The commands that take a checkpoint accept LeRobot pi0 / pi0.5 folders: ``vlastack serve``
(the real openpi client, prompt sent as openpi does), ``inspect``, ``bench latency`` and
``eval`` (PushT). The fixtures' byte-level tokenizer stand-in is chosen with the documented
``VLASTACK_LEROBOT_TOKENIZER=bytes``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import _lerobot_cli as L
import _lerobot_golden as G
from vlastack.cli.main import main
from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

TASKS = ("pick up the red block", "put the green cup in the sink", "open the top drawer")


@pytest.fixture(autouse=True)
def byte_tokenizer(monkeypatch):
    monkeypatch.setenv("VLASTACK_LEROBOT_TOKENIZER", "bytes")


def _folder(fixtures_dir: Path, kind: str) -> Path:
    return G.policy_dir(fixtures_dir, kind) / "pretrained_model"


def test_serve_pi05_folder_to_the_openpi_client(fixtures_dir, tmp_path):
    """Openpi-flat keys and ``prompt``; each reply equals the in-process chunk of a policy
    loaded the same way and reset the way the server resets on connect."""
    if not L.OPENPI_PY.exists():
        pytest.skip(f"the openpi client venv is missing at {L.OPENPI_PY} (make venv-openpi)")
    from vlastack.serving.protocol import packb, unpackb
    from vlastack.serving.server import ServerThread

    folder = _folder(fixtures_dir, "pi05")
    golden = G.golden(folder.parent)
    served = L.serve_policy([str(folder), "--device", "cpu", "--threads", "1"])
    assert type(served).__name__ == "LeRobotPi0Policy"
    sent = []
    for i in G.OBS:
        obs = G.raw_obs(golden, i)
        flat = {f"observation/{c}": obs[f"observation.images.{c}"] for c in ("top", "wrist")}
        sent.append({**flat, "observation/state": obs["observation.state"], "prompt": TASKS[i]})
    (tmp_path / "obs.msgpack").write_bytes(packb(sent))
    with ServerThread(served) as srv:
        proc = L.openpi_client_run(srv.port, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = unpackb((tmp_path / "out.msgpack").read_bytes())
    assert rec["metadata"]["format"] == "lerobot_pi05" and rec["metadata"]["language"]
    local = load_lerobot_pi0(folder, device="cpu")
    local.reset()
    for i, reply in zip(G.OBS, rec["replies"], strict=True):
        want = local.infer({**G.raw_obs(golden, i), "task": TASKS[i]})["actions"]
        np.testing.assert_allclose(reply["ok"]["actions"], want, rtol=0, atol=1e-5)


def test_inspect_pi0_folder(fixtures_dir, capsys):
    assert main(["inspect", str(_folder(fixtures_dir, "pi0")), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "lerobot_pi0" and info["chunk_length"] == 10
    assert info["config"]["paligemma_variant"] == "dummy"
    assert info["vectors"][0]["normalization"] == "MEAN_STD"
    assert "resized with centred padding to [56, 56]" in info["cameras"][0]["resized"]
    assert "task" in info["client"]["send"] and info["language"]["max_length"] == 48
    assert info["language"]["tokenizer"] == "google/paligemma-3b-pt-224"
    assert info["parameters"]["total"] == 443_104


def test_bench_latency_times_a_pi0_folder(fixtures_dir, capsys):
    rc = L.bench_latency(_folder(fixtures_dir, "pi0"))
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "lerobot_pi0"


def write_pusht_pi0_folder(src: Path, dst: Path) -> Path:
    """The pi0 fixture reshaped for PushT (one 96x96 'top' camera, 2-d state and action):
    same config and processors with those features, random weights saved under LeRobot's keys
    (lm_heads included), MEAN_STD stats of PushT's pixel range."""
    from safetensors.torch import save_file

    from vlastack.pretrained.lerobot.pi0 import Pi0Network, Pi0Spec
    from vlastack.pretrained.lerobot.pi0_weights import expected_shapes

    dst.mkdir(parents=True)
    cfg = L.pusht_config(src, dst)
    inputs, outputs = L.PUSHT_INPUTS, L.PUSHT_OUTPUTS
    spec = Pi0Spec.from_config(cfg)
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in Pi0Network(spec).state_dict().items()}
    for k, shape in expected_shapes(spec).items():
        sd.setdefault(k, torch.randn(shape) * 0.02)
    save_file(sd, str(dst / "model.safetensors"))
    stats = L.pusht_stats()
    pre = json.loads((src / "policy_preprocessor.json").read_text())
    post = json.loads((src / "policy_postprocessor.json").read_text())
    for pipeline, features, name in ((pre, {**inputs, **outputs}, "pre"), (post, outputs, "post")):
        for step in pipeline["steps"]:
            if "state_file" in step:
                step["config"]["features"] = features
                step["state_file"] = f"{name}_stats.safetensors"
                save_file(stats, str(dst / step["state_file"]))
    (dst / "policy_preprocessor.json").write_text(json.dumps(pre))
    (dst / "policy_postprocessor.json").write_text(json.dumps(post))
    return dst


def test_eval_runs_a_pi0_folder_in_pusht(fixtures_dir, tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    folder = write_pusht_pi0_folder(_folder(fixtures_dir, "pi0"), tmp_path / "pretrained_model")
    out = tmp_path / "res"
    rc = L.eval_pusht(folder, out)
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert rec["status"] in ("success", "failure") and rec["steps"] == 10
    assert rec["num_chunks"] == 2  # 10 steps / n_action_steps 5


def test_pi05_hub_id_with_its_tokenizer_from_the_local_cache(fixtures_dir, tmp_path, monkeypatch):
    """The user's path: ``lerobot/pi05_base`` and PaliGemma's tokenizer (the processor's
    ``tokenizer_name``) both read from the local Hugging Face cache, nothing else configured.
    The checkpoint is the pi05 fixture and the tokenizer a tiny word-level one standing in for
    PaliGemma's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vlastack.evaluation.loading import load_policy

    monkeypatch.delenv("VLASTACK_LEROBOT_TOKENIZER")
    cache = tmp_path / "hf_cache"

    def cache_repo(repo_id: str, src: Path) -> None:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(src, repo / "snapshots" / "c0ffee")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("c0ffee")

    cache_repo("lerobot/pi05_base", _folder(fixtures_dir, "pi05"))
    core = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1, "Task": 7}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok_dir = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>").save_pretrained(tok_dir)
    cache_repo("google/paligemma-3b-pt-224", tok_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # 'lerobot/pi05_base' is no local folder here
    policy = load_policy("lerobot/pi05_base")
    assert "paligemma-3b-pt-224" in policy.metadata["tokenizer"]
    golden = G.golden(_folder(fixtures_dir, "pi05").parent)
    obs = {**G.raw_obs(golden, 0), "task": TASKS[0]}
    inputs = policy.preprocess([obs])
    assert inputs.batch["observation.language.tokens"][0, 0].item() == 7  # "Task"
    assert policy.infer(obs)["actions"].shape == (10, 6)
    assert main(["inspect", "lerobot/pi05_base"]) == 0
