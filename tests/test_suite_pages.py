"""The suites' results pages: Wilson cells, seed spread and differences on known counts, and each
suite's page writer (section.md cells, PNG plots) on small hand-made tables."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vlastack.experiments.page import (
    SuccessCell,
    aggregate_runs,
    difference_interval,
    seed_spread,
    spread_text,
    success_cell,
    success_text,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def _table_rows(md: str) -> list[list[str]]:
    """The first markdown table's body rows, cells stripped."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    body = [ln for ln in lines[2:]]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in body]


def test_wilson_cell_and_seed_spread_on_known_counts():
    cell = success_cell([(5, 10), (7, 10), (9, 10)])
    assert (cell.successes, cell.n) == (21, 30)
    assert cell.rate == pytest.approx(0.7)
    # Wilson 95%, p = 0.7, n = 30: (0.5212, 0.8334) (closed form, z = 1.95996)
    lo, hi = cell.ci95
    assert lo == pytest.approx(0.52125, abs=1e-4) and hi == pytest.approx(0.83335, abs=1e-4)
    # 0/10: lower bound 0, upper z²/(n + z²)
    zero = success_cell([(0, 10)])
    z2 = 1.959963984540054**2
    assert zero.ci95[0] == 0.0 and zero.ci95[1] == pytest.approx(z2 / (10 + z2))
    sp = seed_spread(cell.per_seed)
    assert sp["seeds"] == 3 and sp["mean"] == pytest.approx(0.7)
    assert sp["std"] == pytest.approx(0.2)  # sample std of 0.5, 0.7, 0.9
    assert (sp["min"], sp["max"]) == (pytest.approx(0.5), pytest.approx(0.9))
    assert seed_spread([0.4])["std"] is None  # one seed: no spread to report
    assert success_text(cell) == "70.0 [52.1, 83.3] (21/30)"
    assert spread_text(cell.per_seed) == "± 20.0 (50.0–90.0, 3 seeds)"
    with pytest.raises(ValueError, match="within 0..10"):
        success_cell([(11, 10)])


def test_newcombe_difference_matches_the_published_example():
    # Newcombe (1998), Stat Med 17:873, Table II example (a): 56/70 − 48/80, method 10
    d, lo, hi = difference_interval(success_cell([(56, 70)]), success_cell([(48, 80)]))  # type: ignore[misc]
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    assert difference_interval(SuccessCell(0, 0), success_cell([(1, 2)])) is None


def test_aggregate_runs_pools_seeds_and_averages_metrics():
    runs = [
        {"head": "l1", "successes": 3, "episodes": 10, "train_s": 10.0, "jerk": float("nan")},
        {"head": "l1", "successes": 5, "episodes": 10, "train_s": 20.0, "jerk": 2.0},
        {"head": "fast", "successes": 0, "episodes": 10, "train_s": None, "jerk": None},
    ]
    rows = aggregate_runs(runs, "head", ["l1", "fast"], ("train_s", "jerk"))
    assert rows[0]["success"]["successes"] == 8 and rows[0]["success"]["n"] == 20
    assert rows[0]["success"]["per_seed"] == [0.3, 0.5]
    assert rows[0]["train_s"] == 15.0 and rows[0]["jerk"] == 2.0  # NaN skipped
    assert rows[1]["train_s"] is None and rows[1]["success"]["success_rate"] == 0.0


def _runs(key: str, names: list[str], **metrics: float) -> list[dict]:
    out = []
    for i, name in enumerate(names):
        for seed, succ in enumerate([i + 1, i + 2, i + 3]):
            out.append(
                {key: name, "train_seed": seed, "successes": succ, "episodes": 10, **metrics}
            )
    return out


def test_heads_page(tmp_path):
    from vlastack.experiments.head_to_head import DEFAULT_HEADS, HEAD_METRICS, write_heads_page

    heads = list(DEFAULT_HEADS)
    assert {"l1", "act", "diffusion", "diffusion_unet", "flow_matching", "bins", "fast"} <= set(
        heads
    )
    m = {k: 1.0 for k in HEAD_METRICS}
    table = {
        "env": "metaworld/mt10",
        "tasks": ["metaworld/reach-v3"],
        "recipe": "demo",
        "data": "d",
        "budget": {"steps": 100, "max_minutes": None},
        "train_seeds": [0, 1, 2],
        "episodes_per_task": 10,
        "rows": aggregate_runs(_runs("head", heads, **m), "head", heads, HEAD_METRICS),
    }
    write_heads_page(tmp_path, table)
    md = (tmp_path / "section.md").read_text()
    rows = _table_rows(md)
    assert [r[0] for r in rows] == heads
    # l1: seeds 1, 2, 3 of 10 -> 6/30; Wilson [9.5, 37.3]; spread ± 10.0 (10.0–30.0)
    assert rows[0][1] == "20.0 [9.5, 37.3] (6/30)"
    assert rows[0][2] == "± 10.0 (10.0–30.0, 3 seeds)"
    assert "```\n" in md and "Machine:" in md and "UTC" in md
    assert _is_png(tmp_path / "heads_success.png") and _is_png(tmp_path / "heads_latency.png")
    assert "heads_success.png" in md


