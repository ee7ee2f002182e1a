"""A real ``Policy`` (tiny checkpoint, MiniLM instruction encoder) on the observation spellings
real clients send: openpi/LIBERO flat keys (``observation/<cam>``, ``observation/state``,
``prompt``), openpi ALOHA nested dicts (``images: {cam: CHW uint8}``, ``state``), LeRobot keys.

Every spelling must give the actions ``Policy.infer`` gives on the LeRobot-keyed HWC observation:
in-process, through vlastack's server queried by the real openpi client, and through the ALOHA
remote runner of ``vlastack eval CKPT --env aloha/...``. The checkpoint's model reads the images,
the state and the instruction (checked below), so a parsing branch that is lost, or an image
transposed the wrong way, changes the actions or raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _export_tiny import tiny_stats, write_tiny_checkpoint
from _lerobot_cli import OPENPI_PY, openpi_client_run
from vlastack.policy import ObservationError, Policy

CAMS = ("cam_high", "wrist")
TOL = dict(rtol=1e-6, atol=1e-6)  # same weights, same float32 ops: equal up to rounding


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny l1 VLA (deterministic head: no sampling noise) reading 2 cameras, a 4-d state
    and the instruction (MiniLM)."""
    root = tmp_path_factory.mktemp("obs_ckpt")
    return write_tiny_checkpoint(root, "l1", language="minilm", cameras=list(CAMS), seed=3)


@pytest.fixture(scope="module")
def policy(ckpt: Path) -> Policy:
    return Policy.from_checkpoint(ckpt)


def canonical(seed: int = 0) -> dict[str, Any]:
    """LeRobot keys, uint8 HWC images (not square, not the model's 16x16), float32 state."""
    rng = np.random.default_rng(seed)
    obs: dict[str, Any] = {
        f"observation.images.{c}": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for c in CAMS
    }
    obs["observation.state"] = rng.normal(0, 1, 4).astype(np.float32)
    obs["task"] = ["pick up the red cup", "open the top drawer"][seed % 2]
    return obs


def _img(obs: dict[str, Any], cam: str, chw: bool = False) -> np.ndarray:
    img = obs[f"observation.images.{cam}"]
    return np.ascontiguousarray(img.transpose(2, 0, 1)) if chw else img


def spell(obs: dict[str, Any], style: str) -> dict[str, Any]:
    """The same observation as a given client sends it."""
    state, task = obs["observation.state"], obs["task"]
    if style == "lerobot":
        return dict(obs)
    if style == "openpi_flat":  # openpi LIBERO/DROID examples: flat keys, float64 state
        out: dict[str, Any] = {f"observation/{c}": _img(obs, c) for c in CAMS}
        return {**out, "observation/state": state.astype(np.float64), "prompt": task}
    if style == "aloha_nested":  # openpi ALOHA examples: CHW uint8 images in a nested dict
        images = {c: _img(obs, c, chw=True) for c in CAMS}
        return {"images": images, "state": state, "prompt": task}
    if style == "images_flat":  # the nested spelling flattened into 'images/<cam>' keys
        out = {f"images/{c}": _img(obs, c) for c in CAMS}
        return {**out, "state": state, "prompt": task}
    if style == "bare_cameras":  # camera names as top-level keys
        out = {c: _img(obs, c) for c in CAMS}
        return {**out, "state": state, "prompt": task}
    if style == "prompt_bytes":
        return {**spell(obs, "openpi_flat"), "prompt": task.encode()}
    if style == "prompt_ndarray":  # a one-element numpy str array, as batching clients send it
        return {**spell(obs, "openpi_flat"), "prompt": np.array([task])}
    raise AssertionError(style)


def infer(policy: Policy, obs: dict[str, Any]) -> np.ndarray:
    policy.reset()
    return np.asarray(policy.infer(obs)["actions"])


