"""Precomputed frozen-encoder features must give exactly what running the encoder gives."""

from __future__ import annotations

import numpy as np
import torch

from vlastack.data.dataset import WindowedDataset, collate
from vlastack.data.format import DatasetWriter, Feature
from vlastack.models.vla import IMAGE_FEATURES_KEY, VLAConfig, build_vla
from vlastack.training.feature_cache import cached_datasets, can_cache


def _write(root, episodes=3, length=7):
    feats = {
        "observation.images.cam": Feature("video", (32, 32, 3), ["height", "width", "channels"]),
        "observation.state": Feature("float32", (2,), ["x", "y"]),
        "action": Feature("float32", (2,), ["dx", "dy"]),
    }
    rng = np.random.default_rng(0)
    w = DatasetWriter.create(root, fps=10, features=feats, robot_type="toy")
    for e in range(episodes):
        for i in range(length):
            img = np.full((32, 32, 3), 20 * i + 40 * e, np.uint8)
            img[: 4 + 3 * i, :8] = 250  # a moving bright patch
            w.add_frame(
                {
                    "observation.images.cam": img,
                    "observation.state": rng.normal(size=2).astype(np.float32),
                    "action": rng.normal(size=2).astype(np.float32),
                },
                task=f"task {e % 2}",
            )
        w.save_episode()
    w.finalize()


def test_cached_features_match_encoder(tmp_path):
    _write(tmp_path / "ds")
    cfg = VLAConfig(
        action_dim=2,
        action_horizon=4,
        obs_horizon=2,
        state_dim=2,
        cameras=["cam"],
        image_size=(32, 32),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 16},
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2},
        freeze_vision=True,
    )
    torch.manual_seed(0)
    model = build_vla(cfg).eval()
    assert can_cache(model)
    base = WindowedDataset(tmp_path / "ds", obs_horizon=2, action_horizon=4, episodes=[0, 2])
    val = WindowedDataset(tmp_path / "ds", obs_horizon=2, action_horizon=4, episodes=[1])
    cached_train, cached_val = cached_datasets(model, [base, val], progress=False)
    assert len(cached_train) == len(base) and len(cached_val) == len(val)
    for ds_img, ds_feat in ((base, cached_train), (val, cached_val)):
        idx = [0, 1, len(ds_img) - 1]
        b_img = collate([ds_img[i] for i in idx])
        b_feat = collate([ds_feat[i] for i in idx])
        assert IMAGE_FEATURES_KEY in b_feat and "observation.images.cam" not in b_feat
        # video decoding is lossy but deterministic: both paths see the same decoded frames
        torch.testing.assert_close(model.loss(b_feat), model.loss(b_img), rtol=2e-3, atol=2e-3)
    # a trainable encoder (or FiLM) cannot be cached
    model.vision.requires_grad_(True)
    assert not can_cache(model)
