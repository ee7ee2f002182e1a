import json

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="h5py ([convert] extra) not installed")
zarr = pytest.importorskip("zarr", reason="zarr ([convert] extra) not installed")

from vlastack.data.convert import EpisodeArrays  # noqa: E402
from vlastack.data.convert.hdf5 import convert_hdf5, detect_layout, iter_aloha, iter_robomimic  # noqa: E402
from vlastack.data.convert.rlds import episode_from_steps  # noqa: E402
from vlastack.data.convert.zarr import convert_zarr, iter_zarr  # noqa: E402
from vlastack.data.format import DatasetReader  # noqa: E402
from vlastack.errors import DataError  # noqa: E402

LENGTHS = [6, 9, 4]


def _img(n, h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(n, h, w, 3), dtype=np.uint8)


def make_robomimic(path, lengths=LENGTHS, with_lang=True):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1})
        if with_lang:
            data.attrs["problem_info"] = json.dumps({"language_instruction": "lift the cube"})
        for i, n in enumerate(lengths):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = n
            obs = g.create_group("obs")
            obs["robot0_eef_pos"] = np.arange(n * 3, dtype=np.float64).reshape(n, 3) + 100 * i
            obs["robot0_gripper_qpos"] = np.full((n, 2), 0.04 * i)
            obs["agentview_image"] = _img(n, 16, 20, i)
            g["actions"] = np.linspace(-1, 1, n * 7).reshape(n, 7) + i
        mask = f.create_group("mask")
        mask["train"] = np.array([b"demo_0", b"demo_2"])
        mask["valid"] = np.array([b"demo_1"])
    return path


def make_aloha(folder, lengths=LENGTHS):
    folder.mkdir()
    for i, n in enumerate(lengths):
        with h5py.File(folder / f"episode_{i}.hdf5", "w") as f:
            f.attrs["sim"] = True
            f["observations/qpos"] = np.full((n, 14), float(i), dtype=np.float32)
            f["observations/qvel"] = np.zeros((n, 14), dtype=np.float32)
            f["observations/images/top"] = _img(n, 12, 16, i)
            f["action"] = np.tile(np.arange(14, dtype=np.float32), (n, 1)) * (i + 1)
    return folder


def make_zarr(path, lengths=LENGTHS, img_dtype=np.float32):
    n = sum(lengths)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    # smooth frames that a lossy video codec keeps close; PushT stores float32 0..255
    yy, xx = np.mgrid[0:16, 0:16]
    img = np.stack(
        [np.stack([xx * 8 + t, yy * 8 + 2 * t, np.full_like(xx, 4 * t)], -1) for t in range(n)]
    ).astype(img_dtype)
    root.create_array("data/img", shape=img.shape, dtype=img.dtype)[:] = img
    state = np.arange(n * 5, dtype=np.float32).reshape(n, 5)
    root.create_array("data/state", shape=state.shape, dtype=state.dtype)[:] = state
    action = np.arange(n * 2, dtype=np.float32).reshape(n, 2) * 0.5
    root.create_array("data/action", shape=action.shape, dtype=action.dtype)[:] = action
    ends = np.cumsum(lengths).astype(np.int64)
    root.create_array("meta/episode_ends", shape=ends.shape, dtype=ends.dtype)[:] = ends
    return path, img, state, action


# ---- reading the sources (no writer needed) ---------------------------------------------
def test_robomimic_reader(tmp_path):
    path = make_robomimic(tmp_path / "demo.hdf5")
    assert detect_layout(path) == "robomimic"
    demos, it, info = iter_robomimic(path)
    eps = list(it)
    assert demos == ["demo_0", "demo_1", "demo_2"]
    assert [len(e.action) for e in eps] == LENGTHS
    e = eps[1]
    assert e.state.shape == (9, 5) and e.action.shape == (9, 7)
    np.testing.assert_allclose(e.state[2, :3], np.arange(6, 9) + 100)
    np.testing.assert_allclose(e.state[:, 3:], 0.04)
    assert set(e.images) == {"agentview"} and e.images["agentview"].dtype == np.uint8
    assert e.task == "lift the cube"
    assert info["state_names"][:3] == ["robot0_eef_pos_0", "robot0_eef_pos_1", "robot0_eef_pos_2"]
    demos, it, _ = iter_robomimic(path, filter_key="train", state_keys=["robot0_gripper_qpos"])
    assert demos == ["demo_0", "demo_2"]
    assert next(it).state.shape == (6, 2)


