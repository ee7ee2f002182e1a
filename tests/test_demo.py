"""The main job end to end at a tiny scale: every stage must produce its outputs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("metaworld", reason="the demo needs the [sim] extra (Meta-World)")


def test_demo_end_to_end_tiny(tmp_path):
    from vlastack.demo import DemoConfig, run_demo

    out = tmp_path / "demo"
    cfg = DemoConfig(
        tasks=["metaworld/button-press-topdown-v3"],
        episodes_per_task=2,
        eval_episodes_per_task=1,
        train_minutes=2.0,
        steps=4,
        batch_size=8,
        image_size=64,
        workers=1,
        out=str(out),
        videos_per_task=1,
        max_steps=30,
        overrides=["--val_fraction=0.4", "--log=none"],
        progress=False,
    )
    headline = run_demo(cfg)
    # 1. data in the LeRobot v3 layout, 2. a loadable checkpoint, 3. results, 4. the report
    info = json.loads((out / "data" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2
    assert (out / "run" / "checkpoints" / "last" / "model.safetensors").exists()
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["overall"]["episodes"] == 1
    assert list((out / "eval" / "videos").glob("*.mp4"))
    html = (out / "report.html").read_text()
    assert "<video" in html and "<svg" in html
    saved = json.loads((out / "demo_summary.json").read_text())
    assert saved["tasks"] == ["metaworld/button-press-topdown-v3"]
    assert headline["train_steps"] == 4
    assert saved["expert_success_rate"] is not None
    # held-out: evaluation seeds are not among the collected ones
    assert saved["eval_seeds_seen_in_training"] == 0
    collected = json.loads((out / "data" / "meta" / "collect_state.json").read_text())["episodes"]
    assert {e["seed"] for e in collected}.isdisjoint({100000})
    # a second run in the same folder works: episodes reused, the first run kept aside
    first_ckpt = (out / "run" / "checkpoints" / "last" / "model.safetensors").read_bytes()
    run_demo(cfg)
    assert (out / "run.1" / "checkpoints" / "last" / "model.safetensors").read_bytes() == first_ckpt
    assert (out / "eval.1" / "summary.json").exists()
    assert (out / "run" / "checkpoints" / "last" / "model.safetensors").exists()
    info = json.loads((out / "data" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2
