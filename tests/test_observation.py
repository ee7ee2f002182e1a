"""``parse_observation``: every key spelling and image layout a client sends resolves to the same
typed ``Observation``; a missing or malformed key raises an error naming it. ``observation_batch``
builds the model's batch (with a mixture member's padding) from windows of them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from vlastack.observation import (
    Observation,
    ObservationError,
    observation_batch,
    parse_observation,
)

CAMS = ("cam_high", "wrist")
SIZE = (16, 16)


def parse(obs: Any, state_dim: int = 3, default_prompt: str = "") -> Observation:
    return parse_observation(
        obs, cameras=CAMS, state_dim=state_dim, image_size=SIZE, default_prompt=default_prompt
    )


def lerobot() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    obs: dict[str, Any] = {
        f"observation.images.{c}": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for c in CAMS
    }
    obs["observation.state"] = np.array([0.5, -1.0, 2.0], np.float32)
    obs["task"] = "pick up the cup"
    return obs


def hwc(obs: dict[str, Any], cam: str) -> np.ndarray:
    return obs[f"observation.images.{cam}"]


def chw(obs: dict[str, Any], cam: str) -> np.ndarray:
    return np.ascontiguousarray(hwc(obs, cam).transpose(2, 0, 1))


def respell(style: str) -> dict[str, Any]:
    obs = lerobot()
    state, task = obs["observation.state"], obs["task"]
    if style == "openpi_flat":
        return {
            **{f"observation/{c}": hwc(obs, c) for c in CAMS},
            "observation/state": state.astype(np.float64),
            "prompt": task,
        }
    if style == "nested_chw":
        return {"images": {c: chw(obs, c) for c in CAMS}, "state": list(state), "prompt": task}
    if style == "images_flat":
        return {**{f"images/{c}": hwc(obs, c) for c in CAMS}, "state": state, "task": task}
    if style == "bare_cameras":
        return {**{c: hwc(obs, c) for c in CAMS}, "state": state, "prompt": task}
    if style == "lerobot_chw":
        return {**obs, **{f"observation.images.{c}": chw(obs, c) for c in CAMS}}
    if style == "prompt_bytes":
        return {**obs, "task": task.encode()}
    if style == "prompt_ndarray":
        return {**{k: v for k, v in obs.items() if k != "task"}, "prompt": np.array([task])}
    raise AssertionError(style)


def assert_same(a: Observation, b: Observation) -> None:
    assert list(a.images) == list(b.images) == list(CAMS)
    for cam in CAMS:
        assert a.images[cam].shape == (3, *SIZE) and a.images[cam].dtype == torch.float32
        torch.testing.assert_close(a.images[cam], b.images[cam], rtol=0, atol=0)
    assert a.state is not None and b.state is not None
    torch.testing.assert_close(a.state, b.state, rtol=0, atol=0)
    assert a.task == b.task


def test_lerobot_spelling() -> None:
    o = parse(lerobot())
    assert o.task == "pick up the cup" and o.state is not None
    assert o.state.dtype == torch.float32 and o.state.tolist() == [0.5, -1.0, 2.0]
    for img in o.images.values():
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


@pytest.mark.parametrize(
    "style",
    [
        "openpi_flat",
        "nested_chw",
        "images_flat",
        "bare_cameras",
        "lerobot_chw",
        "prompt_bytes",
        "prompt_ndarray",
    ],
)
def test_every_spelling_gives_the_lerobot_observation(style: str) -> None:
    assert_same(parse(respell(style)), parse(lerobot()))


def test_float_pixels_grey_images_and_defaults() -> None:
    obs = lerobot()
    as_float = {**obs, **{k: v.astype(np.float32) / 255 for k, v in obs.items() if "images" in k}}
    for cam in CAMS:
        torch.testing.assert_close(
            parse(as_float).images[cam], parse(obs).images[cam], rtol=1e-6, atol=1e-6
        )
    grey = {**obs, "observation.images.wrist": np.full((8, 8, 1), 255, np.uint8)}
    assert parse(grey).images["wrist"].shape == (3, *SIZE)
    no_task = {k: v for k, v in obs.items() if k != "task"}
    assert parse(no_task, default_prompt="do it").task == "do it"
    assert parse(no_task).task == ""
    stateless = parse({k: v for k, v in obs.items() if k != "observation.state"}, state_dim=0)
    assert stateless.state is None


def test_errors_name_the_key() -> None:
    obs = lerobot()
    with pytest.raises(ObservationError, match="must be a dict, got list"):
        parse([obs])
    no_wrist = {k: v for k, v in obs.items() if k != "observation.images.wrist"}
    with pytest.raises(
        ObservationError, match=r"missing camera 'wrist'.*'observation\.images\.wrist'"
    ):
        parse(no_wrist)
    with pytest.raises(ObservationError, match=r"missing 'observation\.state' \(float, 3 values\)"):
        parse({k: v for k, v in obs.items() if k != "observation.state"})
    with pytest.raises(ObservationError, match=r"'observation\.state' has 2 values, expected 3"):
        parse({**obs, "observation.state": np.zeros(2)})
    with pytest.raises(ObservationError, match=r"'wrist': expected an image of shape"):
        parse({**obs, "observation.images.wrist": np.zeros((4, 4), np.uint8)})
    with pytest.raises(ObservationError, match=r"'wrist': expected 3 colour channels"):
        parse({**obs, "observation.images.wrist": np.zeros((5, 4, 4), np.uint8)})
    with pytest.raises(ObservationError, match=r"'wrist': expected uint8 .* got int64"):
        parse({**obs, "observation.images.wrist": np.zeros((4, 4, 3), np.int64)})


def test_batch_stacks_windows_and_pads_a_mixture_member() -> None:
    a = parse(lerobot())
    b = Observation(images={c: t + 0.0 for c, t in a.images.items()}, state=a.state * 2, task="b")
    batch = observation_batch([[a, b], [b, b]], image_size=SIZE)
    assert batch["observation.images.wrist"].shape == (2, 2, 3, *SIZE)
    assert batch["observation.state"].shape == (2, 2, 3)
    torch.testing.assert_close(batch["observation.state"][0, 1], b.state)
    assert batch["task"] == ["b", "b"]  # the newest observation's instruction
    padded = observation_batch([[a]], image_size=SIZE, model_state_dim=5, pad_cameras=["top"])
    assert padded["observation.state"][0, 0].tolist() == [0.5, -1.0, 2.0, 0.0, 0.0]
    assert padded["observation.images.top"].shape == (1, 1, 3, *SIZE)
    assert float(padded["observation.images.top"].abs().sum()) == 0.0
    assert padded["observation.images.top_is_pad"].dtype == torch.bool
    assert bool(padded["observation.images.top_is_pad"].all())
    assert "observation.images.wrist_is_pad" not in padded