def test_robomimic_missing_keys_are_named(tmp_path):
    path = make_robomimic(tmp_path / "demo.hdf5")
    with pytest.raises(DataError, match=r"no 'joint_pos'.*robot0_eef_pos"):
        list(iter_robomimic(path, state_keys=["joint_pos"])[1])
    with pytest.raises(DataError, match=r"no 'test'.*\['train', 'valid'\]"):
        iter_robomimic(path, filter_key="test")
    with pytest.raises(DataError, match=r"no 'act'.*actions"):
        list(iter_robomimic(path, action_key="act")[1])
    with h5py.File(tmp_path / "empty.hdf5", "w") as f:
        f["foo"] = np.zeros(3)
    with pytest.raises(DataError, match=r"neither robomimic.*\['foo'\]"):
        detect_layout(tmp_path / "empty.hdf5")


def test_aloha_reader(tmp_path):
    folder = make_aloha(tmp_path / "sim_transfer_cube")
    assert detect_layout(folder) == "aloha"
    files, it, info = iter_aloha(folder)
    eps = list(it)
    assert [p.name for p in files] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert eps[2].action.shape == (4, 14) and eps[2].action[0, 3] == 9.0
    assert eps[1].images["top"].shape == (9, 12, 16, 3)
    assert eps[0].task == "sim transfer cube"
    with pytest.raises(DataError, match=r"no 'observations/images/left_wrist'.*\['top'\]"):
        list(iter_aloha(folder, image_keys=["left_wrist"])[1])


def test_zarr_reader(tmp_path):
    path, img, state, action = make_zarr(tmp_path / "pusht.zarr")
    total, it, info = iter_zarr(path, task="push the T")
    eps = list(it)
    assert total == 3 and info["image_keys"] == ["img"]
    np.testing.assert_array_equal(eps[1].state, state[6:15])
    np.testing.assert_array_equal(eps[2].action, action[15:19])
    np.testing.assert_array_equal(eps[0].images["img"], img[:6].astype(np.uint8))
    with pytest.raises(DataError, match=r"no 'agent_pos'.*\['action', 'img', 'state'\]"):
        iter_zarr(path, state_key="agent_pos")
    bad = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w", zarr_format=2)
    bad.create_group("data")
    with pytest.raises(DataError, match=r"no 'meta'"):
        iter_zarr(tmp_path / "bad.zarr")


def test_rlds_steps_to_episode():
    steps = [
        {
            "observation": {
                "image": np.full((8, 8, 3), t, np.uint8),
                "wrist_image": np.zeros((4, 4, 3), np.uint8),
                "state": np.array([t, 2 * t], np.float32),
            },
            "action": {"world_vector": np.array([t, 0, 1.0]), "gripper": np.array(1.0)},
            "language_instruction": b"put the spoon on the towel",
            "is_first": t == 0,
        }
        for t in range(5)
    ]
    ep, s_names, a_names = episode_from_steps(steps, source="x")
    assert ep.task == "put the spoon on the towel"
    assert set(ep.images) == {"image", "wrist_image"} and ep.images["image"][3, 0, 0, 0] == 3
    assert ep.state.shape == (5, 2) and a_names == [
        "gripper",
        "world_vector_0",
        "world_vector_1",
        "world_vector_2",
    ]
    np.testing.assert_allclose(ep.action[4], [1.0, 4, 0, 1])
    with pytest.raises(DataError, match=r"no 'joints'.*'state'"):
        episode_from_steps(steps, source="x", state_key="joints")


def test_episode_validation():
    ep = EpisodeArrays(np.zeros((3, 2)), np.zeros((4, 2)), source="s")
    with pytest.raises(DataError, match="state has 3 frames but action has 4"):
        ep.validate()


