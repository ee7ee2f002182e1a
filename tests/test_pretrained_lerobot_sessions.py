"""Imported LeRobot policies keep one state per client (``new_session()``), and a Diffusion
Policy's observation history advances every control step, as LeRobot's ``select_action``.

* Two clients of one ``vlastack serve`` process interleave their requests; each gets, bit for bit,
  the actions it gets alone from a fresh policy: ACT with temporal ensembling (the ensembler),
  Diffusion (the 2-frame history and the DDPM noise), SmolVLA, pi0 and pi0.5 (the flow noise).
  With request batching each client's rows match too (to the batch's rounding).
* A Diffusion Policy run step by step through the sync runtime (``observe`` on the steps without
  a chunk) gives the actions LeRobot 0.6.1's ``select_action`` loop gives, with torch's global
  generator seeded as vlastack's session generator is (the subprocess runs LeRobot itself);
  without ``observe`` the second chunk differs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import _lerobot_golden as G
from _lerobot_golden import raw_obs
from _lerobot_python import lerobot_python

COMPAT = Path(__file__).with_name("compat")
KINDS = ("act_ensemble", "diffusion", "smolvla", "pi0", "pi05")
STEPS = 3  # requests per client


def diffusion_folder(fixtures_dir: Path, tmp: Path) -> Path:
    """The diffusion fixture with 10 DDPM steps instead of 100 (LeRobot reads the same
    config), so that each chunk takes a tenth of the time."""
    dst = tmp / "diffusion_10"
    if not dst.exists():
        shutil.copytree(G.policy_dir(fixtures_dir, "diffusion") / "pretrained_model", dst)
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(num_inference_steps=10)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # as the goldens were made (conftest restores the count)


def _load(kind: str, fixtures_dir: Path, tmp: Path) -> Any:
    if kind == "act_ensemble":
        from vlastack.pretrained.lerobot.policy import load_lerobot_act

        src = G.policy_dir(fixtures_dir, "act") / "pretrained_model"
        dst = tmp / "act_ensemble"
        shutil.copytree(src, dst)
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(temporal_ensemble_coeff=0.5, n_action_steps=1)
        (dst / "config.json").write_text(json.dumps(cfg))
        return load_lerobot_act(dst, device="cpu")
    folder = G.policy_dir(fixtures_dir, kind) / "pretrained_model"
    if kind == "diffusion":
        from vlastack.pretrained.lerobot.diffusion_policy import load_lerobot_diffusion

        return load_lerobot_diffusion(diffusion_folder(fixtures_dir, tmp), device="cpu")
    if kind == "smolvla":
        from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla
        from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

        return load_lerobot_smolvla(folder, device="cpu", tokenizer=ByteTokenizer())
    from vlastack.pretrained.lerobot.pi0_inputs import ByteTokenizer as PiBytes
    from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

    return load_lerobot_pi0(folder, device="cpu", tokenizer=PiBytes())


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sessions")


@pytest.fixture(scope="module")
def policies(fixtures_dir, tmp_module) -> dict[str, Any]:
    return {k: _load(k, fixtures_dir, tmp_module) for k in KINDS}


@pytest.fixture(scope="module")
def golden(fixtures_dir) -> dict[str, torch.Tensor]:
    return G.golden(G.policy_dir(fixtures_dir, "diffusion"))  # same raw observations for all


def _sequence(golden: dict[str, torch.Tensor], client: int, n: int) -> list[dict[str, Any]]:
    """Client ``client``'s observations: the golden frames with a state that moves each step."""
    out = []
    for k in range(n):
        obs = raw_obs(golden, (k + client) % 3)
        obs["observation.state"] = obs["observation.state"] + np.float32(3.0 * (k + 1) - 7 * client)
        obs["task"] = ["pick up the red block", "open the top drawer"][client]
        out.append(obs)
    return out


def _alone(policy: Any, seq: list[dict[str, Any]]) -> list[np.ndarray]:
    policy.reset()
    return [policy.infer(o)["actions"] for o in seq]


