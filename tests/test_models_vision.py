"""Contract tests over every registered vision encoder, the multi-camera wrapper and MobileNetV2 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vlastack.errors import ConfigError, DataError
from vlastack.models.vision import VISION_ENCODERS, MultiCameraEncoder, build_vision_encoder
from vlastack.models.vision.base import IMAGENET_MEAN, IMAGENET_STD
from vlastack.models.vision.mobilenet_v2 import (
    MobileNetV2,
    default_weights_path,
    imagenet_classifier,
    load_torchvision_state_dict,
)

ENCODERS = list(VISION_ENCODERS)
# The tiny-config ViT family resizes to its own image_size; keep frames small for speed.
SIZE = 64


@pytest.fixture(scope="module", params=ENCODERS)
def encoder(request):
    torch.manual_seed(0)
    return request.param, build_vision_encoder(request.param)


def test_registry_lists_the_required_encoders():
    assert {"small_cnn", "mobilenet_v2", "hf_resnet", "hf_vit", "siglip", "dinov2"} <= set(ENCODERS)


def test_output_shape_and_gradients(encoder):
    name, enc = encoder
    enc.train()
    x = torch.rand(2, 3, SIZE, SIZE)
    out = enc(x)
    assert out.dim() == 3 and out.shape[0] == 2 and out.shape[2] == enc.out_dim, name
    assert torch.isfinite(out).all()
    enc.zero_grad()
    out.square().mean().backward()
    missing = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
    # HF ViT-family poolers / unused heads would show up here; none of ours may be dead weight.
    assert not missing, f"{name}: no gradient for {missing[:5]}"


def test_batch_of_one_matches_batched(encoder):
    name, enc = encoder
    enc.eval()
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        full = enc(x)
        one = enc(x[1:2])
    torch.testing.assert_close(one[0], full[1], rtol=1e-4, atol=1e-4)


def _wrap(name: str, **kw) -> MultiCameraEncoder:
    film_dim = kw.pop("film_dim", 0)
    return MultiCameraEncoder(
        lambda: build_vision_encoder(name, film_dim=film_dim),
        kw.pop("cameras", ["front"]),
        kw.pop("obs_horizon", 2),
        (SIZE, SIZE),
        **kw,
    )


@pytest.mark.parametrize("name", ENCODERS)
def test_wrong_channel_order_names_expected_layout(name):
    wrap = _wrap(name)
    bad = {"observation.images.front": torch.rand(1, 2, SIZE, SIZE, 3)}
    with pytest.raises(DataError, match=r"\(B, T, H, W, C\).*\(B, T=2, C=3, H=64, W=64\)"):
        wrap(bad)


def test_shape_errors_name_the_field_and_fix():
    wrap = _wrap("small_cnn")
    cases = [
        ({"observation.images.front": torch.rand(1, 2, 3, 32, 32)}, "image_size=\\(64, 64\\)"),
        ({"observation.images.front": torch.rand(1, 3, 3, SIZE, SIZE)}, "obs_horizon is 2"),
        ({"observation.images.front": torch.rand(1, 3, SIZE, SIZE)}, "no time axis"),
        (
            {"observation.images.front": torch.zeros(1, 2, 3, SIZE, SIZE, dtype=torch.uint8)},
            "uint8",
        ),
        ({"observation.images.wrist": torch.rand(1, 2, 3, SIZE, SIZE)}, "observation.images.front"),
    ]
    for batch, pattern in cases:
        with pytest.raises(DataError, match=pattern):
            wrap(batch)


def test_multi_camera_shared_and_per_camera_weights_and_pooling():
    torch.manual_seed(0)
    batch = {f"observation.images.{c}": torch.rand(2, 2, 3, SIZE, SIZE) for c in ("a", "b")}
    shared = _wrap("small_cnn", cameras=["a", "b"])
    separate = _wrap("small_cnn", cameras=["a", "b"], shared=False)
    pooled = _wrap("small_cnn", cameras=["a", "b"], pooled=True)
    assert len(shared.encoders) == 1 and len(separate.encoders) == 2
    n_params = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) == 2 * n_params
    out = shared(batch)
    assert out.shape[:3] == (2, 2, 2) and out.shape[-1] == shared.out_dim
    # One shared encoder: camera b's tokens equal encoding camera b alone.
    alone = shared.encoders[0]((batch["observation.images.b"][:, 1] - shared.mean) / shared.std)
    torch.testing.assert_close(out[:, 1, 1], alone, rtol=1e-4, atol=1e-5)
    assert separate(batch).shape == out.shape
    assert pooled(batch).shape == (2, 2, 2, 1, shared.out_dim)


def test_imagenet_normalization_is_applied_inside():
    wrap = _wrap("small_cnn", obs_horizon=1)
    torch.testing.assert_close(wrap.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(wrap.std.flatten(), torch.tensor(IMAGENET_STD))
    siglip = _wrap("siglip", obs_horizon=1)
    torch.testing.assert_close(siglip.mean.flatten(), torch.full((3,), 0.5))


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v2", "hf_vit"])
def test_film_is_identity_at_init_then_conditions(name):
    torch.manual_seed(0)
    wrap = _wrap(name, film_dim=8, obs_horizon=1).eval()
    batch = {"observation.images.front": torch.rand(2, 1, 3, SIZE, SIZE)}
    cond = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(wrap(batch, cond), wrap(batch, None))
        for m in wrap.modules():
            if m.__class__.__name__ == "FiLM":
                m.proj.weight.normal_(0, 0.5)
        a = wrap(batch, cond)
        b = wrap(batch, -cond)
    assert not torch.allclose(a, b, atol=1e-4)


def test_small_cnn_spatial_softmax_keypoints_in_range():
    enc = build_vision_encoder(
        "small_cnn", {"output": "spatial_softmax", "num_keypoints": 5, "out_dim": 16}
    )
    x = torch.rand(3, 3, SIZE, SIZE)
    assert enc(x).shape == (3, 1, 16)
    stem = enc.stem(x)
    for block in enc.blocks:
        stem = block(stem)
    kp = enc.keypoints(stem)
    assert kp.shape == (3, 5, 2) and kp.abs().max() <= 1.0


def test_unknown_encoder_and_field_get_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'small_cnn'"):
        build_vision_encoder("smal_cnn")
    with pytest.raises(ConfigError, match="Did you mean 'num_blocks'"):
        build_vision_encoder("small_cnn", {"num_block": 2})


def test_mobilenet_loads_every_tensor_of_the_offline_checkpoint():
    path = default_weights_path()
    assert path.name == "mobilenet_v2-b0353104.pth"
    sd = load_torchvision_state_dict(path)
    model = MobileNetV2(pretrained=True)
    mine = model.state_dict()
    feature_keys = [k for k in sd if k.startswith("features.")]
    assert len(feature_keys) == len(mine) == 312
    for k in feature_keys:
        assert torch.equal(mine[k], sd[k]), k
    assert sum(p.numel() for p in model.parameters()) == 2_223_872


def test_mobilenet_recognizes_grace_hopper_as_imagenet_would():
    """The classic ImageNet sanity image: top classes military uniform (652) / bow tie (457)."""
    import matplotlib
    from PIL import Image

    img_path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not img_path.exists():
        pytest.skip(f"matplotlib sample image missing at {img_path}")
    img = Image.open(img_path).convert("RGB").resize((224, 224))
    x = torch.tensor(np.asarray(img)).permute(2, 0, 1).float()[None] / 255
    wrap = MultiCameraEncoder(lambda: MobileNetV2(), ["cam"], 1, (224, 224)).eval()
    with torch.no_grad():
        tokens = wrap({"observation.images.cam": x[:, None]})[0, 0, 0]  # (49, 1280)
        probs = imagenet_classifier()(tokens.mean(0)).softmax(-1)
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] == 652 and 457 in top5
    # A random-init network has no idea: its top-1 probability stays near uniform.
    with torch.no_grad():
        rnd = MultiCameraEncoder(
            lambda: MobileNetV2(pretrained=False), ["cam"], 1, (224, 224)
        ).eval()
        rnd_tokens = rnd({"observation.images.cam": x[:, None]})[0, 0, 0]
    assert not torch.allclose(rnd_tokens, tokens)


def test_hf_encoder_loads_from_a_local_folder(tmp_path):
    torch.manual_seed(0)
    enc = build_vision_encoder("hf_vit").eval()
    enc.model.save_pretrained(tmp_path / "vit")
    loaded = build_vision_encoder("hf_vit", {"pretrained": str(tmp_path / "vit")}).eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc(x))
    with pytest.raises(ConfigError, match="vision_kwargs.pretrained"):
        build_vision_encoder("siglip", {"pretrained": str(tmp_path / "missing")})
