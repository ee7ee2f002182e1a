"""Fast checks of the benchmark-suite pieces: head settings, env names, the 7-d Sawyer, results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlastack.errors import ConfigError
from vlastack.evaluation.metrics import EpisodeRecord
from vlastack.experiments import DEFAULT_HEADS, head_kwargs, write_results
from vlastack.experiments.head_to_head import base_head


def test_every_default_head_builds_with_shared_size():
    import torch

    from vlastack.models.action_heads import ACTION_HEADS
    from vlastack.recipes import get_recipe

    base = get_recipe("demo").model.head_kwargs
    ctx, mask = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    actions, pad = torch.rand(2, 8, 4) * 2 - 1, torch.zeros(2, 8, dtype=torch.bool)
    for head in DEFAULT_HEADS:
        r = get_recipe("demo", head=base_head(head), head_kwargs=head_kwargs(head, base))
        h = ACTION_HEADS.get(base_head(head))(
            r.model.head_kwargs, context_dim=32, action_dim=4, action_horizon=8
        )
        assert h.loss(ctx, mask, actions, pad).shape == (2,)
        assert h.sample_actions(ctx, mask).shape == (2, 8, 4)
        width = getattr(h, "width", None)
        assert width in (None, base["width"]), head
        if head == "diffusion_unet":
            assert h.denoiser == "unet" and hasattr(h, "unet")


def test_reparam_action_maps_round_trip():
    from vlastack.envs.reparam import from_native, to_native

    rng = np.random.default_rng(0)
    for _ in range(10):
        a4 = rng.uniform(-1, 1, 4).astype(np.float32)
        np.testing.assert_allclose(to_native(from_native(a4)), a4, atol=1e-6)
    # a zero-padded native action moves the rotated arm the wrong way (the transfer gap)
    a4 = np.array([1.0, 0.0, 0.0, 0.5], dtype=np.float32)
    padded = np.concatenate([a4, np.zeros(3, dtype=np.float32)])
    assert not np.allclose(to_native(padded)[:3], a4[:3])


def test_results_folder_is_read_by_the_report(tmp_path):
    from vlastack.evaluation.report import build_report, load_run

    recs = [
        EpisodeRecord(
            "chain/reach-v3",
            i,
            i,
            "failure",
            steps=10,
            condition="vla",
            subtasks_total=10,
            subtasks_completed=c,
            latencies_ms=[5.0],
        )
        for i, c in enumerate([0, 3, 10])
    ]
    recs[2].status = "success"
    s = write_results(
        tmp_path / "r",
        recs,
        run={"label": "x", "kind": "chain"},
        manifest={"suite": "chain"},
        baseline_condition="vla",
    )
    assert s["overall"]["chain_length_mean"] == pytest.approx(13 / 3)
    run = load_run(tmp_path / "r")
    assert run.label == "x"
    html = build_report([tmp_path / "r"], tmp_path / "report.html")
    assert (tmp_path / "report.html").exists() and html is not None
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["run"]["kind"] == "chain"


def test_unknown_stress_condition_and_head_are_config_errors(tmp_path):
    from vlastack.experiments import heads, stress

    with pytest.raises(ConfigError, match="lighting_dark"):
        stress(tmp_path, "metaworld/reach-v3", conditions=["fog"], out_dir=tmp_path / "o")
    with pytest.raises(ConfigError, match="unknown action head"):
        heads("metaworld/reach-v3", heads=["transformer_xl"], out_dir=tmp_path / "h")


def test_missing_dataset_is_a_clear_error(tmp_path):
    from vlastack.experiments import ensure_dataset

    with pytest.raises(ConfigError, match="meta/info.json"):
        ensure_dataset(
            "metaworld/reach-v3",
            tmp_path,
            tmp_path / "o",
            episodes_per_task=1,
            image_size=(32, 32),
            seed=0,
            workers=1,
            progress=False,
        )


def test_several_envs_share_one_collected_dataset(tmp_path):
    """``--env a,b`` (heads suite): one dataset holding every env's demonstrations."""
    from vlastack.data.format import DatasetReader
    from vlastack.experiments import ensure_dataset, split_envs

    assert split_envs(" metaworld/reach-v3 , metaworld/mt10") == [
        "metaworld/reach-v3",
        "metaworld/mt10",
    ]
    with pytest.raises(ConfigError, match="at least one"):
        split_envs(" , ")
    env = "metaworld/reach-v3,metaworld/button-press-topdown-v3"
    kw = dict(episodes_per_task=1, image_size=(32, 32), seed=0, workers=1, progress=False)
    root = ensure_dataset(env, None, tmp_path / "d", **kw)
    reader = DatasetReader(root)
    assert reader.num_episodes == 2
    assert len(set(reader.tasks.values() if isinstance(reader.tasks, dict) else reader.tasks)) == 2
