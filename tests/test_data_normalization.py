import json
import logging

import numpy as np
import pytest
import torch

from vlastack.data.normalization import (
    NormalizationConfig,
    Normalizer,
    check_stats_match,
)
from vlastack.errors import DataError


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": x.mean(0),
        "std": x.std(0),
        "min": x.min(0),
        "max": x.max(0),
        "q01": np.quantile(x, 0.01, axis=0),
        "q99": np.quantile(x, 0.99, axis=0),
    }


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    state = rng.normal([1.0, -2.0, 5.0], [0.5, 2.0, 10.0], size=(500, 3))
    action = rng.uniform([-3, 0], [1, 10], size=(500, 2))
    return state, action, {"observation.state": _stats(state), "action": _stats(action)}


def test_closed_forms(data):
    state, action, stats = data
    x = torch.tensor([[0.3, 1.0, 7.0]], dtype=torch.float64)
    st = stats["observation.state"]
    for mode, expect in [
        ("mean_std", (x.numpy() - st["mean"]) / (st["std"] + 1e-8)),
        ("min_max", (x.numpy() - st["min"]) / (st["max"] - st["min"] + 1e-8) * 2 - 1),
        # openpi normalize_quantile
        ("quantile", (x.numpy() - st["q01"]) / (st["q99"] - st["q01"] + 1e-6) * 2 - 1),
    ]:
        norm = Normalizer(stats, {"observation.state": mode})
        got = norm.normalize({"observation.state": x})["observation.state"]
        np.testing.assert_allclose(got.numpy(), expect, rtol=1e-5, err_msg=mode)


@pytest.mark.parametrize("mode", ["mean_std", "min_max", "quantile"])
def test_round_trip_and_ranges(data, mode):
    state, action, stats = data
    norm = Normalizer(stats, {"observation.state": mode, "action": mode})
    a = torch.tensor(action, dtype=torch.float32).reshape(50, 10, 2)  # (B, H, A)
    s = torch.tensor(state, dtype=torch.float32).reshape(50, 10, 3)
    out = norm.normalize({"action": a, "observation.state": s, "task": ["x"] * 50})
    assert out["task"] == ["x"] * 50
    back = norm.unnormalize_actions(out["action"])
    torch.testing.assert_close(back, a, rtol=1e-5, atol=1e-5)
    if mode == "min_max":
        assert out["action"].min() >= -1 - 1e-5 and out["action"].max() <= 1 + 1e-5
        assert out["action"].min() < -0.99 and out["action"].max() > 0.99
    if mode == "mean_std":
        flat = out["observation.state"].reshape(-1, 3)
        torch.testing.assert_close(flat.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
        torch.testing.assert_close(flat.std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    if mode == "quantile":
        inside = (out["action"].abs() <= 1).float().mean()
        assert 0.95 < inside < 1.0


def test_state_dict_and_to_dict_round_trip(data):
    _, _, stats = data
    norm = Normalizer(stats, NormalizationConfig.preset("diffusion_policy"))
    sd = norm.state_dict()
    assert "observation__state__offset" in sd and "action__scale" in sd
    d = json.loads(json.dumps(norm.to_dict()))
    back = Normalizer.from_dict(d)
    back.load_state_dict(sd)
    x = torch.randn(4, 16, 2)
    torch.testing.assert_close(back.unnormalize_actions(x), norm.unnormalize_actions(x))
    assert check_stats_match(back.stats, norm.stats) == []


def test_missing_key_is_error_naming_it(data):
    _, _, stats = data
    with pytest.raises(DataError, match=r"'observation.state'.*vlastack data stats"):
        Normalizer({"action": stats["action"]}, {"observation.state": "mean_std"})
    with pytest.raises(DataError, match=r"has no 'q01'"):
        Normalizer({"action": {"mean": [0.0], "std": [1.0]}}, {"action": "quantile"})
    # identity needs no stats, but only when chosen explicitly
    norm = Normalizer({}, {"action": "identity"})
    x = torch.randn(2, 3)
    assert norm.normalize({"action": x})["action"] is x


def test_bad_stats_rejected(data):
    _, _, stats = data
    bad = {"action": dict(stats["action"])}
    bad["action"]["std"] = np.array([1.0, np.nan])
    with pytest.raises(DataError, match=r"'action'.*NaN"):
        Normalizer(bad, {"action": "mean_std"})
    bad["action"]["std"] = np.array([1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="inconsistent shapes"):
        Normalizer(bad, {"action": "mean_std"})
    with pytest.raises(DataError, match=r"shape \(2,\).*shape \(7,\)"):
        Normalizer(stats, {"action": "mean_std"}, feature_shapes={"action": (7,)})
    with pytest.raises(DataError, match="unknown"):
        NormalizationConfig({"action": "zscore"})
    norm = Normalizer(stats, {"action": "mean_std"})
    with pytest.raises(DataError, match="different dataset"):
        norm.normalize({"action": torch.zeros(2, 5)})


def test_zero_range_dims_do_not_explode(caplog):
    stats = {
        "action": {
            "min": np.array([0.0, 2.0]),
            "max": np.array([1.0, 2.0]),
            "q01": np.array([0.0, 2.0]),
            "q99": np.array([1.0, 2.0]),
            "mean": np.array([0.5, 2.0]),
            "std": np.array([0.3, 0.0]),
        }
    }
    for mode in ("min_max", "quantile", "mean_std"):
        with caplog.at_level(logging.WARNING):
            norm = Normalizer(stats, {"action": mode})
        assert norm.zero_range_dims == {"action": [1]}
        assert "zero range" in caplog.text
        x = torch.tensor([[0.5, 2.0], [0.5, 2.01]])
        y = norm.normalize({"action": x})["action"]
        assert torch.isfinite(y).all()
        assert abs(float(y[0, 1])) < 1e-6  # the constant value maps to 0
        assert abs(float(y[1, 1])) < 0.1  # a small deviation stays small
        torch.testing.assert_close(norm.unnormalize_actions(y), x)


def test_check_stats_match_lists_differences(data):
    _, _, stats = data
    other = {"action": dict(stats["action"]), "extra": {"mean": [0.0]}}
    other["action"]["mean"] = stats["action"]["mean"] + np.array([0.0, 0.5])
    diffs = check_stats_match(stats, other)
    assert any("'observation.state': missing in dataset" in d for d in diffs)
    assert any("'extra': missing in checkpoint" in d for d in diffs)
    assert any("'action'.mean: differs" in d and "dim 1" in d for d in diffs)
    assert len(diffs) == 3
    assert check_stats_match(stats, stats) == []
    assert check_stats_match(stats, other, keys=["observation.state"]) == [
        "'observation.state': missing in dataset stats"
    ]


def test_image_stats_broadcast():
    stats = {
        "observation.images.front": {
            "mean": np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1),
            "std": np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1),
        }
    }
    norm = Normalizer(stats, {"observation.images.front": "mean_std"})
    img = torch.rand(2, 1, 3, 8, 8)
    out = norm.normalize({"observation.images.front": img})["observation.images.front"]
    expect = (img[:, :, 1] - 0.456) / 0.224
    torch.testing.assert_close(out[:, :, 1], expect, rtol=1e-5, atol=1e-5)