@pytest.mark.parametrize("kind", KINDS)
def test_two_interleaved_clients_each_get_what_they_get_alone(policies, golden, kind):
    from vlastack.serving.client import PolicyClient
    from vlastack.serving.server import ServerThread

    policy = policies[kind]
    seqs = [_sequence(golden, c, STEPS) for c in (0, 1)]
    want = [_alone(policy, s) for s in seqs]
    assert not np.array_equal(want[0][0], want[1][0])
    with ServerThread(policy) as srv:
        clients = [PolicyClient("127.0.0.1", srv.port) for _ in (0, 1)]
        got: list[list[np.ndarray]] = [[], []]
        for k in range(STEPS):  # A0 B0 A1 B1 ...
            for c in (0, 1):
                got[c].append(np.asarray(clients[c].infer(seqs[c][k])["actions"]))
        for cl in clients:
            cl.close()
    for c in (0, 1):
        for k in range(STEPS):
            np.testing.assert_array_equal(got[c][k], want[c][k], err_msg=f"client {c} step {k}")


@pytest.mark.parametrize("kind", ["act_ensemble", "diffusion", "smolvla"])
def test_a_batch_of_sessions_gives_each_row_its_own_state(policies, golden, kind):
    """``infer_batch(obs, sessions=...)`` (the server's request batching): row c of each call
    is client c's action alone, to the batch's rounding."""
    policy = policies[kind]
    seqs = [_sequence(golden, c, STEPS) for c in (0, 1)]
    want = [_alone(policy, s) for s in seqs]
    sessions = [policy.new_session() for _ in (0, 1)]
    for k in range(STEPS):
        rows = policy.infer_batch([seqs[0][k], seqs[1][k]], sessions=sessions)
        for c in (0, 1):
            np.testing.assert_allclose(rows[c]["actions"], want[c][k], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="new_session"):
        policies["diffusion"].infer_batch([seqs[0][0]], sessions=[sessions[0]]) if kind != (
            "diffusion"
        ) else policy.infer_batch([seqs[0][0]], sessions=[policies["smolvla"].new_session()])


def _steps(golden: dict[str, torch.Tensor], n: int) -> list[dict[str, Any]]:
    """``n`` control steps whose states all differ (so that the history's content shows)."""
    out = []
    for k in range(n):
        obs = raw_obs(golden, k % 3)
        obs["observation.state"] = obs["observation.state"] + np.float32(2.5 * k)
        out.append(obs)
    return out


def test_diffusion_step_by_step_matches_lerobot_select_action(
    policies, golden, tmp_path, tmp_module, fixtures_dir
):
    import subprocess

    from vlastack.serving.runtime import SyncRuntime

    py = lerobot_python()
    ddir = G.policy_dir(fixtures_dir, "diffusion")
    tol = G.tolerance(ddir)["action_chunk (dataset units)"]
    steps = _steps(golden, 21)  # chunks at steps 0, 10 and 20 (n_action_steps 10)
    save_file(
        {
            f"step{k}.{key}": torch.from_numpy(np.array(v))  # one copy each
            for k, o in enumerate(steps)
            for key, v in o.items()
        },
        str(tmp_path / "steps.safetensors"),
    )
    job = {
        "folder": str(diffusion_folder(fixtures_dir, tmp_module)),
        "observations": str(tmp_path / "steps.safetensors"),
        "seed": 0,
    }
    (tmp_path / "jobs.json").write_text(json.dumps(job))
    argv = [
        py,
        str(COMPAT / "lerobot_select_action_steps.py"),
        str(tmp_path / "jobs.json"),
        str(tmp_path / "out.json"),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    want = np.asarray(json.loads((tmp_path / "out.json").read_text()))
    assert want.shape == (21, 6)

    policy = policies["diffusion"]
    assert policy.seed == 0 and policy.metadata["diffusion_steps"] == 10
    runtime = SyncRuntime(policy, execute_horizon=policy.metadata["execute_horizon"])
    runtime.reset()
    got = np.stack([runtime.step(o) for o in steps])
    assert runtime.num_inferences == 3
    err = float(np.abs(got - want).max())
    assert err <= tol, err

    class NoObserve:  # the same policy without ``observe``: the history is chunk to chunk
        def infer(self, obs: dict) -> dict:
            return policy.infer(obs)

        def reset(self) -> None:
            policy.reset()

    runtime = SyncRuntime(NoObserve(), execute_horizon=10)
    runtime.reset()
    blind = np.stack([runtime.step(o) for o in steps])
    assert float(np.abs(blind[:10] - want[:10]).max()) <= tol  # the first chunk is the same
    assert float(np.abs(blind[10:] - want[10:]).max()) > 100 * tol