def test_backbone_page(tmp_path):
    from vlastack.experiments.backbone import CONDITIONS, METRICS, write_backbone_page

    conds = list(CONDITIONS)
    table = {
        "env": "metaworld/mt10",
        "tasks": ["a", "b"],
        "recipe": "demo",
        "vision": "mobilenet_v2",
        "language": "minilm",
        "data": "d",
        "budget": {"steps": 10, "max_minutes": None},
        "lora_rank": 8,
        "train_seeds": [0, 1, 2],
        "episodes_per_task": 10,
        "rows": aggregate_runs(
            _runs(
                "condition",
                conds,
                train_s=12.0,
                train_mem_est_mb=80.0,
                train_peak_rss_mb=900.0,
                params_trainable=2e6,
            ),
            "condition",
            conds,
            METRICS,
        ),
    }
    write_backbone_page(tmp_path, table)
    md = (tmp_path / "section.md").read_text()
    rows = _table_rows(md)
    assert [r[0] for r in rows] == conds
    assert rows[3][1] == "50.0 [33.2, 66.8] (15/30)"  # scratch: 4+5+6 of 30
    assert rows[0][3:7] == ["12", "80", "900", "2.00M"]
    assert "MiniLM" in md and _is_png(tmp_path / "backbone_success.png")


def test_stress_page_drop_with_interval(tmp_path):
    from vlastack.experiments.perturbation_stress import write_stress_page

    table = {
        "env": "metaworld/mt10",
        "checkpoints": ["a", "b"],
        "episodes_per_task": 10,
        "descriptions": {"lighting_dark": "dim lights"},
        "rows": [
            {"condition": "default", "success": success_cell([(8, 10), (9, 10)]).to_dict()},
            {"condition": "lighting_dark", "success": success_cell([(4, 10), (6, 10)]).to_dict()},
        ],
    }
    write_stress_page(tmp_path, table)
    rows = _table_rows((tmp_path / "section.md").read_text())
    assert rows[0][0] == "default" and rows[0][4] == "-"
    d, lo, hi = difference_interval(success_cell([(17, 20)]), success_cell([(10, 20)]))  # type: ignore[misc]
    assert rows[1][4] == f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    assert rows[1][5] == "± 7.1 (30.0–40.0, 2 seeds)"  # per-seed drops 0.4 and 0.3
    assert _is_png(tmp_path / "stress_success.png")


def test_transfer_page(tmp_path):
    from vlastack.experiments.embodiment_transfer import TARGET_EMBODIMENT, write_transfer_page

    names = ["native", "zero_shot", "finetuned_k5", "finetuned_k20"]
    summary = {
        "source_env": "metaworld/reach-v3",
        "target_env": "sawyer7/reach-v3",
        "source_embodiment": "Sawyer 4-d",
        "target_embodiment": TARGET_EMBODIMENT,
        "recipe": "demo",
        "train_seeds": [0, 1, 2],
        "budget": {"source_steps": 10, "finetune_steps": 5},
        "finetune_episodes": [5, 20],
        "episodes_per_task": 10,
        "rows": aggregate_runs(_runs("run", names), "run", names, ()),
    }
    write_transfer_page(tmp_path, summary)
    md = (tmp_path / "section.md").read_text()
    rows = _table_rows(md)
    assert [r[0] for r in rows] == names and rows[0][4] == "-"
    assert rows[1][4].startswith("-10.0 [")  # native 6/30 vs zero-shot 9/30
    assert "7-d action" in md and _is_png(tmp_path / "transfer_success.png")


def test_chain_page_pools_vla_checkpoints(tmp_path):
    from vlastack.experiments.long_horizon import write_chain_page

    saved = {
        "env": "chain/reach-v3",
        "num_subtasks": 10,
        "steps_per_subtask": 150,
        "between_subtasks": "pushed",
        "seeds": [0, 1],
        "checkpoints": ["a", "b"],
        "results": {
            "vla_0": {"chain_lengths": [0, 2]},
            "vla_1": {"chain_lengths": [10, 4]},
            "modular": {"chain_lengths": [10, 10]},
        },
    }
    write_chain_page(tmp_path, saved)
    rows = _table_rows((tmp_path / "section.md").read_text())
    assert [r[0] for r in rows] == ["VLA", "modular"]
    vla = rows[0]
    assert vla[1] == "2" and vla[2] == "4.00"  # (0 + 2 + 10 + 4) / 4
    assert vla[3] == "± 4.24 (1.00–7.00, 2 seeds)"  # per-checkpoint means 1 and 7
    assert vla[4] == success_text(success_cell([(0, 2), (1, 2)]))  # >= 5 subtasks
    assert vla[5] == success_text(success_cell([(0, 2), (1, 2)]))  # complete
    assert rows[1][5] == "100.0 [34.2, 100.0] (2/2)"
    assert _is_png(tmp_path / "chain_length.png")


