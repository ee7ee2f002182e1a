"""``vlastack bench latency`` on imported SmolVLA and pi0 folders gives per-stage rows
(preprocess, vision, language, backbone = the VLM prefill, head = the denoising steps,
unnormalize) through the same ``profiling.stage`` timers native policies use; ACT and
Diffusion still say their stages are N/A (tests/test_pretrained_lerobot_cli.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import _lerobot_golden as G
from vlastack.profiling import profile_policy

STAGES = {"preprocess", "vision", "language", "backbone", "head", "unnormalize", "other"}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # conftest restores the count


@pytest.mark.parametrize("kind", ["smolvla", "pi0"])
def test_imported_flow_policies_record_their_stages(fixtures_dir, kind):
    from test_pretrained_lerobot_rtc import _load

    policy = _load(kind, fixtures_dir)
    res = profile_policy(policy, policy.example_observation(0), iters=2, warmup=1)
    rows = {r["stage"]: r for r in res["stages"]}
    assert set(rows) == STAGES, sorted(rows)
    for name in STAGES - {"other"}:
        assert rows[name]["mean_ms"] > 0, name
    # the stages do not overlap: together with "other" they are the total
    total = sum(r["mean_ms"] for r in res["stages"])
    assert total == pytest.approx(res["total"]["mean_ms"], rel=1e-6, abs=1e-6)


def test_bench_latency_cli_prints_smolvla_stages(fixtures_dir, tmp_path, capsys):
    import json

    import _lerobot_cli as L
    from _lerobot_tokenizer import write_byte_tokenizer

    kind_dir = G.policy_dir(fixtures_dir, "smolvla")
    shutil.copytree(kind_dir / "pretrained_model", tmp_path / "pretrained_model")
    vlm = tmp_path / "smolvlm2_tiny_config"
    vlm.mkdir()
    shutil.copy(kind_dir / "smolvlm2_tiny_config" / "config.json", vlm / "config.json")
    write_byte_tokenizer(vlm)
    assert L.bench_latency(Path(tmp_path / "pretrained_model")) == 0
    res = json.loads(capsys.readouterr().out)
    assert "stages_note" not in res
    assert {r["stage"] for r in res["stages"]} == STAGES
