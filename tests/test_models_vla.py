"""VLA composition: prefix building, gradient insulation, LM action tokens, RT-H, groups, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _model_batches import make_batch  # noqa: E402
from _stub_head import stub_head_builder  # noqa: E402
from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec  # noqa: E402
from vlastack.errors import ConfigError, DataError  # noqa: E402
from vlastack.models.vla import VLAConfig, build_vla, config_for_embodiment  # noqa: E402

SMALL = dict(
    image_size=(32, 32), width=32, vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 16}
)
HEAD = dict(head="l1", head_kwargs={"width": 32, "depth": 1, "num_heads": 2})
TINY_LM = {
    "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
    "max_text_tokens": 8,
}


def _grads(params) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def test_prefix_layout_image_language_state():
    cfg = VLAConfig(cameras=["a", "b"], obs_horizon=2, state_dim=3, **SMALL, **HEAD)
    vla = build_vla(cfg)
    ctx, mask, _ = vla.encode_prefix(make_batch(cfg))
    n_img = 2 * 2 * (32 // 8) ** 2  # cams * T * tokens per frame (two stride-2 blocks + stem)
    assert ctx.shape == (2, n_img + 2, 32) and mask.all()


def test_real_head_is_used_and_stub_plugs_in():
    cfg = VLAConfig(**SMALL, **HEAD)
    assert type(build_vla(cfg).head).__name__ == "L1Head"
    assert type(build_vla(cfg, head_builder=stub_head_builder).head).__name__ == "StubHead"


@pytest.mark.parametrize("language", ["minilm", "hf_causal_lm"])
def test_gradient_insulation_stops_head_gradients(language):
    torch.manual_seed(0)
    lk = TINY_LM if language == "hf_causal_lm" else {}
    for insulate in (False, True):
        cfg = VLAConfig(
            language=language,
            language_kwargs=lk,
            insulate_head=insulate,
            state_dim=2,
            **SMALL,
            **HEAD,
        )
        vla = build_vla(cfg)
        vla.loss(make_batch(cfg)).mean().backward()
        g = vla.param_groups()
        backbone = g["vision"] + g["projector"] + g["state"] + g["language"]
        assert _grads(g["head"]) > 0
        if insulate:
            assert _grads(backbone) == 0.0
        else:
            assert _grads(g["vision"]) > 0 and _grads(g["state"]) > 0
    # π0.5 / KI: insulated head + discrete-token loss still trains the backbone.
    cfg = VLAConfig(
        language=language,
        language_kwargs=lk,
        insulate_head=True,
        aux_token_loss="bins",
        **SMALL,
        **HEAD,
    )
    vla = build_vla(cfg)
    vla.loss(make_batch(cfg)).mean().backward()
    g = vla.param_groups()
    assert _grads(g["vision"]) > 0 and _grads(g["projector"]) > 0


def test_action_tokens_in_lm_overfit_and_greedy_decode():
    """RT-2/OpenVLA mode: CE on the last 256 ids; after overfitting, greedy decoding recovers the bins."""
    torch.manual_seed(0)
    cfg = VLAConfig(
        language="hf_causal_lm",
        language_kwargs=TINY_LM,
        action_tokens_in_lm=True,
        action_horizon=2,
        action_dim=3,
        head="none",
        cameras=[],
        state_dim=2,
    )
    vla = build_vla(cfg)
    assert vla.head is None
    batch = make_batch(cfg, B=1)
    opt = torch.optim.Adam(vla.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        opt.zero_grad()
        loss = vla.loss(batch)
        first = first if first is not None else float(loss.detach())
        loss.mean().backward()
        opt.step()
    assert float(loss) < 0.2 * first
    vla.eval()
    pred = vla.sample_actions(batch)
    assert pred.shape == (1, 2, 3)
    assert (pred - batch["action"]).abs().max() <= 2 / 255 + 1e-6  # within one bin width


def test_rt_h_motion_hierarchy_teacher_forcing_and_prediction():
    torch.manual_seed(0)
    cfg = VLAConfig(motion_hierarchy=True, gripper_index=-1, action_dim=4, **SMALL, **HEAD)
    vla = build_vla(cfg)
    batch = make_batch(cfg, B=3)
    loss = vla.loss(batch)
    assert loss.shape == (3,)
    loss.mean().backward()
    assert vla.motion_classifier.weight.grad.abs().sum() > 0
    assert vla.motion_embed.weight.grad.abs().sum() > 0  # the head reads the motion token
    motions = vla.predict_motions(batch)
    assert len(motions) == 3 and set(motions) <= set(vla.motion_vocab)
    assert vla.sample_actions(batch).shape == (3, 8, 4)


def test_param_groups_partition_all_parameters():
    cfg = VLAConfig(
        state_dim=2, trunk_layers=1, aux_token_loss="bins", motion_hierarchy=True, **SMALL, **HEAD
    )
    vla = build_vla(cfg)
    groups = vla.param_groups()
    assert set(groups) == {"vision", "language", "projector", "head", "state"}
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(vla.parameters()))
    assert groups["vision"] and groups["projector"] and groups["state"] and groups["language"]


def test_freeze_flags_and_ternary():
    cfg = VLAConfig(freeze_vision=True, ternary=["vision", "head"], **SMALL, **HEAD)
    vla = build_vla(cfg)
    assert not any(p.requires_grad for p in vla.vision.parameters())
    assert any(type(m).__name__ == "BitLinear" for m in vla.head.modules())
    assert torch.isfinite(vla.loss(make_batch(cfg))).all()


def test_sampling_is_seeded_and_batch_one_works():
    cfg = VLAConfig(
        head="flow_matching",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "num_steps": 3},
        **SMALL,
    )
    vla = build_vla(cfg).eval()
    batch = make_batch(cfg, B=1)
    a = vla.sample_actions(batch, generator=torch.Generator().manual_seed(3))
    b = vla.sample_actions(batch, generator=torch.Generator().manual_seed(3))
    assert a.shape == (1, 8, 2) and torch.equal(a, b)


def test_padded_actions_do_not_change_the_loss():
    torch.manual_seed(0)
    cfg = VLAConfig(**SMALL, **HEAD)
    vla = build_vla(cfg).eval()
    batch = make_batch(cfg)
    batch["action_is_pad"][:, 5:] = True
    base = vla.loss(batch)
    batch["action"][:, 5:] = 100.0
    torch.testing.assert_close(vla.loss(batch), base)


def test_bad_inputs_raise_errors_naming_the_field():
    cfg = VLAConfig(state_dim=3, **SMALL, **HEAD)
    vla = build_vla(cfg)
    b = make_batch(cfg)
    with pytest.raises(DataError, match="action_dim=2"):
        vla.loss({**b, "action": torch.zeros(2, 8, 5)})
    with pytest.raises(DataError, match="state_dim"):
        vla.loss({**b, "observation.state": torch.zeros(2, 1, 4)})
    with pytest.raises(DataError, match="'task'"):
        vla.loss({k: v for k, v in b.items() if k != "task"})
    with pytest.raises(DataError, match=r"\(B, T, H, W, C\)"):
        vla.loss({**b, "observation.images.main": torch.rand(2, 1, 32, 32, 3)})
    with pytest.raises(ConfigError, match="Did you mean 'mobilenet_v2'"):
        build_vla(VLAConfig(vision="mobilenet"))
    with pytest.raises(ConfigError, match="Did you mean 'flow_matching'"):
        build_vla(VLAConfig(head="flow_match", **SMALL))
    with pytest.raises(ConfigError, match="action_tokens_in_lm"):
        build_vla(VLAConfig(action_tokens_in_lm=True))
    with pytest.raises(ConfigError, match="unknown field 'actoin_dim'"):
        VLAConfig.from_dict({"actoin_dim": 3})
    # `--model.language=none` reaches the config as None: it means the registered "none"
    cfg = VLAConfig(language=None, **SMALL, **HEAD)  # type: ignore[arg-type]
    cfg.validate()
    assert cfg.language == "none"
    with pytest.raises(ConfigError, match="unknown vision encoder 'None'"):
        VLAConfig(vision=None, **HEAD).validate()  # type: ignore[arg-type]


def test_config_round_trip_and_embodiment_adaptation():
    cfg = VLAConfig(state_dim=3, **SMALL, **HEAD)
    again = VLAConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert build_vla(again).state_dict().keys() == build_vla(cfg).state_dict().keys()
    emb = EmbodimentSpec(
        robot_type="arm",
        cameras=[CameraSpec("top", 48, 64), CameraSpec("wrist", 48, 64)],
        state=VectorSpec(["q0", "q1", "q2", "q3"]),
        action=VectorSpec(["x", "y", "z", "g"], gripper_index=3),
        control_hz=10.0,
    )
    out = config_for_embodiment(cfg, emb)
    assert (out.action_dim, out.state_dim, out.cameras, out.image_size, out.gripper_index) == (
        4,
        4,
        ["top", "wrist"],
        (48, 64),
        3,
    )
    no_state = config_for_embodiment(VLAConfig(state_dim=0, **SMALL, **HEAD), emb)
    assert no_state.state_dim == 0


def test_missing_camera_tokens_are_masked_not_fed():
    """A mixture member without camera 'b' arrives as a zero image with every history step's
    ``_is_pad`` set: its tokens leave the context (what that image holds cannot change the
    actions), while a camera with only a padded older frame (episode start) keeps its tokens."""
    torch.manual_seed(0)
    cfg = VLAConfig(cameras=["a", "b"], obs_horizon=2, state_dim=3, **SMALL, **HEAD)
    vla = build_vla(cfg).eval()
    batch = make_batch(cfg)
    batch["observation.images.a_is_pad"] = torch.tensor([[True, False], [False, False]])
    batch["observation.images.b_is_pad"] = torch.tensor([[True, True], [False, False]])
    _, mask, _ = vla.encode_prefix(batch)
    n_cam = 2 * (32 // 8) ** 2  # T * tokens per frame
    assert mask[0, :n_cam].all() and not mask[0, n_cam : 2 * n_cam].any()
    assert mask[1].all() and mask[0, 2 * n_cam :].all()  # language and state stay
    with torch.no_grad():
        before = vla.head.sample_actions(*vla.encode_prefix(batch)[:2])
        batch["observation.images.b"][0] = torch.rand_like(batch["observation.images.b"][0])
        after = vla.head.sample_actions(*vla.encode_prefix(batch)[:2])
    torch.testing.assert_close(after[0], before[0])
    batch["observation.images.b_is_pad"][0] = False  # now the image is real: it must matter
    with torch.no_grad():
        seen = vla.head.sample_actions(*vla.encode_prefix(batch)[:2])
    assert not torch.allclose(seen[0], before[0])
