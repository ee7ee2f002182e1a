"""LeRobot ``pretrained_model`` folders through vlastack's commands and client spellings.

``vlastack serve`` loads the ACT fixture folder and the real openpi client (``.venv-openpi``) gets
the in-process actions, under LeRobot's keys and openpi's flat / ALOHA nested spellings;
``vlastack inspect`` explains both fixtures; ``vlastack bench latency`` times one; observations
spelled as vlastack's ``Policy`` accepts them give the actions of LeRobot's keys; the metadata
carries a real EmbodimentSpec. LeRobot itself is never imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import _lerobot_cli as L
import _lerobot_golden as G
from vlastack.cli.main import build_parser, main
from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError
from vlastack.evaluation.loading import load_policy, policy_embodiment
from vlastack.pretrained.lerobot.diffusion_policy import load_lerobot_diffusion
from vlastack.pretrained.lerobot.policy import LeRobotACTPolicy, load_lerobot_act

CAMS = ("top", "wrist")
SAME = dict(rtol=0, atol=1e-6)  # same weights, same float32 ops


def _folder(fixtures_dir: Path, kind: str) -> Path:
    d = fixtures_dir / "lerobot_policies" / kind / "pretrained_model"
    if not d.exists():
        pytest.skip(f"LeRobot {kind} fixture not found at {d}")
    return d


@pytest.fixture(scope="module")
def act_folder(fixtures_dir: Path) -> Path:
    return _folder(fixtures_dir, "act")


@pytest.fixture(scope="module")
def diffusion_folder(fixtures_dir: Path) -> Path:
    return _folder(fixtures_dir, "diffusion")


@pytest.fixture(scope="module")
def act(act_folder: Path) -> LeRobotACTPolicy:
    return load_lerobot_act(act_folder, device="cpu")


def raw_obs(folder: Path, i: int) -> dict[str, Any]:
    """Golden observation ``i`` of the fixture whose pretrained_model is ``folder``."""
    return G.raw_obs(G.golden(folder.parent), i)


def spell(obs: dict[str, Any], style: str) -> dict[str, Any]:
    """The LeRobot-keyed observation as another client sends it."""
    imgs = {c: obs[f"observation.images.{c}"] for c in CAMS}
    state = obs["observation.state"]
    if style == "lerobot":
        return dict(obs)
    if style == "openpi_flat":  # LIBERO/DROID examples: flat keys, float64 state, prompt
        out: dict[str, Any] = {f"observation/{c}": v for c, v in imgs.items()}
        return {**out, "observation/state": state.astype(np.float64), "prompt": "pick"}
    if style == "aloha_nested":  # ALOHA examples: CHW uint8 frames in a nested dict
        chw = {c: np.ascontiguousarray(v.transpose(2, 0, 1)) for c, v in imgs.items()}
        return {"images": chw, "state": state, "prompt": "pick"}
    if style == "images_flat":
        return {**{f"images/{c}": v for c, v in imgs.items()}, "state": state}
    if style == "bare":
        return {**imgs, "state": state}
    raise AssertionError(style)


STYLES = ["openpi_flat", "aloha_nested", "images_flat", "bare"]


# ---- observation spellings --------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
def test_act_accepts_every_client_spelling(act, act_folder, style):
    obs = raw_obs(act_folder, 0)
    want = act.infer(obs)["actions"]
    np.testing.assert_allclose(act.infer(spell(obs, style))["actions"], want, **SAME)


def test_diffusion_accepts_the_openpi_spellings(diffusion_folder):
    policy = load_lerobot_diffusion(diffusion_folder, device="cpu")
    obs = raw_obs(diffusion_folder, 0)
    policy.reset()
    want = policy.infer(obs)["actions"]
    for style in ("openpi_flat", "aloha_nested"):
        policy.reset()
        np.testing.assert_allclose(policy.infer(spell(obs, style))["actions"], want, **SAME)


def test_a_missing_camera_names_the_spellings(act, act_folder):
    obs = spell(raw_obs(act_folder, 0), "openpi_flat")
    del obs["observation/wrist"]
    with pytest.raises(
        ConfigError, match=r"no 'observation.images.wrist' \(nor 'observation/wrist'"
    ):
        act.infer(obs)


def test_a_frame_of_another_size_is_an_error_not_a_resize(act, act_folder):
    obs = spell(raw_obs(act_folder, 0), "openpi_flat")
    obs["observation/top"] = np.zeros((96, 128, 3), np.uint8)
    with pytest.raises(
        ConfigError, match=r"observation.images.top: shape \(96, 128, 3\).*not resized"
    ):
        act.infer(obs)


def test_metadata_embodiment_is_an_embodiment_spec(act, diffusion_folder):
    emb = policy_embodiment(act)
    assert isinstance(emb, EmbodimentSpec)
    assert [(c.name, c.height, c.width, c.channels) for c in emb.cameras] == [
        ("top", 48, 64, 3),
        ("wrist", 48, 64, 3),
    ]
    assert (emb.state.dim, emb.action.dim, emb.action.kind) == (6, 6, "absolute")
    assert emb.control_hz == 30.0 and "default" in emb.extra["control_hz_source"]
    diff = load_policy(diffusion_folder)
    assert policy_embodiment(diff).cameras == emb.cameras  # type: ignore[union-attr]


def test_control_hz_comes_from_train_config_when_there(act_folder, tmp_path):
    import shutil

    folder = tmp_path / "pretrained_model"
    shutil.copytree(act_folder, folder)
    (folder / "train_config.json").write_text(json.dumps({"env": {"fps": 50}}))
    emb = load_lerobot_act(folder, device="cpu").metadata["embodiment"]
    assert emb["control_hz"] == 50.0
    assert emb["extra"]["control_hz_source"] == "train_config.json env.fps"


# ---- vlastack serve + the real openpi client ----------------------------------------------
@pytest.mark.skipif(
    not L.OPENPI_PY.exists(),
    reason="the real openpi-client lives in .venv-openpi: python3 -m venv .venv-openpi && "
    ".venv-openpi/bin/pip install openpi-client typing_extensions",
)
def test_serve_act_folder_to_the_openpi_client(act, act_folder, tmp_path):
    from vlastack.serving.protocol import packb, unpackb
    from vlastack.serving.server import ServerThread

    served = L.serve_policy(
        [str(act_folder), "--device", "cpu", "--threads", "1"]
    )  # what `vlastack serve FOLDER` serves
    assert type(served).__name__ == "LeRobotACTPolicy"
    cases = [(i, style) for i in (0, 1, 2) for style in ("lerobot", "openpi_flat", "aloha_nested")]
    sent = [spell(raw_obs(act_folder, i), style) for i, style in cases]
    (tmp_path / "obs.msgpack").write_bytes(packb(sent))
    with ServerThread(served) as srv:
        proc = L.openpi_client_run(srv.port, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = unpackb((tmp_path / "out.msgpack").read_bytes())
    meta = rec["metadata"]
    assert meta["format"] == "lerobot_act" and meta["action_horizon"] == 10
    assert meta["embodiment"]["state"]["names"] == [f"state_{i}" for i in range(6)]
    for (i, style), reply in zip(cases, rec["replies"]):
        assert "ok" in reply, (style, reply)
        want = act.infer(raw_obs(act_folder, i))["actions"]
        np.testing.assert_allclose(reply["ok"]["actions"], want, **SAME, err_msg=style)


def test_serve_refuses_cuda_graphs_for_a_lerobot_folder(act_folder):
    from vlastack.cli.serve import _load_policy

    args = build_parser().parse_args(["serve", str(act_folder), "--cuda-graphs"])
    with pytest.raises(ConfigError, match="drop --cuda-graphs"):
        _load_policy(args)


# ---- vlastack inspect ---------------------------------------------------------------------
def test_inspect_act_folder(act_folder, capsys):
    assert main(["inspect", str(act_folder)]) == 0
    out = capsys.readouterr().out
    for fact in (
        "format lerobot_act",
        "chunk length 10",
        "execute_horizon 10 (n_action_steps)",
        "observation.images.top: image 3x48x64",
        "observation.state: state float (6,) raw units, normalized MEAN_STD",
        "actions: float32 (10, 6), absolute",
        "std + 1e-08",
        "'observation/top'",
        "'images/wrist'",
        "reply: {'actions': float32 (10, 6) dataset units}",
        "parameters: 229,550",
        "lerobot_act @ 30 Hz",
    ):
        assert fact in out, fact
    assert "mean  2.1 -95.3 88.7 65.2 -1.4 12.8" in out  # the state stats


def test_inspect_diffusion_folder_json(diffusion_folder, capsys):
    assert main(["inspect", str(diffusion_folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "lerobot_diffusion" and info["policy_type"] == "diffusion"
    assert (info["chunk_length"], info["execute_horizon"], info["obs_horizon"]) == (10, 10, 2)
    assert [c["shape"] for c in info["cameras"]] == [[3, 48, 64], [3, 48, 64]]
    state = info["vectors"][0]
    assert state["key"] == "observation.state" and state["normalization"] == "MIN_MAX"
    assert sorted(state["stats"]) == ["max", "min"]
    assert info["actions"][0]["shape"] == [6]
    assert info["config"]["horizon"] == 16
    assert EmbodimentSpec.from_dict(info["embodiment"]).action.dim == 6
    assert main(["inspect", str(diffusion_folder), "--embodiment", "arm"]) != 0
    assert "drop --embodiment" in capsys.readouterr().err


# ---- vlastack bench latency ---------------------------------------------------------------
def test_bench_latency_times_a_lerobot_folder(act_folder, capsys):
    rc = L.bench_latency(act_folder, iters=3)
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "lerobot_act" and res["stages"] == []
    assert res["total"]["p50_ms"] > 0 and "N/A" in res["stages_note"]


# ---- hub ids from the local Hugging Face cache ---------------------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(act_folder, tmp_path, monkeypatch) -> Path:
    """A Hugging Face hub cache holding ``lerobot/act_tiny`` (the ACT fixture) in the hub's
    layout: files under blobs/, linked from snapshots/<commit>/, refs/main naming the commit."""
    import shutil

    cache = tmp_path / "hf_cache"
    repo = cache / "models--lerobot--act_tiny"
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, f in enumerate(sorted(act_folder.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # 'lerobot/act_tiny' is no local folder here
    return cache


def test_hub_id_loads_from_the_local_cache(hub_cache, act, act_folder):
    from vlastack.pretrained.lerobot.hub import _from_layout, resolve_hub_id

    assert resolve_hub_id("lerobot/act_tiny") == hub_cache / "models--lerobot--act_tiny" / (
        "snapshots/" + COMMIT
    )
    assert resolve_hub_id("lerobot/act_tiny@main") == resolve_hub_id("lerobot/act_tiny")
    # the layout reader used without huggingface_hub finds the same folder
    assert _from_layout("lerobot/act_tiny", "main", hub_cache) == resolve_hub_id("lerobot/act_tiny")
    policy = load_policy("lerobot/act_tiny")
    assert isinstance(policy, LeRobotACTPolicy)
    obs = raw_obs(act_folder, 2)
    np.testing.assert_allclose(policy.infer(obs)["actions"], act.infer(obs)["actions"], **SAME)


def test_hub_id_in_serve_and_inspect(hub_cache, capsys):

    assert isinstance(
        L.serve_policy(["lerobot/act_tiny", "--device", "cpu", "--threads", "1"]), LeRobotACTPolicy
    )
    assert main(["inspect", "lerobot/act_tiny"]) == 0
    out = capsys.readouterr().out
    assert "format lerobot_act" in out and COMMIT in out


def test_a_hub_id_not_in_the_cache_names_it_and_the_download(hub_cache):
    from vlastack.pretrained.lerobot.hub import _from_layout

    with pytest.raises(ConfigError) as info:
        load_policy("lerobot/act_missing")
    msg = str(info.value)
    assert "'lerobot/act_missing'" in msg and "hf download lerobot/act_missing" in msg
    assert str(hub_cache) in msg
    with pytest.raises(ConfigError, match="hf download lerobot/act_missing"):
        _from_layout("lerobot/act_missing", "main", hub_cache)


# ---- vlastack eval ------------------------------------------------------------------------
def write_pusht_act_folder(act_folder: Path, dst: Path) -> Path:
    """A LeRobot ACT folder shaped for PushT (one 96x96 'top' camera, 2-d state and action):
    the fixture's config with those features, random weights saved by the vlastack network
    (same keys as LeRobot's), processor JSON and stats in LeRobot's layout."""
    from safetensors.torch import save_file

    from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec

    dst.mkdir(parents=True)
    cfg = L.pusht_config(act_folder, dst)
    inputs, outputs = L.PUSHT_INPUTS, L.PUSHT_OUTPUTS
    torch.manual_seed(0)
    net = ACTNetwork(ACTSpec.from_config(cfg))
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, str(dst / "model.safetensors")
    )
    stats = {
        "observation.images.top.mean": torch.full((3, 1, 1), 0.5),
        "observation.images.top.std": torch.full((3, 1, 1), 0.25),
        **L.pusht_stats(),
    }
    norm_map = {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    pre_stats = "policy_preprocessor_step_3_normalizer_processor.safetensors"
    post_stats = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    save_file(stats, str(dst / pre_stats))
    save_file({k: v for k, v in stats.items() if k.startswith("action")}, str(dst / post_stats))
    norm = {"eps": 1e-8, "features": {**inputs, **outputs}, "norm_map": norm_map}
    pre = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        {"registry_name": "normalizer_processor", "config": norm, "state_file": pre_stats},
    ]
    post = [
        {
            "registry_name": "unnormalizer_processor",
            "config": {**norm, "features": outputs},
            "state_file": post_stats,
        },
        {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
    ]
    (dst / "policy_preprocessor.json").write_text(json.dumps({"steps": pre}))
    (dst / "policy_postprocessor.json").write_text(json.dumps({"steps": post}))
    return dst


def test_eval_runs_a_lerobot_folder_in_pusht(act_folder, tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    folder = write_pusht_act_folder(act_folder, tmp_path / "pretrained_model")
    out = tmp_path / "res"
    rc = L.eval_pusht(folder, out)
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["latency"]["p50_ms"] > 0
    episodes = (out / "episodes.jsonl").read_text().splitlines()
    rec = json.loads(episodes[0])
    assert rec["status"] in ("success", "failure") and rec["steps"] == 10
    assert rec["num_chunks"] == 2  # 10 steps / n_action_steps 5
