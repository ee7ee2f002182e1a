"""The per-difficulty-group table of `vlastack demo`: counts pooled per group, the published
average convention (mean of the groups), the expert column, and the files it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vlastack.envs.metaworld_tasks import DIFFICULTY, MT10
from vlastack.errors import ConfigError
from vlastack.evaluation.groups import (
    PUBLISHED_MT50,
    group_rows,
    group_table,
    table_markdown,
    write_group_table,
)

Z_95 = 1.959963984540054


def _wilson(k: int, n: int) -> list[float]:
    p, z2 = k / n, Z_95 * Z_95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _mt10_counts() -> dict[str, dict[str, int]]:
    # a distinct success count per task so that a task counted in the wrong group shows
    return {
        f"metaworld/{t}": {"successes": (3 * i) % 11, "episodes": 10} for i, t in enumerate(MT10, 1)
    }


def test_groups_pool_counts_per_difficulty_group() -> None:
    counts = _mt10_counts()
    expert = {t: 1.0 - 0.01 * i for i, t in enumerate(counts)}
    table = group_rows(counts, expert)
    # MT10 spans easy (7 tasks), medium (peg-insert-side), hard (push, pick-place); no very hard
    assert {g: r["tasks"] for g, r in table["groups"].items()} == {
        "easy": 7,
        "medium": 1,
        "hard": 2,
    }
    assert table["missing_groups"] == ["very_hard"]
    for g, row in table["groups"].items():
        tasks = [t for t in counts if t.removeprefix("metaworld/") in DIFFICULTY[g]]
        k = sum(counts[t]["successes"] for t in tasks)
        assert (row["successes"], row["episodes"]) == (k, 10 * len(tasks))
        assert row["success_rate"] == pytest.approx(k / (10 * len(tasks)))
        assert row["ci95"] == pytest.approx(_wilson(k, 10 * len(tasks)))
        assert row["expert_success_rate"] == pytest.approx(
            sum(expert[t] for t in tasks) / len(tasks)
        )
    # the average is the mean of the group rates (the published convention), not the pooled rate
    rates = [r["success_rate"] for r in table["groups"].values()]
    assert table["average"] == pytest.approx(sum(rates) / 3)
    k_all = sum(c["successes"] for c in counts.values())
    assert table["pooled"]["success_rate"] == pytest.approx(k_all / 100)
    assert table["average"] != pytest.approx(table["pooled"]["success_rate"])


def test_published_rows_follow_the_mean_of_groups_convention() -> None:
    # guards a mistyped number: every row with all four groups averages to its published average
    full = [p for p in PUBLISHED_MT50 if None not in (p[g] for g in DIFFICULTY)]
    assert {p["name"] for p in full} >= {"SmolVLA-0.45B", "SmolVLA-2.25B", "TinyVLA"}
    for p in full:
        assert sum(p[g] for g in DIFFICULTY) / 4 == pytest.approx(p["average"], abs=0.05), p


def test_non_metaworld_task_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a Meta-World"):
        group_rows({"pusht/pusht": {"successes": 1, "episodes": 2}})


def _fake_demo_folder(out: Path) -> dict[str, dict[str, int]]:
    counts = _mt10_counts()
    (out / "eval").mkdir(parents=True)
    (out / "data" / "meta").mkdir(parents=True)
    (out / "eval" / "summary.json").write_text(json.dumps({"per_task": counts}))
    state = {
        "tasks": {t: {"next_attempt": 4, "successes": 3 if "push" in t else 4} for t in counts}
    }
    (out / "data" / "meta" / "collect_state.json").write_text(json.dumps(state))
    demo = {
        "train_steps": 1234,
        "timings_s": {"collect_s": 100.0, "train_s": 200.0, "eval_s": 300.0},
        "config": {"episodes_per_task": 4, "eval_episodes_per_task": 10, "recipe": "demo",
                   "image_size": 96},
        "machine": {"cpu": "Test CPU", "cores": 2, "loadavg": [1.0, 1.0, 1.0]},
    }  # fmt: skip
    (out / "demo_summary.json").write_text(json.dumps(demo))
    return counts


def test_table_from_a_demo_folder_writes_markdown_json_and_png(tmp_path: Path) -> None:
    counts = _fake_demo_folder(tmp_path)
    table = write_group_table(tmp_path)
    saved = json.loads((tmp_path / "groups.json").read_text())
    assert saved["average"] == pytest.approx(table["average"])
    assert saved["per_task"]["metaworld/push-v3"]["expert_success_rate"] == pytest.approx(0.75)
    assert saved["per_task"]["metaworld/push-v3"]["group"] == "hard"
    assert saved["groups"]["hard"]["expert_success_rate"] == pytest.approx(0.875)  # (3/4 + 1) / 2
    assert saved["groups"]["easy"]["expert_success_rate"] == pytest.approx(1.0)
    assert saved["budget"]["total_s"] == pytest.approx(600.0)
    assert saved["budget"]["train_steps"] == 1234
    assert saved["pooled"]["episodes"] == sum(c["episodes"] for c in counts.values())

    md = (tmp_path / "groups.md").read_text()
    easy = saved["groups"]["easy"]
    lo, hi = easy["ci95"]
    assert f"{100 * easy['success_rate']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]" in md
    assert f"**{100 * table['average']:.1f}**" in md
    assert "not run" in md  # very hard has no MT10 task
    assert "| SmolVLA-0.45B (published, MT50) | 82.5 | 41.8 | 45 | 60 | 57.3 |" in md
    assert "Test CPU, 2 logical cores" in md and "total 600 s" in md

    png = (tmp_path / "groups.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_table_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"summary\.json: missing"):
        group_table(tmp_path)


def test_markdown_label_is_used(tmp_path: Path) -> None:
    _fake_demo_folder(tmp_path)
    assert "**MT10 config A**" in table_markdown(group_table(tmp_path), "MT10 config A")


def test_demo_writes_groups_only_for_suites() -> None:
    from vlastack.demo import DEMO_TASKS, _names_suite

    assert not _names_suite(DEMO_TASKS)  # the default `vlastack demo` is unchanged
    assert _names_suite(["metaworld/mt10"]) and _names_suite(["mt50"])
    assert _names_suite(["metaworld/easy"])


def test_cli_groups_only_rewrites_the_table(tmp_path: Path) -> None:
    from vlastack.cli.main import main

    _fake_demo_folder(tmp_path)
    assert main(["demo", "--groups-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "groups.md").is_file() and (tmp_path / "groups.png").is_file()
