"""evaluate() end to end with a real (tiny, random) Policy checkpoint in Meta-World.

A randomly initialised VLA will not succeed; the point is the real path: Policy.from_checkpoint
in a worker, the Sawyer embodiment check, 128×128 rendering, executed chunks, a decodable video.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("metaworld", reason="Meta-World is not installed (pip install 'vlastack[sim]')")
pytestmark = pytest.mark.sim


def _checkpoint(root, action_dim=4, camera="corner2"):
    from _export_tiny import tiny_stats
    from vlastack.data.normalization import Normalizer
    from vlastack.envs.metaworld import embodiment
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import save_checkpoint

    cfg = VLAConfig(
        action_dim=action_dim,
        action_horizon=8,
        obs_horizon=1,
        state_dim=4,
        cameras=[camera],
        image_size=(32, 32),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "resnet_blocks": 1},
    )
    emb = embodiment(camera, (128, 128))
    if action_dim != 4:
        emb.action.names = [f"a{i}" for i in range(action_dim)]
        emb.action.units = emb.action.low = emb.action.high = None
        emb.action.gripper_index = None
    stats = tiny_stats(4)
    stats["action"] = {k: (v * 2)[:action_dim] for k, v in tiny_stats(4)["action"].items()}
    norm = Normalizer(stats, {"observation.state": "mean_std", "action": "mean_std"})
    return save_checkpoint(
        root,
        1,
        weights=build_vla(cfg).state_dict(),
        config={"model": cfg.to_dict(), "train": {"seed": 0}},
        normalization=norm.to_dict(),
        embodiment=emb,
    )


def test_real_policy_in_metaworld(tmp_path):
    import av

    from vlastack.evaluation.rollout import evaluate

    ckpt = _checkpoint(tmp_path / "ckpt")
    res = evaluate(
        ckpt,
        "metaworld/reach-v3",
        episodes_per_task=2,
        workers=1,
        max_steps=20,
        execute_horizon=4,
        video_episodes_per_task=1,
        out_dir=tmp_path / "res",
        progress=False,
    )
    recs = res.records
    assert [r.status for r in recs] != ["error", "error"], recs[0].error
    assert all(r.status in ("success", "failure") for r in recs)
    assert all(r.steps == 20 or r.status == "success" for r in recs)
    assert recs[0].num_chunks == 5 and len(recs[0].latencies_ms) == 5  # 20 steps / 4 executed
    assert recs[0].initial_state_sha != recs[1].initial_state_sha  # seeds change the layout
    assert res.summary["overall"]["latency"]["p50_ms"] > 0
    m = json.loads((tmp_path / "res" / "manifest.json").read_text())
    assert m["versions"]["metaworld"] and m["versions"]["mujoco"]
    assert any(k.endswith(".safetensors") for k in m["checkpoint"]["files"])
    with av.open(str(tmp_path / "res" / recs[0].video)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.frames == recs[0].steps + 1


def test_real_policy_of_another_robot_is_refused(tmp_path):
    from vlastack.errors import ConfigError
    from vlastack.evaluation.rollout import evaluate

    ckpt = _checkpoint(tmp_path / "ckpt7", action_dim=7)
    with pytest.raises(ConfigError, match=r"action dim 7 vs 4.*--action-remap pad"):
        evaluate(
            ckpt, "metaworld/reach-v3", episodes_per_task=1, workers=0, max_steps=5, progress=False
        )
