"""The main job end to end at a tiny scale: every stage must produce its outputs."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("metaworld", reason="the demo needs the [sim] extra (Meta-World)")


TASK = "metaworld/button-press-topdown-v3"
Z_95 = 1.959963984540054


def _wilson(k: int, n: int) -> list[float]:
    p, z2 = k / n, Z_95 * Z_95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _check_outputs(out: Path, saved: dict) -> None:
    """What the demo must produce, recomputed from the files it wrote."""
    from vlastack.data.format import DatasetReader
    from vlastack.demo import EVAL_SEED
    from vlastack.evaluation.rollout import episode_seed

    # 1. the dataset: LeRobot v3 layout, 2 kept expert episodes of the one task
    data = out / "data"
    for rel in (
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        "meta/embodiment.json",
        "meta/episodes/chunk-000/file-000.parquet",
        "data/chunk-000/file-000.parquet",
        "videos/observation.images.corner2/chunk-000/file-000.mp4",
    ):
        assert (data / rel).is_file(), rel
    state = json.loads((data / "meta" / "collect_state.json").read_text())
    reader = DatasetReader(data)
    assert reader.num_episodes == 2 and reader.tasks == ["press the button from the top"]
    assert reader.num_frames == sum(e["frames"] for e in state["episodes"]) > 0
    assert all(e["success"] and e["env"] == TASK for e in state["episodes"])
    t = state["tasks"][TASK]
    expert = t["successes"] / t["next_attempt"]
    assert saved["expert_success_rate"] == pytest.approx(expert)
    assert saved["per_task"][TASK]["expert_success_rate"] == pytest.approx(expert)

    # 2. the checkpoint the headline names is the last one, after the 4 steps
    ckpt = Path(saved["checkpoint"])
    assert ckpt == (out / "run" / "checkpoints" / "last").resolve() and ckpt.name == "step_000004"
    for name in ("model.safetensors", "config.json", "normalization.json", "embodiment.json"):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 4

    # 3. evaluation: held-out seeds, and the success numbers are the episodes' outcomes
    eps = [json.loads(x) for x in (out / "eval" / "episodes.jsonl").read_text().splitlines()]
    assert [(e["task"], e["episode"]) for e in eps] == [(TASK, 0)]
    assert [e["seed"] for e in eps] == [episode_seed(EVAL_SEED, 0, 0, 1)]
    seen = {(e["env"], e["seed"]) for e in state["episodes"]} & {
        (e["task"], e["seed"]) for e in eps
    }
    assert saved["eval_seeds_seen_in_training"] == len(seen) == 0
    k, n = sum(e["status"] == "success" for e in eps), len(eps)
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["overall"]["episodes"] == n and summary["overall"]["successes"] == k
    for rate in (saved["success_rate"], saved["per_task"][TASK]["success_rate"]):
        assert rate == pytest.approx(k / n)
    for ci in (saved["ci95"], saved["per_task"][TASK]["ci95"]):
        assert ci == pytest.approx(_wilson(k, n))
    assert set(saved["per_task"]) == {TASK}
    # one video per task, named after its episode's outcome
    for e in eps:
        outcome = "success" if e["status"] == "success" else "fail"
        assert e["video"] == f"videos/metaworld-button-press-topdown-v3_ep0_{outcome}.mp4"
        assert (out / "eval" / e["video"]).stat().st_size > 0
    assert len(list((out / "eval" / "videos").glob("*.mp4"))) == 1

    # 4. the report embeds that video and names the task
    html = (out / "report.html").read_text()
    assert Path(saved["report"]) == out / "report.html"
    assert "button-press-topdown-v3" in html
    video = (out / "eval" / eps[0]["video"]).read_bytes()
    assert base64.b64encode(video).decode() in html  # inlined: the report is one file


def test_demo_end_to_end_tiny(tmp_path):
    from vlastack.demo import DemoConfig, run_demo

    out = tmp_path / "demo"
    cfg = DemoConfig(
        tasks=[TASK],
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
    assert saved == json.loads(json.dumps(headline, default=str))
    assert saved["tasks"] == [TASK]
    assert headline["train_steps"] == 4
    _check_outputs(out, saved)
    assert not (out / "groups.md").exists()  # one named task: no per-group table (as before)
    # a second run in the same folder works: episodes reused, the first run kept aside; asked
    # for, the per-group table counts this run's episodes
    first_ckpt = (out / "run" / "checkpoints" / "last" / "model.safetensors").read_bytes()
    again = run_demo(dataclasses.replace(cfg, group_table=True))
    groups = json.loads((out / "groups.json").read_text())
    overall = json.loads((out / "eval" / "summary.json").read_text())["overall"]
    assert groups["pooled"]["episodes"] == overall["episodes"] == 1
    assert groups["pooled"]["successes"] == overall["successes"]
    assert set(groups["groups"]) == {"easy"} and again["groups"]["average"] == groups["average"]
    assert (out / "groups.png").stat().st_size > 0
    assert (out / "run.1" / "checkpoints" / "last" / "model.safetensors").read_bytes() == first_ckpt
    assert (out / "eval.1" / "summary.json").exists()
    assert (out / "run" / "checkpoints" / "last" / "model.safetensors").exists()
    info = json.loads((out / "data" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2
