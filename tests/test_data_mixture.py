import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vlastack.data.mixture import DatasetMixture, MixtureSampler, combine_vector_stats
from vlastack.data.normalization import Normalizer
from vlastack.errors import DataError


class FakeWindows:
    """Map-style dataset returning ARCHITECTURE.md samples (T=2 obs, H=4 actions)."""

    def __init__(self, n, state_dim, action_dim, cams, offset, hw=(8, 8)):
        self.n, self.s, self.a, self.cams, self.offset, self.hw = (
            n,
            state_dim,
            action_dim,
            cams,
            offset,
            hw,
        )
        rng = np.random.default_rng(offset)
        self.actions = rng.normal(offset, 1 + offset, size=(n, action_dim)).astype(np.float32)
        self.stats = {
            "action": {
                "mean": self.actions.mean(0),
                "std": self.actions.std(0),
                "min": self.actions.min(0),
                "max": self.actions.max(0),
                "q01": np.quantile(self.actions, 0.01, 0),
                "q99": np.quantile(self.actions, 0.99, 0),
            }
        }

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        out = {
            "observation.state": torch.full((2, self.s), float(self.offset + i)),
            "observation.state_is_pad": torch.zeros(2, dtype=torch.bool),
            "action": torch.from_numpy(np.repeat(self.actions[i][None], 4, 0)),
            "action_is_pad": torch.zeros(4, dtype=torch.bool),
            "task": f"task {self.offset}",
            "episode_index": 0,
            "index": i,
        }
        for c in self.cams:
            out[f"observation.images.{c}"] = torch.full((2, 3, *self.hw), 0.5)
        return out


def test_padding_masks_and_cameras_collate():
    a = FakeWindows(10, state_dim=3, action_dim=2, cams=["front"], offset=0)
    b = FakeWindows(30, state_dim=5, action_dim=7, cams=["front", "wrist"], offset=100)
    mix = DatasetMixture([(a, 1.0), (b, 1.0)])
    assert len(mix) == 40 and mix.state_dim == 5 and mix.action_dim == 7
    assert mix.camera_keys == ["observation.images.front", "observation.images.wrist"]

    s = mix[3]  # from a
    assert s["dataset_index"] == 0 and s["index"] == 3
    assert s["action"].shape == (4, 7) and s["observation.state"].shape == (2, 5)
    assert s["action_dim_mask"].tolist() == [True] * 2 + [False] * 5
    assert s["state_dim_mask"].tolist() == [True] * 3 + [False] * 2
    assert torch.all(s["action"][:, 2:] == 0)
    torch.testing.assert_close(s["action"][0, :2], torch.from_numpy(a.actions[3]))
    assert torch.all(s["observation.images.wrist"] == 0)
    assert s["observation.images.wrist_is_pad"].tolist() == [True, True]
    assert s["observation.images.front_is_pad"].tolist() == [False, False]

    t = mix[12]  # index 2 of b
    assert t["dataset_index"] == 1 and t["index"] == 2
    assert t["action_dim_mask"].all() and t["observation.images.wrist_is_pad"].sum() == 0

    batch = next(iter(DataLoader(mix, batch_size=8, sampler=mix.sampler(seed=0))))
    assert batch["action"].shape == (8, 4, 7)
    assert batch["action_dim_mask"].shape == (8, 7)
    assert batch["observation.images.wrist"].shape == (8, 2, 3, 8, 8)
    assert len(batch["task"]) == 8


def test_sampler_follows_weights_not_sizes():
    a = FakeWindows(10, 3, 2, ["front"], 0)
    b = FakeWindows(90, 3, 2, ["front"], 1)
    mix = DatasetMixture([(a, 3.0), (b, 1.0)])
    idx = list(mix.sampler(num_samples=8000, seed=1))
    from_a = np.mean([i < 10 for i in idx])
    assert abs(from_a - 0.75) < 0.03  # by weight, although b is 9x larger
    assert set(i for i in idx if i < 10) == set(range(10))  # uniform inside a dataset
    assert idx == list(mix.sampler(num_samples=8000, seed=1))  # seeded
    s = MixtureSampler([10, 90], [3.0, 1.0], num_samples=100, seed=1)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first


def test_errors_name_the_problem():
    a = FakeWindows(5, 3, 2, ["front"], 0, hw=(8, 8))
    b = FakeWindows(5, 3, 2, ["front"], 1, hw=(16, 16))
    with pytest.raises(DataError, match="observation.images.front.*resize"):
        DatasetMixture([(a, 1), (b, 1)])
    with pytest.raises(DataError, match="pad_action_dim=1 is smaller"):
        DatasetMixture([(a, 1)], pad_action_dim=1)
    with pytest.raises(DataError, match="weights"):
        DatasetMixture([(a, 0.0)])


def test_pooled_stats_padded_and_normalizable():
    a = FakeWindows(200, 3, 2, ["front"], 0)
    b = FakeWindows(600, 3, 4, ["front"], 5)
    mix = DatasetMixture([(a, 1.0), (b, 1.0)], pad_action_dim=6)
    st = mix.stats["action"]
    assert st["mean"].shape == (6,)
    pooled = np.concatenate([a.actions[:, :2], b.actions[:, :2]])
    np.testing.assert_allclose(st["mean"][:2], pooled.mean(0), rtol=1e-5)
    np.testing.assert_allclose(st["std"][:2], pooled.std(0), rtol=1e-4)
    np.testing.assert_allclose(st["mean"][2:4], b.actions[:, 2:].mean(0), rtol=1e-5)
    np.testing.assert_allclose(st["min"][:2], pooled.min(0))
    assert st["mean"][4:].tolist() == [0, 0] and st["std"][4:].tolist() == [1, 1]
    norm = Normalizer(mix.stats, {"action": "min_max"})
    y = norm.normalize({"action": mix[0]["action"][None]})["action"]
    assert torch.all(y[..., 4:].abs() < 1e-6)  # padded zeros stay zero
    with pytest.raises(DataError, match="cannot pool"):
        combine_vector_stats([a.stats["action"]], [1], 1)


def test_two_real_datasets_with_different_robots(tmp_path):
    pytest.importorskip("h5py", reason="h5py ([convert] extra) not installed")
    pytest.importorskip("zarr", reason="zarr ([convert] extra) not installed")
    from test_data_convert import make_aloha, make_zarr
    from vlastack.data.convert.hdf5 import convert_hdf5
    from vlastack.data.convert.zarr import convert_zarr
    from vlastack.data.dataset import WindowedDataset, collate

    pusht = convert_zarr(make_zarr(tmp_path / "p.zarr")[0], tmp_path / "pusht", progress=False)
    aloha = convert_hdf5(make_aloha(tmp_path / "aloha"), tmp_path / "aloha_ds", progress=False)
    a = WindowedDataset(pusht, obs_horizon=2, action_horizon=4)
    b = WindowedDataset(aloha, obs_horizon=2, action_horizon=4)
    mix = DatasetMixture([(a, 0.5), (b, 0.5)])
    assert (mix.state_dim, mix.action_dim) == (14, 14)
    s = mix[0]
    assert s["action"].shape == (4, 14) and int(s["action_dim_mask"].sum()) == 2
    assert s["observation.images.top_is_pad"].all() and not s["observation.images.img_is_pad"].any()
    batch = collate([mix[i] for i in mix.sampler(num_samples=6, seed=0)])
    assert batch["action"].shape == (6, 4, 14) and batch["state_dim_mask"].shape == (6, 14)
    st = mix.stats
    assert st["action"]["mean"].shape == (14,)
    Normalizer(st, {"action": "mean_std", "observation.state": "mean_std"})