def test_runtime_page(tmp_path):
    from vlastack.experiments.realtime import write_runtime_page

    rows = []
    for pol in ("l1", "flow"):
        for d in (0.0, 200.0):
            for s in ("sync", "async") + (("rtc",) if pol == "flow" else ()):
                rows.append(
                    {
                        "policy": pol,
                        "delay_ms": d,
                        "strategy": s,
                        "label": s,
                        "success": success_cell([(7 if d == 0 else 3, 10)]).to_dict(),
                        "missed_ticks": 0.0 if d == 0 or s != "sync" else 12.5,
                        "boundary_jump": 0.1,
                        "within_chunk_jump": math.nan,
                    }
                )
    table = {
        "env": "metaworld/reach-v3",
        "tasks": ["metaworld/reach-v3"],
        "policies": {"l1": ["a"], "flow": ["b"]},
        "delays_ms": [0.0, 200.0],
        "control_hz": 20.0,
        "strategies": ["sync", "async", "rtc"],
        "episodes_per_task": 10,
        "max_ticks": 100,
        "rows": rows,
    }
    write_runtime_page(tmp_path, table)
    md_rows = _table_rows((tmp_path / "section.md").read_text())
    assert len(md_rows) == len(rows)
    sync200 = next(r for r in md_rows if r[0] == "l1" and r[1] == "200" and r[2] == "sync")
    assert sync200[3] == "30.0 [10.8, 60.3] (3/10)" and sync200[5] == "12.5" and sync200[7] == "-"
    for name in ("success", "missed"):
        for pol in ("l1", "flow"):
            assert _is_png(tmp_path / f"runtime_{name}_{pol}.png")


def test_seed_list_parsing_names_the_fix():
    from vlastack.errors import ConfigError
    from vlastack.experiments.prepare import parse_seeds

    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds(3) == [3]
    for bad in ("0,0", "a,b", ""):
        with pytest.raises(ConfigError, match="e.g. 0,1,2"):
            parse_seeds(bad)


def test_backbone_conditions_and_conv_lora_merge():
    import torch
    from torch import nn

    from vlastack.experiments.backbone import condition_settings
    from vlastack.recipes import get_recipe
    from vlastack.training.adapters import apply_lora, merged_copy

    demo = get_recipe("demo").model
    assert condition_settings("frozen", demo)[0]["freeze_vision"] is True
    assert condition_settings("finetuned", demo)[0]["freeze_vision"] is False
    model, overrides = condition_settings("lora", demo)
    assert model["freeze_vision"] is True and "--lora.rank=8" in overrides
    scratch = condition_settings("scratch", demo)[0]
    assert scratch["vision_kwargs"] == {**demo.vision_kwargs, "pretrained": False}

    # LoRA reaches a CNN encoder's ordinary convs (not depthwise ones) and merges exactly
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("vision", nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8)))
    net.add_module("head", nn.Linear(8, 2))
    wrapped = apply_lora(net, 4, 8.0, r"vision\..*")
    assert wrapped == ["vision.0"]
    for n, p in net.named_parameters():
        if "lora_B" in n:
            nn.init.normal_(p)  # B starts at zero: make the adapter change the output
    x = torch.randn(2, 3, 9, 9)
    merged = merged_copy(net)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged.vision(x), net.vision(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(merged.vision[0].weight, net.vision[0].base_layer.weight)


def test_an_interrupted_suite_reuses_finished_runs_and_refuses_another_budget(
    tmp_path, monkeypatch
):
    """A (condition, seed) run that finished is read back instead of retrained; a record with
    another budget is refused, and a damaged one names the file to delete."""
    import importlib

    from vlastack.errors import ConfigError
    from vlastack.experiments.prepare import RUN_RECORD, finished_run, record_finished_run

    bb = importlib.import_module(
        "vlastack.experiments.backbone"
    )  # the package re-exports the function
    data = tmp_path / "data"
    (data / "meta").mkdir(parents=True)
    (data / "meta" / "info.json").write_text("{}")
    out = tmp_path / "out"

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(bb, "train_one", no_training)
    tasks = ["metaworld/reach-v3"]
    row = {"condition": "frozen", "train_seed": 0, "successes": 7, "episodes": 10, "train_s": 3.0}
    budget = {
        "recipe": "demo",
        "condition": "frozen",
        "lora_rank": 8,
        "data": str(data),
        "steps": 5,
        "max_minutes": None,
        "tasks": tasks,
        "episodes_per_task": 10,
        "seed": 0,
        "max_steps": None,
    }
    record_finished_run(out / "frozen" / "seed0", budget, row)
    table = bb.backbone(
        "metaworld/reach-v3",
        conditions=["frozen"],
        data=data,
        steps=5,
        out_dir=out,
        progress=False,
    )
    assert table["runs"] == [row]
    assert table["rows"][0]["success"]["successes"] == 7
    with pytest.raises(ConfigError, match="another --out"):
        bb.backbone(
            "metaworld/reach-v3",
            conditions=["frozen"],
            data=data,
            steps=6,
            out_dir=out,
            progress=False,
        )
    (out / "frozen" / "seed0" / RUN_RECORD).write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        finished_run(out / "frozen" / "seed0", budget)
