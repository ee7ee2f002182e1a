"""The FULL-size SmolVLA (SmolVLM2-500M shapes, 450M parameters) built by LeRobot 0.6.1 with random
weights loads in vlastack and gives LeRobot's chunk: what a real ``lerobot/smolvla_base``-shaped
checkpoint exercises that the reduced fixture does not (15 query / 5 KV heads, 512x512 images ->
64 tokens per camera, 16 VLM + 16 expert layers, a 50-step chunk).

LeRobot runs in ``.venv-lerobot`` (``tests/compat/make_lerobot_smolvla_full.py``): it builds the
policy from the SmolVLM2-500M config vlastack restates (``smolvlm.KNOWN_VLMS``, checked against
full_keys.json by the fast tests), saves it and records one chunk at 1 thread.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _lerobot_python import lerobot_python
from vlastack.pretrained.lerobot.folder import read_json
from vlastack.pretrained.lerobot.policy import Processors
from vlastack.pretrained.lerobot.smolvla import SmolVLASpec
from vlastack.pretrained.lerobot.smolvla_policy import (
    LeRobotSmolVLAPolicy,
    TokenizerStep,
    load_smolvla_network,
)
from vlastack.pretrained.lerobot.smolvlm import KNOWN_VLMS, SMOLVLM2_500M, vlm_config
from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

SCRIPT = Path(__file__).parent / "compat" / "make_lerobot_smolvla_full.py"


@pytest.mark.slow
def test_full_size_lerobot_smolvla_gives_lerobots_chunk(tmp_path):
    """slow: builds and runs a 450M-parameter model on both sides (minutes on 2 cores)."""
    from transformers import SmolVLMConfig

    py = lerobot_python()
    vlm = tmp_path / "smolvlm2_500m"
    SmolVLMConfig(**KNOWN_VLMS[SMOLVLM2_500M]).save_pretrained(str(vlm))
    out = tmp_path / "pretrained_model"
    res = subprocess.run(
        [py, str(SCRIPT), str(vlm), str(out)], capture_output=True, text=True, timeout=1800
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lerobot_s = json.loads(res.stdout.strip().splitlines()[-1])["lerobot_seconds_per_chunk"]
    torch.set_num_threads(1)  # as LeRobot ran; restored by conftest
    cfg = read_json(out / "config.json")
    spec = SmolVLASpec.from_config(cfg)
    assert (spec.chunk_size, spec.num_vlm_layers, spec.resize) == (50, 16, (512, 512))
    vcfg, _ = vlm_config(str(vlm), out)
    net = load_smolvla_network(out / "model.safetensors", spec, vcfg, "cpu")
    policy = LeRobotSmolVLAPolicy(
        net, spec, Processors({}, None, None), ByteTokenizer(), TokenizerStep(str(vlm), 48)
    )
    io = load_file(str(out / "io.safetensors"))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        chunk = policy.predict_normalized(io, noise=io["noise"])
        times.append(time.perf_counter() - t0)
    err = (chunk - io["chunk"]).abs().max().item()
    print(
        f"full-size SmolVLA: max |vlastack - LeRobot| = {err:.3g}; seconds per chunk at 1 "
        f"thread: vlastack {min(times):.2f}, LeRobot {lerobot_s:.2f}"
    )
    assert chunk.shape == (1, 50, 6)
    assert err <= 1e-4, err
