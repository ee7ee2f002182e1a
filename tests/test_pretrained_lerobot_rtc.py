"""Real-time chunking for imported flow policies (SmolVLA, pi0, pi0.5): ``infer_guided`` runs
``functional.rtc``'s guided Euler sampler over the imported network's velocity.

* Nothing committed (L = 0), or guidance switched off (max weight 0, or all weights 0 with the
  vector-Jacobian products still computed), gives ``infer``'s chunk bit for bit.
* With a committed prefix the first (frozen) actions follow it: 25 degrees away unguided,
  within about 0.4 guided (max guidance weight 5), through each policy's postprocessor
  inverse.
* ``vlastack robot FOLDER --strategy rtc`` drives PushT with a PushT-shaped SmolVLA folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import _lerobot_golden as G
from _lerobot_golden import raw_obs

KINDS = ("smolvla", "pi0", "pi05")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # conftest restores the count


def _load(kind: str, fixtures_dir: Path) -> Any:
    folder = G.policy_dir(fixtures_dir, kind) / "pretrained_model"
    if kind == "smolvla":
        from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla
        from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

        return load_lerobot_smolvla(folder, device="cpu", tokenizer=ByteTokenizer())
    from vlastack.pretrained.lerobot.pi0_inputs import ByteTokenizer as PiBytes
    from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

    return load_lerobot_pi0(folder, device="cpu", tokenizer=PiBytes())


@pytest.fixture(scope="module")
def policies(fixtures_dir) -> dict[str, Any]:
    return {k: _load(k, fixtures_dir) for k in KINDS}


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return G.golden(G.policy_dir(fixtures_dir, "smolvla"))


def _obs(golden, i: int) -> dict[str, Any]:
    return {**raw_obs(golden, i), "task": "pick up the red block"}


def _fresh(policy: Any, call) -> np.ndarray:
    policy.reset()
    return np.asarray(call()["actions"])


@pytest.mark.parametrize("kind", KINDS)
def test_without_guidance_it_is_plain_sampling_bit_exact(policies, golden, kind):
    policy = policies[kind]
    obs = _obs(golden, 0)
    plain = _fresh(policy, lambda: policy.infer(obs))
    prev = _fresh(policy, lambda: policy.infer(_obs(golden, 1)))[:6]
    none = _fresh(policy, lambda: policy.infer_guided(obs, np.zeros((0, prev.shape[1])), 0))
    np.testing.assert_array_equal(none, plain)
    # the guided sampler itself (autograd on), guidance weight 0
    off = _fresh(policy, lambda: policy.infer_guided(obs, prev, 2, max_guidance_weight=0.0))
    np.testing.assert_array_equal(off, plain)
    # all prefix weights 0 ('zeros' schedule, delay 0): the VJPs run and add exactly nothing
    zero_w = _fresh(policy, lambda: policy.infer_guided(obs, prev, 0, schedule="zeros"))
    np.testing.assert_array_equal(zero_w, plain)


@pytest.mark.parametrize("kind", KINDS)
def test_a_committed_prefix_is_followed(policies, golden, kind):
    policy = policies[kind]
    obs = _obs(golden, 0)
    plain = _fresh(policy, lambda: policy.infer(obs))
    # another observation's chunk, 25 dataset units (degrees) away: the random-weight fixtures
    # give nearly the same chunk for every observation, too close to show guidance
    prev = _fresh(policy, lambda: policy.infer(_obs(golden, 2)))[:6] + 25.0
    d = 3
    guided = _fresh(policy, lambda: policy.infer_guided(obs, prev, d, max_guidance_weight=5.0))
    assert guided.shape == plain.shape and np.isfinite(guided).all()
    err_plain = float(np.abs(plain[:d] - prev[:d]).mean())
    err_guided = float(np.abs(guided[:d] - prev[:d]).mean())
    assert err_guided < 0.05 * err_plain, (err_guided, err_plain)  # measured 0.01-0.015
    with pytest.raises(Exception, match=r"prev_actions must have shape \(L, 6\)"):
        policy.infer_guided(obs, np.zeros((3, 4)), 1)


def test_rtc_runtime_takes_an_imported_flow_policy(policies, golden):
    from vlastack.serving.runtime import make_runtime

    policy = policies["smolvla"]
    runtime = make_runtime("rtc", policy, threshold=0.5, initial_delay_ticks=2)
    try:
        runtime.reset()
        actions = [runtime.step(_obs(golden, k % 3)) for k in range(14)]
    finally:
        runtime.close()
    assert np.isfinite(np.stack(actions)).all() and runtime.num_inferences >= 2


def test_robot_cli_runs_smolvla_with_rtc_in_pusht(fixtures_dir, tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    import shutil

    from _lerobot_tokenizer import write_byte_tokenizer
    from test_pretrained_lerobot_smolvla_cli import write_pusht_smolvla_folder
    from vlastack.cli.main import main

    kind_dir = G.policy_dir(fixtures_dir, "smolvla")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(kind_dir / "pretrained_model", root / "pretrained_model")
    vlm = root / "smolvlm2_tiny_config"
    vlm.mkdir()
    shutil.copy(kind_dir / "smolvlm2_tiny_config" / "config.json", vlm / "config.json")
    write_byte_tokenizer(vlm)
    folder = write_pusht_smolvla_folder(root, root / "pusht_model")
    argv = ["robot", str(folder), "--env", "pusht", "--strategy", "rtc", "--max-ticks", "12"]
    rc = main([*argv, "--image-size", "96", "96", "--device", "cpu", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    lines = out.out.strip().splitlines()
    total = json.loads(lines[-1])
    assert total["ticks"] > 0 and total["violations"] == 0
    episode = json.loads(next(x for x in lines if x.startswith("episode 0: "))[11:])
    assert episode["chunks"] >= 2  # at least one guided request after the first chunk
