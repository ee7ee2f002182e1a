"""The fused DINOv2 + SigLIP tower (Prismatic / OpenVLA): channel concat, per-tower normalization,
patch-grid check, penultimate-block features, local-folder loading, the openvla recipe."""

from __future__ import annotations

import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.models.vision import MultiCameraEncoder, build_vision_encoder
from vlastack.models.vision.base import IMAGENET_MEAN, IMAGENET_STD
from vlastack.models.vision.hf_encoders import HFVisionEncoder
from vlastack.recipes import get_recipe

# Different widths so that "sum of the two towers" is not 2x one of them.
MEAN_D = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD_D = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
KW = {"dino_config": {"hidden_size": 32}, "siglip_config": {"hidden_size": 48}}


def _fused(**kw):
    torch.manual_seed(0)
    return build_vision_encoder("dinosiglip", {**KW, **kw}).eval()


def test_channels_are_the_sum_of_the_towers_in_dino_siglip_order():
    enc = _fused()
    assert (enc.dino.out_dim, enc.siglip.out_dim) == (32, 48) and enc.out_dim == 80
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        dino = enc.dino((x - MEAN_D) / STD_D)
        siglip_alone = enc.siglip((x - 0.5) / 0.5)
    assert out.shape == (2, enc.num_patches, 80) and enc.num_patches == (96 // 16) ** 2
    # The DINOv2 tower emits CLS + 4 registers before its patches; the fusion keeps patches only.
    assert dino.shape[1] == enc.num_patches + 5
    dino_alone = dino[:, 5:]
    torch.testing.assert_close(out[..., :32], dino_alone)
    torch.testing.assert_close(out[..., 32:], siglip_alone)


def test_each_tower_sees_its_own_normalization():
    enc = _fused()
    seen: dict[str, torch.Tensor] = {}
    for name in ("dino", "siglip"):
        tower = getattr(enc, name)
        # HFVisionEncoder.encode gets the normalized frames before any resize.
        tower.register_forward_pre_hook(
            lambda _m, args, name=name: seen.__setitem__(name, args[0].detach().clone())
        )
    x = torch.rand(1, 3, 96, 96)
    wrap = MultiCameraEncoder(lambda: enc, ["cam"], 1, (96, 96)).eval()
    # The wrapper must pass [0, 1] frames through untouched: normalization is per tower.
    torch.testing.assert_close(wrap.mean.flatten(), torch.zeros(3))
    torch.testing.assert_close(wrap.std.flatten(), torch.ones(3))
    with torch.no_grad():
        wrap({"observation.images.cam": x[:, None]})
    torch.testing.assert_close(seen["dino"], (x - MEAN_D) / STD_D)
    torch.testing.assert_close(seen["siglip"], x * 2 - 1)
    assert not torch.allclose(seen["dino"], seen["siglip"])


def test_mismatched_patch_grids_are_a_config_error():
    with pytest.raises(ConfigError, match=r"12x12 patch grid but SigLIP \(patch 16\) makes 6x6"):
        build_vision_encoder("dinosiglip", {"dino_config": {"patch_size": 8}})
    # Same patch size at another shared image size is fine.
    enc = build_vision_encoder("dinosiglip", {"image_size": 64})
    assert enc(torch.rand(1, 3, 64, 64)).shape[1] == 16


def test_penultimate_features_drop_the_last_block_and_final_norm():
    pen = _fused(dino_config={"hidden_size": 32, "num_hidden_layers": 3})
    last = _fused(dino_config={"hidden_size": 32, "num_hidden_layers": 3}, feature_layer="last")
    assert len(pen.dino.model.encoder.layer) == 2 and len(last.dino.model.encoder.layer) == 3
    assert isinstance(pen.siglip.model.post_layernorm, torch.nn.Identity)
    assert isinstance(last.siglip.model.post_layernorm, torch.nn.LayerNorm)
    with pytest.raises(ConfigError, match="feature_layer"):
        _fused(siglip_config={"hidden_size": 48, "num_hidden_layers": 1})
    with pytest.raises(ConfigError, match="feature_layer must be one of"):
        _fused(feature_layer="second")


def test_towers_load_from_local_folders(tmp_path):
    torch.manual_seed(0)
    dino = HFVisionEncoder("dinov2", config={"hidden_size": 32}).eval()
    siglip = HFVisionEncoder("siglip", config={"hidden_size": 48}).eval()
    dino.model.save_pretrained(tmp_path / "dino")
    siglip.model.save_pretrained(tmp_path / "siglip")
    enc = build_vision_encoder(
        "dinosiglip",
        {
            "dino_path": str(tmp_path / "dino"),
            "siglip_path": str(tmp_path / "siglip"),
            "feature_layer": "last",
        },
    ).eval()
    assert enc.dino.family == "dinov2"  # plain DINOv2 read off the folder's config.json
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        want = torch.cat([dino((x - MEAN_D) / STD_D)[:, 1:], siglip(x * 2 - 1)], -1)
        torch.testing.assert_close(enc(x), want)
    with pytest.raises(ConfigError, match="vision_kwargs.pretrained"):
        build_vision_encoder("dinosiglip", {"siglip_path": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="fixed 96-px position table"):
        build_vision_encoder(
            "dinosiglip", {"siglip_path": str(tmp_path / "siglip"), "image_size": 64}
        )


def test_openvla_recipe_uses_the_fused_tower_and_backbone_still_targets_the_lm():
    r = get_recipe("openvla")
    assert r.model.vision == "dinosiglip" and "DINOv2 fusion dropped" not in r.scaled_down
    r2 = get_recipe("openvla", backbone="/some/llama")
    assert r2.model.language_kwargs["pretrained"] == "/some/llama"
    assert r2.model.vision == "dinosiglip" and r2.model.vision_kwargs == r.model.vision_kwargs
