"""CoT-VLA's latent subgoal and the world-model auxiliary objective (models/foresight.py):
shapes, where gradients go, the frozen encoder staying frozen, CoT-VLA's causal subgoal
attention, the ranking rule, the data loader's future frame, config errors, and export refusal."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _model_batches import make_batch  # noqa: E402
from test_training_feature_cache import _write  # noqa: E402
from vlastack.data.dataset import WindowedDataset, collate  # noqa: E402
from vlastack.errors import ConfigError, DataError  # noqa: E402
from vlastack.models.foresight import (  # noqa: E402
    FUTURE_FEATURES_KEY,
    future_offset,
    latent_tokens,
    rank_chunks,
    subgoal_metrics,
)
from vlastack.models.vla import VLAConfig, build_vla  # noqa: E402

SMALL = dict(
    image_size=(32, 32),
    width=32,
    vision="small_cnn",
    vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 16},
    language="none",
    state_dim=2,
    freeze_vision=True,
)
L1 = dict(head="l1", head_kwargs={"width": 32, "depth": 1, "num_heads": 2})
FLOW = dict(head="flow_matching", head_kwargs={"width": 32, "depth": 1, "num_heads": 2})
SUBGOAL = {"horizon": 3, "grid": 2, "num_heads": 2}


def _cot(**kw) -> VLAConfig:
    return VLAConfig(action_dim=3, action_horizon=4, subgoal=dict(SUBGOAL), **{**SMALL, **L1, **kw})


def _grad(mod: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)


def test_cot_vla_shapes_gradients_and_frozen_encoder():
    torch.manual_seed(0)
    cfg = _cot()
    vla = build_vla(cfg)
    batch = make_batch(cfg, B=3)
    vision_before = [p.detach().clone() for p in vla.vision.parameters()]
    opt = torch.optim.AdamW([p for p in vla.parameters() if p.requires_grad], lr=1e-2)
    loss = vla.loss(batch)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.mean().backward()
    sg = vla.foresight.subgoal
    assert _grad(sg.decoder) > 0 and _grad(sg.out) > 0  # the subgoal loss trains the decoder
    assert _grad(sg.cond) > 0  # the head reads the (teacher-forced) subgoal tokens
    assert _grad(vla.projector) > 0 and _grad(vla.head) > 0
    assert all(not p.requires_grad and p.grad is None for p in vla.vision.parameters())
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(vision_before, vla.vision.parameters()))
    groups = vla.param_groups()
    assert {id(p) for p in sg.parameters()} <= {id(p) for p in groups["head"]}
    vla.eval()
    actions = vla.sample_actions(batch)
    assert actions.shape == (3, 4, 3) and torch.isfinite(actions).all()
    assert vla.last_subgoal is not None and vla.last_subgoal.shape == (3, 4, 16)  # 2x2 tokens


def test_the_head_is_conditioned_on_the_subgoal_and_the_target_is_the_future_frame():
    torch.manual_seed(0)
    cfg = _cot()
    vla = build_vla(cfg).eval()
    batch = make_batch(cfg, B=2)
    other = dict(batch, **{"future.images.main": torch.rand(2, 3, 32, 32)})
    assert not torch.allclose(vla.loss(batch), vla.loss(other))  # the target is frame t+k
    ctx, mask = vla.head_context(batch)
    prefix, _, _ = vla.encode_prefix(batch)
    assert ctx.shape[1] == prefix.shape[1] + 4 and mask.all()  # + the 4 subgoal tokens


def test_subgoal_attention_is_causal_and_generation_matches_teacher_forcing():
    """CoT-VLA's pattern: subgoal token j depends only on the tokens before it, so generating
    one token at a time equals one teacher-forced pass over the generated tokens."""
    torch.manual_seed(0)
    cfg = _cot()
    vla = build_vla(cfg).eval()
    prefix, pmask, _ = vla.encode_prefix(make_batch(cfg, B=2))
    sg = vla.foresight.subgoal
    with torch.no_grad():
        target = torch.randn(2, 4, 16)
        pred = sg.teacher_forced(prefix, pmask, target)
        changed = target.clone()
        changed[:, 2:] += 5.0
        pred2 = sg.teacher_forced(prefix, pmask, changed)
        assert torch.allclose(pred[:, :3], pred2[:, :3], atol=1e-6)  # token j sees < j only
        assert not torch.allclose(pred[:, 3], pred2[:, 3])
        gen = sg.generate(prefix, pmask)
        assert torch.allclose(sg.teacher_forced(prefix, pmask, gen), gen, atol=1e-5)


def test_world_model_aux_loss_trains_backbone_not_encoder():
    torch.manual_seed(0)
    base = dict(action_dim=3, action_horizon=4, trunk_layers=1, **SMALL, **FLOW)
    plain = build_vla(VLAConfig(**base))
    assert plain.foresight is None
    cfg = VLAConfig(world_model={"weight": 0.5, "horizon": 3}, **base)
    vla = build_vla(cfg)
    vla.loss(make_batch(cfg, B=2)).mean().backward()
    wm = vla.foresight.world_model
    assert vla.foresight.subgoal is None and _grad(wm) > 0
    assert _grad(vla.trunk) > 0 and _grad(vla.projector) > 0
    assert all(p.grad is None for p in vla.vision.parameters())
    # the auxiliary term alone reaches the trunk: zero the head's loss and compare
    vla.zero_grad()
    feats = torch.zeros(2, 1, 16, 16)
    b = dict(make_batch(cfg, B=2), **{FUTURE_FEATURES_KEY: feats})
    ctx, mask, _ = vla.encode_prefix(b)
    extra, _, _ = vla.foresight.loss(vla.vision, b, ctx, mask, ctx, mask, b["action"])
    extra.mean().backward()
    assert _grad(vla.trunk) > 0 and _grad(wm) > 0
    assert future_offset(cfg) == 3
    assert future_offset(VLAConfig(world_model={"weight": 0.1}, **base)) == 4  # = action horizon


def test_ranking_picks_one_of_the_samples_by_the_stated_rule():
    torch.manual_seed(0)
    base = dict(action_dim=3, action_horizon=4, **SMALL, **FLOW)
    cfg = VLAConfig(world_model={"weight": 0.1, "rank_samples": 5}, **base)
    vla = build_vla(cfg).eval()
    batch = make_batch(cfg, B=2)
    chosen = vla.sample_actions(batch, generator=torch.Generator().manual_seed(0))
    ctx, mask = vla.head_context(batch)
    pool = vla.head.sample_actions(
        ctx.repeat_interleave(5, 0),
        mask.repeat_interleave(5, 0),
        generator=torch.Generator().manual_seed(0),
    ).view(2, 5, 4, 3)
    z = vla.foresight.world_model(
        ctx.repeat_interleave(5, 0), mask.repeat_interleave(5, 0), pool.flatten(0, 1)
    ).view(2, 5, 1, 16)
    best = rank_chunks(z, None)
    assert torch.allclose(chosen, pool[torch.arange(2), best], atol=1e-6)
    # the rules on hand-made latents: nearest to the goal; the medoid without one
    z = torch.tensor([0.0, 1.0, 1.2, 5.0, 6.0]).view(1, 5, 1, 1)
    assert rank_chunks(z, torch.tensor([[[4.0]]])).item() == 3
    assert rank_chunks(z, None).item() == 2  # summed distances 13.2 10.2 10.0 17.8 21.8


def test_cot_vla_with_world_model_ranks_towards_its_subgoal():
    torch.manual_seed(0)
    cfg = _cot(**FLOW, world_model={"weight": 0.1, "rank_samples": 3})
    cfg.world_model["horizon"] = 3
    vla = build_vla(cfg)
    vla.loss(make_batch(cfg, B=2)).mean().backward()
    vla.eval()
    out = vla.sample_actions(make_batch(cfg, B=2), generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 4, 3) and vla.foresight.wm_cfg.rank_rule == "auto"


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(cameras=[]), "needs cameras"),
        (dict(world_model={"weight": 0.1, "horizon": 5}), "set them equal"),
        (dict(subgoal={"horizon": 3, "gird": 2}), "Did you mean 'grid'"),
        (dict(world_model={"weight": 0.1, "horizon": 3, "rank_rule": "best"}), "rank_rule"),
        (dict(subgoal={"horizon": 0}), "horizon >= 1"),
    ],
)
def test_bad_foresight_config_names_the_field(kw, fragment):
    base = dict(action_dim=3, action_horizon=4, subgoal=dict(SUBGOAL), **SMALL, **L1)
    base.update(kw)
    with pytest.raises(ConfigError, match=fragment):
        VLAConfig(**base).validate()


def test_ranking_needs_a_trained_world_model_and_a_sampling_head():
    with pytest.raises(ConfigError, match="weight > 0"):
        VLAConfig(world_model={"rank_samples": 4}, **SMALL, **FLOW).validate()
    cfg = VLAConfig(world_model={"weight": 0.1, "rank_samples": 4}, **SMALL, **L1)
    with pytest.raises(ConfigError, match="deterministic"):
        build_vla(cfg)
    with pytest.raises(ConfigError, match=r"grid=5 asks for 25 tokens"):
        build_vla(VLAConfig(world_model={"weight": 0.1, "grid": 5}, **SMALL, **L1))


def test_missing_future_frame_is_a_clear_error():
    cfg = _cot()
    vla = build_vla(cfg)
    batch = make_batch(cfg, B=2)
    del batch["future.images.main"]
    with pytest.raises(DataError, match="future_offset"):
        vla.loss(batch)


def test_dataset_supplies_frame_t_plus_k_clamped_at_the_episode_end(tmp_path):
    _write(tmp_path / "ds", episodes=2, length=7)
    k = 3
    ds = WindowedDataset(tmp_path / "ds", action_horizon=2, future_offset=k)
    for i in (0, 2, 5, 6, 7, 12):
        s = ds[i]
        g = s["index"]
        end = ds._to[g]
        want = ds[i + min(k, end - 1 - g)]["observation.images.cam"][-1]
        assert torch.equal(s["future.images.cam"], want)
        assert bool(s["future_is_pad"]) == (g + k >= end)
    assert "future.images.cam" not in WindowedDataset(tmp_path / "ds", action_horizon=2)[0]
    with pytest.raises(DataError, match="future_offset"):
        WindowedDataset(tmp_path / "ds", future_offset=-1)


def test_cached_future_features_equal_encoding_the_future_frame(tmp_path):
    from vlastack.training.feature_cache import cached_datasets

    _write(tmp_path / "ds", episodes=2, length=7)
    cfg = VLAConfig(
        cameras=["cam"], action_dim=2, action_horizon=2, subgoal={"horizon": 3}, **{**SMALL, **L1}
    )
    vla = build_vla(cfg).eval()
    raw = WindowedDataset(tmp_path / "ds", action_horizon=2, future_offset=future_offset(cfg))
    (cached,) = cached_datasets(vla, [raw], progress=False)
    a = collate([raw[i] for i in range(6)])
    b = collate([cached[i] for i in range(6)])
    with torch.no_grad():
        enc = torch.stack([vla.vision.encode_frames(0, a["future.images.cam"])], 1)
    assert torch.allclose(b[FUTURE_FEATURES_KEY], enc, atol=2e-2)  # fp16 cache
    la = latent_tokens(enc, 2)
    assert la.shape == (6, 4, 16)
    assert torch.allclose(la.mean(-1), torch.zeros(6, 4), atol=1e-5)  # standardized tokens
    m = subgoal_metrics(vla, b)
    assert set(m) >= {"subgoal_cos", "subgoal_cos_copy", "subgoal_nn_top1"}
    assert m["subgoal_nn_chance"] == pytest.approx(1 / 6)
    assert np.isfinite(list(m.values())).all()


def test_export_refuses_subgoal_and_ranking_models(tmp_path):
    from vlastack.export.onnx import export_model_heads

    with pytest.raises(ConfigError, match="subgoal tokens.*vlastack serve"):
        export_model_heads(build_vla(_cot()), tmp_path)
    cfg = VLAConfig(world_model={"weight": 0.1, "rank_samples": 2}, **SMALL, **FLOW)
    with pytest.raises(ConfigError, match="rank sampled chunks"):
        export_model_heads(build_vla(cfg), tmp_path)


GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize("name", ["cot", "wm"])
def test_golden_outputs(name):
    """Fixed weights (seed 0), a fixed batch: the loss, the generated subgoal and the chosen
    chunk must match the committed outputs (tests/golden/regenerate_foresight.py)."""
    import importlib.util

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location(
        "golden_foresight", GOLDEN / "regenerate_foresight.py"
    )
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    want = {
        k.split(".", 1)[1]: v
        for k, v in load_file(str(GOLDEN / "foresight.safetensors")).items()
        if k.startswith(name + ".")
    }
    got = regen.golden_outputs(name)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-4, msg=f"{name}.{k}")


def test_cli_trains_cot_vla_with_world_model_and_the_policy_serves(tmp_path, lerobot_fixture):
    """`vlastack train cot_vla` with the world-model switch on the two-camera fixture: the loader
    supplies frame t+k, validation reports the subgoal against it, the checkpoint loads as a
    Policy that answers an observation, and ONNX export refuses with the reason."""
    import json

    from vlastack.cli.main import main
    from vlastack.policy import Policy

    args = [
        "train",
        "cot_vla",
        "--data",
        str(lerobot_fixture),
        f"--out_dir={tmp_path}",
        "--batch_size=4",
        "--log=none",
        "--progress=false",
        "--val_fraction=0.34",
        "--val_batches=1",
        "--num_threads=1",
        "--steps=2",
        "--save_every=2",
        "--model.action_horizon=4",
        "--model.subgoal.horizon=3",
        "--model.world_model.weight=0.1",
        "--model.world_model.horizon=3",
    ]
    assert main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = {k: v for r in rows for k, v in r.items() if k.startswith("val/subgoal")}
    assert {"val/subgoal_cos", "val/subgoal_nn_top1", "val/subgoal_cos_copy"} <= set(val)
    ckpt = tmp_path / "checkpoints" / "last"
    cfg = json.loads((ckpt / "config.json").read_text())["model"]
    assert cfg["subgoal"]["grid"] == 2 and cfg["subgoal"]["horizon"] == 3  # merged override
    policy = Policy.from_checkpoint(ckpt)
    obs = {
        "observation.images.front": np.zeros((96, 96, 3), np.uint8),
        "observation.images.wrist": np.zeros((96, 96, 3), np.uint8),
        "observation.state": np.zeros(policy.state_dim, np.float32),
        "task": "pick",
    }
    assert policy.infer(obs)["actions"].shape == (4, policy.model.config.action_dim)
    assert policy.model.last_subgoal is not None
    assert main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "onnx")]) == 2


def test_rollout_tracker_pairs_each_subgoal_with_frame_t_plus_k_and_the_report_shows_it(tmp_path):
    import json

    from vlastack.evaluation.metrics import EpisodeRecord, summarize
    from vlastack.evaluation.report import build_report
    from vlastack.evaluation.subgoal import SubgoalTracker

    torch.manual_seed(0)
    cfg = _cot()
    vla = build_vla(cfg).eval()

    class StubPolicy:  # the two Policy methods the tracker uses, on raw (3, H, W) frames
        model = vla

        def parse(self, obs):
            return obs

        def batch(self, windows):
            return {"observation.images.main": windows[0][-1]["img"][None, None]}

    frames = [{"img": torch.rand(3, 32, 32)} for _ in range(12)]
    tracker = SubgoalTracker.for_policy(StubPolicy())
    assert tracker is not None and tracker.k == 3
    assert SubgoalTracker.for_policy(object()) is None  # not a local subgoal policy
    for t in range(0, 8, 2):  # a chunk every 2 frames
        b = make_batch(cfg, B=1)
        b["observation.images.main"] = frames[t]["img"][None, None]
        vla.sample_actions(b)
        tracker.after_infer(t, frames[t])
        for j in (t + 1, t + 2):
            tracker.on_frame(j, frames[j])
    # predictions at frames 0, 2, 4 met frames 3, 5, 7; the one at 6 waits for frame 9
    assert len(tracker.rows) == 3 and set(tracker.pending) == {9}
    s = tracker.summary()
    assert s["pairs"] == 3 and s["chance"] == pytest.approx(1 / 3, abs=1e-4)
    assert -1.0 <= s["cos"] <= 1.0 and 0.0 <= s["top1"] <= 1.0
    rec = EpisodeRecord(task="t", episode=0, seed=0, status="failure", extra={"subgoal": s})
    d = tmp_path / "run"
    d.mkdir()
    summary = summarize([rec])
    summary["run"] = {"label": "cot"}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "episodes.jsonl").write_text(json.dumps(rec.to_dict()) + "\n")
    html = build_report([d], tmp_path / "r.html").read_text()
    assert "Subgoal vs the real future frame" in html and f"{s['cos']:.3f}" in html