# ---- end to end through the writer -------------------------------------------------------
def test_convert_robomimic_end_to_end(tmp_path):
    src = make_robomimic(tmp_path / "demo.hdf5")
    dst = convert_hdf5(src, tmp_path / "out", progress=False)
    r = DatasetReader(dst)
    assert r.num_episodes == 3 and r.num_frames == sum(LENGTHS) and r.fps == 20
    assert r.camera_keys == ["observation.images.agentview"]
    assert r.embodiment is not None and r.embodiment.action.dim == 7
    assert r.embodiment.cameras[0].height == 16 and r.embodiment.robot_type == "Lift"
    np.testing.assert_allclose(
        r.column("action")[6:15], np.linspace(-1, 1, 63).reshape(9, 7) + 1, rtol=1e-6
    )
    assert r.episode(1).tasks == ["lift the cube"]
    frames = r.decode_frames("observation.images.agentview", 0, np.array([0, 5]))
    assert frames.shape == (2, 16, 20, 3)
    png = convert_hdf5(src, tmp_path / "png", progress=False, use_videos=False)
    got = DatasetReader(png).decode_frames("observation.images.agentview", 1, np.arange(9))
    with h5py.File(src) as f:
        np.testing.assert_array_equal(got, f["data/demo_1/obs/agentview_image"][()])  # lossless
    with pytest.raises(DataError, match="--overwrite"):
        convert_hdf5(src, dst, progress=False)
    convert_hdf5(src, dst, progress=False, overwrite=True, filter_key="valid")
    assert DatasetReader(dst).num_episodes == 1


def test_convert_aloha_end_to_end(tmp_path):
    src = make_aloha(tmp_path / "aloha_sim")
    dst = convert_hdf5(src, tmp_path / "out", progress=False, task="transfer the cube")
    r = DatasetReader(dst)
    assert r.fps == 50 and r.num_frames == sum(LENGTHS)
    assert r.embodiment.action.names[6] == "left_gripper" and r.embodiment.action.gripper_index == 6
    assert r.tasks and "transfer the cube" in list(r.tasks)


def test_convert_zarr_end_to_end(tmp_path):
    src, img, state, action = make_zarr(tmp_path / "pusht.zarr")
    dst = convert_zarr(src, tmp_path / "out", task="push the T", progress=False)
    r = DatasetReader(dst)
    assert r.num_episodes == 3 and r.fps == 10
    np.testing.assert_allclose(r.column("observation.state"), state)
    np.testing.assert_allclose(r.column("action"), action)
    got = r.decode_frames("observation.images.img", 1, np.array([0, 8]))
    err = np.abs(got.astype(np.float32) - img[[6, 14]])
    assert got.shape == (2, 16, 16, 3) and err.mean() < 6, err.mean()  # lossy video
    assert r.embodiment.cameras[0].name == "img" and r.tasks == ["push the T"]


def test_convert_rlds_end_to_end(tmp_path):
    """Checked with tensorflow-cpu 2.21 + tensorflow-datasets 4.9.10 in a separate venv."""
    tf = pytest.importorskip("tensorflow", reason="tensorflow ([rlds] extra) not installed")
    tfds = pytest.importorskip("tensorflow_datasets", reason="[rlds] extra not installed")
    from vlastack.data.convert.rlds import convert_rlds

    features = tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(
                {
                    "observation": tfds.features.FeaturesDict(
                        {
                            "image": tfds.features.Image(shape=(16, 16, 3)),
                            "state": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                        }
                    ),
                    "action": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                    "language_instruction": tfds.features.Text(),
                }
            )
        }
    )

    def episode(i, n):
        steps = [
            {
                "observation": {
                    "image": np.full((16, 16, 3), 10 * t, np.uint8),
                    "state": np.full(3, t + i, np.float32),
                },
                "action": np.full(4, i, np.float32),
                "language_instruction": f"task {i}",
            }
            for t in range(n)
        ]
        return {"steps": steps}

    class ToyRlds(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("0.1.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, n in enumerate([5, 7]):
                yield i, episode(i, n)

    del tf
    ToyRlds(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    src = tmp_path / "tfds" / "toy_rlds" / "0.1.0"
    r = DatasetReader(convert_rlds(src, tmp_path / "out", fps=5, progress=False, use_videos=False))
    assert r.num_episodes == 2 and r.num_frames == 12 and sorted(r.tasks) == ["task 0", "task 1"]
    ep = r.episode(1)
    assert r.decode_frames("observation.images.image", 1, [3])[0, 0, 0].tolist() == [30] * 3
    first_action = r.column("action")[ep.dataset_from_index]
    assert r.column("observation.state")[ep.dataset_from_index + 1][0] == first_action[0] + 1