# ---- in-process ------------------------------------------------------------------------
def test_the_model_reads_images_state_and_instruction(policy: Policy) -> None:
    """What makes the spelling tests below bite: each input changes the actions."""
    obs = canonical(0)
    ref = infer(policy, obs)
    assert ref.shape == (4, 4) and np.isfinite(ref).all()
    changed = {
        "task": {**obs, "task": "close the gripper"},
        "no task": {k: v for k, v in obs.items() if k != "task"},  # default prompt ""
        "state": {**obs, "observation.state": obs["observation.state"] + 0.5},
        "image H/W swapped": {
            **obs,
            "observation.images.cam_high": np.ascontiguousarray(
                _img(obs, "cam_high").transpose(1, 0, 2)
            ),
        },
        "wrist image": {**obs, "observation.images.wrist": 255 - _img(obs, "wrist")},
    }
    for name, other in changed.items():
        assert np.abs(infer(policy, other) - ref).max() > 1e-3, name


@pytest.mark.parametrize(
    "style",
    [
        "openpi_flat",
        "aloha_nested",
        "images_flat",
        "bare_cameras",
        "prompt_bytes",
        "prompt_ndarray",
    ],
)
def test_every_key_spelling_gives_the_canonical_actions(policy: Policy, style: str) -> None:
    for seed in (0, 1):
        obs = canonical(seed)
        np.testing.assert_allclose(infer(policy, spell(obs, style)), infer(policy, obs), **TOL)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_chw_image_gives_the_actions_of_its_hwc_transpose(policy: Policy, dtype: str) -> None:
    obs = canonical(1)
    if dtype == "float32":  # float pixels in [0, 1]
        for c in CAMS:
            obs[f"observation.images.{c}"] = obs[f"observation.images.{c}"].astype(np.float32) / 255
    chw = {**obs, **{f"observation.images.{c}": _img(obs, c, chw=True) for c in CAMS}}
    np.testing.assert_allclose(infer(policy, chw), infer(policy, obs), **TOL)
    # one camera CHW, the other HWC: each image is read in its own layout
    mixed = {**obs, "observation.images.wrist": _img(obs, "wrist", chw=True)}
    np.testing.assert_allclose(infer(policy, mixed), infer(policy, obs), **TOL)


@pytest.mark.parametrize("style", ["lerobot", "openpi_flat", "aloha_nested"])
def test_missing_camera_or_state_names_the_key(policy: Policy, style: str) -> None:
    obs = spell(canonical(0), style)
    no_wrist = {
        k: v for k, v in obs.items() if k not in ("observation.images.wrist", "observation/wrist")
    }
    if style == "aloha_nested":
        no_wrist["images"] = {"cam_high": obs["images"]["cam_high"]}
    with pytest.raises(
        ObservationError, match=r"missing camera 'wrist'.*'observation\.images\.wrist'"
    ):
        policy.infer(no_wrist)
    state_keys = ("observation.state", "observation/state", "state")
    no_state = {k: v for k, v in obs.items() if k not in state_keys}
    with pytest.raises(ObservationError, match=r"missing 'observation\.state' \(float, 4 values\)"):
        policy.infer(no_state)
    with pytest.raises(ObservationError, match=r"'observation\.state' has 3 values, expected 4"):
        policy.infer({**obs, **{k: np.zeros(3) for k in state_keys if k in obs}})


