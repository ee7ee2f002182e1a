"""The HTML report: plots, tables, videos (embedded and linked), manifests, generic suites."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pytest

from vlastack.cli.main import main
from vlastack.errors import ConfigError
from vlastack.evaluation.metrics import EpisodeRecord, summarize
from vlastack.evaluation.report import build_report, load_run, stress_drops
from vlastack.evaluation.rollout import evaluate
from vlastack_test_plugins import fakes


def make_runs(root: Path) -> list[Path]:
    """Two small real evaluations of different fake policies, with one video per task."""
    out = []
    for name, kw in (
        ("chunk8", {"action_horizon": 8}),
        ("noisy", {"noise": 0.3, "latency_s": 0.002}),
    ):
        ck = fakes.write_fake_checkpoint(root / f"ckpt_{name}", **kw)
        evaluate(
            ck,
            "fake/suite",
            episodes_per_task=3,
            workers=0,
            image_size=(24, 24),
            video_episodes_per_task=1,
            out_dir=root / name,
            label=name,
            progress=False,
        )
        out.append(root / name)
    return out


def make_suite_run(root: Path) -> Path:
    """A stress + long-horizon style results folder written from records directly."""
    recs = []
    for cond, succ in (("default", [1, 1, 1, 0]), ("blank_instruction", [1, 0, 0, 0])):
        for ep, s in enumerate(succ):
            recs.append(
                EpisodeRecord(
                    task="fake/chain",
                    episode=ep,
                    seed=ep,
                    condition=cond,
                    status="success" if s else "failure",
                    subtasks_total=5,
                    subtasks_completed=[5, 3, 2, 0][ep] if cond == "default" else ep,
                )
            )
    summary = summarize(recs)
    summary["run"] = {"label": "long-horizon", "kind": "stress", "env": "fake/chain"}
    d = root / "suite"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "episodes.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in recs))
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [*make_runs(root), make_suite_run(root)]


def test_report_has_plots_tables_videos_and_manifests(runs, tmp_path):
    out = build_report(runs, tmp_path / "report.html", videos="embed")
    page = out.read_text()
    assert page.count("<svg") == 4  # success by task, vs latency, stress drops, chain length
    for heading in (
        "Success by task",
        "Success vs latency",
        "Generalization stress",
        "Long-horizon chain length",
    ):
        assert heading in page
    assert page.count("<video") == 6 and page.count("data:video/mp4;base64,") == 6
    assert page.count("<details>") == 3 and "&quot;protocol&quot;" in page
    assert "Per difficulty group" in page and "Per condition" in page
    assert "<script" not in page
    assert not re.search(r"(src|href)=[\"']https?:", page)  # nothing fetched from elsewhere


def test_linked_videos_resolve_relative_to_the_page(runs, tmp_path):
    out = build_report(runs[:1], tmp_path / "sub" / "report.html", videos="link")
    srcs = re.findall(r"<video[^>]* src='([^']+)'", out.read_text())
    assert len(srcs) == 3
    for src in srcs:
        assert not src.startswith("data:")
        assert (out.parent / urllib.parse.unquote(src)).resolve().is_file()


def test_stress_drops_from_conditions_and_from_separate_runs(runs, tmp_path):
    drops = stress_drops([load_run(runs[2])])
    assert drops == [("long-horizon", "blank_instruction", pytest.approx(50.0))]


def test_errors_and_bad_input(runs, tmp_path):
    with pytest.raises(ConfigError, match="no summary.json"):
        build_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="videos"):
        build_report(runs, tmp_path / "r.html", videos="sometimes")


def test_cli_report(runs, tmp_path, capsys):
    rc = main(
        ["report", *map(str, runs[:2]), "--out", str(tmp_path / "r.html"), "--videos", "link"]
    )
    assert rc == 0 and (tmp_path / "r.html").exists()
    assert "report:" in capsys.readouterr().out


def test_overview_lists_every_task_of_a_multi_task_run(runs, tmp_path):
    """Issue 27.7: a run over several tasks shows each task's row in the overview, not only the
    run's headline."""
    page = build_report(runs[:1], tmp_path / "r.html").read_text()
    overview = page[
        page.index("<h2>Overview</h2>") : page.index("<h2>", page.index("<h2>Overview</h2>") + 5)
    ]
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert len(summary["per_task"]) > 1
    for task, agg in summary["per_task"].items():
        assert f"<td>{task}</td>" in overview, task
        assert f"{agg['successes']}/{agg['completed']}" in overview