# ---- served, queried by the real openpi client -----------------------------------------
@pytest.mark.skipif(
    not OPENPI_PY.exists(),
    reason="the real openpi-client lives in .venv-openpi: python3 -m venv .venv-openpi && "
    ".venv-openpi/bin/pip install openpi-client typing_extensions",
)
def test_openpi_client_gets_the_in_process_actions_for_every_spelling(
    ckpt: Path, policy: Policy, tmp_path: Path
) -> None:
    from vlastack.serving.protocol import packb, unpackb
    from vlastack.serving.server import ServerThread

    styles = ["openpi_flat", "aloha_nested", "lerobot"]
    cases = [(style, seed) for seed in (0, 1) for style in styles]
    sent = [spell(canonical(seed), style) for style, seed in cases]
    missing = {k: v for k, v in sent[0].items() if k != "observation/wrist"}
    (tmp_path / "obs.msgpack").write_bytes(packb([*sent, missing]))
    served = Policy.from_checkpoint(ckpt)
    with ServerThread(served) as srv:
        proc = openpi_client_run(srv.port, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = unpackb((tmp_path / "out.msgpack").read_bytes())
    assert rec["metadata"] == policy.metadata
    assert rec["metadata"]["observation_keys"] == [
        "observation.images.cam_high",
        "observation.images.wrist",
        "observation.state",
        "task",
    ]
    *replies, err = rec["replies"]
    for (style, seed), reply in zip(cases, replies):
        assert "ok" in reply, (style, reply)
        expected = infer(policy, canonical(seed))
        np.testing.assert_allclose(reply["ok"]["actions"], expected, **TOL, err_msg=style)
    assert "missing camera 'wrist'" in err["error"] and "Traceback" not in err["error"]


# ---- `vlastack eval CKPT --env aloha/...`: the remote runner with a real Policy ---------
def _aloha_venv_python() -> Path:
    from vlastack.envs.remote import runner

    return runner.venv_python(runner.default_venv("aloha"))


@pytest.mark.skipif(
    not _aloha_venv_python().exists(),
    reason="the ALOHA simulator venv is absent; create it with "
    "`python -m vlastack.envs.remote.runner --make-venv aloha` (about 1 min, 650 MB)",
)
def test_eval_checkpoint_on_aloha_acts_as_the_in_process_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI loads the checkpoint, serves it, and the ALOHA client (own venv) sends nested CHW
    224x224 images, a 14-d state and the instruction; the executed actions are the rows of the
    chunks Policy.infer gives on the same observations spelled with LeRobot keys, HWC."""
    from vlastack.cli.main import main

    stats = tiny_stats(14)
    stats["action"] = {"mean": [0.0] * 14, "std": [0.05] * 14, "min": [-1] * 14, "max": [1] * 14}
    ck = write_tiny_checkpoint(
        tmp_path / "ck",
        "l1",
        stats=stats,
        seed=5,
        language="minilm",
        cameras=["cam_high"],
        state_dim=14,
        action_dim=14,
    )
    seen: list[dict[str, Any]] = []
    real_infer = Policy.infer

    def recording_infer(self: Policy, obs: dict[str, Any], **kw: Any) -> dict[str, Any]:
        seen.append(
            {
                "images": {k: np.array(v) for k, v in obs["images"].items()},
                "state": np.array(obs["state"]),
                "prompt": obs["prompt"],
                "keys": sorted(obs),
            }
        )
        return real_infer(self, obs, **kw)  # kw: the server's per-connection session

    monkeypatch.setattr(Policy, "infer", recording_infer)
    out = tmp_path / "results"
    argv = ["eval", str(ck), "--env", "aloha/transfer_cube", "--episodes-per-task", "1"]
    argv += ["--max-steps", "8", "--execute-horizon", "4", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    monkeypatch.undo()

    assert len(seen) == 2 and seen[0]["keys"] == ["images", "prompt", "state"]
    img = seen[0]["images"]["cam_high"]
    assert img.shape == (3, 224, 224) and img.dtype == np.uint8
    executed = np.load(next((out / "actions").glob("*.npy")))
    assert executed.shape == (8, 14)
    local = Policy.from_checkpoint(ck)
    for k, obs in enumerate(seen):
        lerobot = {
            "observation.images.cam_high": np.ascontiguousarray(
                obs["images"]["cam_high"].transpose(1, 2, 0)
            ),
            "observation.state": obs["state"],
            "task": obs["prompt"],
        }
        expected = infer(local, lerobot)[:4]
        np.testing.assert_allclose(executed[4 * k : 4 * k + 4], expected, **TOL)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_read_only_frame_is_copied_not_aliased(dtype) -> None:
    """Frames the server unpacks are read-only views of the request bytes: the image tensor is a
    copy (no aliasing, no torch warning about non-writable arrays)."""
    import warnings

    from vlastack.policy import image_to_chw_float

    frame = (np.arange(3 * 4 * 5) % 7).reshape(3, 4, 5).astype(dtype)
    frame.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = image_to_chw_float(frame, "cam", (4, 5))
    scale = 255.0 if dtype == np.uint8 else 1.0
    np.testing.assert_allclose(t.numpy(), frame.astype(np.float32) / scale)
    t.add_(1.0)  # the tensor owns its memory: the frame stays as it was
    np.testing.assert_array_equal(frame, (np.arange(3 * 4 * 5) % 7).reshape(3, 4, 5).astype(dtype))
