"""What an imported LeRobot policy reads from a client, and which robot it describes.

``find_input`` looks a LeRobot input key up under every spelling vlastack's own ``Policy``
accepts: the key itself (``observation.images.top``, ``observation.state``), openpi's flat
``observation/<name>``, the nested ``images/<cam>`` (``{"images": {cam: ...}}``) and the bare
``<name>`` (``state``, a camera name), where ``<name>`` is the key without its
``observation.images.`` / ``observation.`` prefix. The lookup is ``vlastack.observation.find_key`` over
``camera_spellings`` (what ``parse_observation`` uses for vlastack's own ``Policy``). Images go
through ``vlastack.observation.image_to_chw_float``
(uint8 / 255, HWC or CHW, one channel repeated), at the checkpoint's own size: LeRobot does not
resize, so a frame of another size is an error, not a silent resize.

``embodiment_spec`` builds the EmbodimentSpec dict of ``metadata["embodiment"]`` from config.json's
features: one camera per VISUAL feature (named without the ``observation.images.`` prefix, with
its height and width), state and action sizes (dimension names ``state_<i>`` / ``action_<i>``,
with ``extra.names_unknown`` so that ``EmbodimentSpec.differences`` does not compare them:
LeRobot's config does not store joint names), action kind ``absolute`` (LeRobot's ACT and Diffusion
Policy predict absolute targets), and ``control_hz`` from config.json or train_config.json
(``fps``, ``env.fps``, ``dataset`` fps) when one is there, else ``DEFAULT_CONTROL_HZ`` (30 Hz,
the usual LeRobot dataset rate; ``extra.control_hz_source`` says which).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.observation import TASK_KEY, camera_spellings, find_key
from vlastack.pretrained.lerobot.folder import Feature

IMAGE_PREFIX = "observation.images."
DEFAULT_CONTROL_HZ = 30.0
ROBOT_TYPE = "lerobot"


def short_name(key: str) -> str:
    """``observation.images.top`` -> ``top``; ``observation.state`` -> ``state``."""
    for prefix in (IMAGE_PREFIX, "observation."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def spellings(key: str, image: bool) -> list[str]:
    """The keys a client may send ``key`` under, most specific first."""
    name = short_name(key)
    if image:
        return camera_spellings(name)
    return list(dict.fromkeys([key, f"observation/{name}", name]))


def find_input(obs: Mapping[str, Any], key: str, image: bool) -> Any:
    """The value of LeRobot input ``key`` in ``obs`` under any accepted spelling; None if
    absent."""
    return find_key(obs, spellings(key, image))


def example_observation(
    shapes: Mapping[str, tuple[int, ...]], image_keys: set[str], seed: int = 0
) -> dict[str, Any]:
    """A random observation in LeRobot keys with the checkpoint's shapes: uint8 HWC frames, a
    float32 state (for ``vlastack bench latency`` and the server's thread timing)."""
    rng = np.random.default_rng(seed)
    obs: dict[str, Any] = {}
    for key, shape in shapes.items():
        if key in image_keys:
            c, h, w = shape
            obs[key] = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        else:
            obs[key] = rng.normal(size=shape).astype(np.float32)
    obs["task"] = "pick up the object"
    return obs


def control_hz(folder: Path, cfg: Mapping[str, Any]) -> tuple[float, str]:
    """(rate, where it came from) for a checkpoint folder."""
    candidates: list[tuple[Any, str]] = [(cfg.get("fps"), "config.json fps")]
    train = folder / "train_config.json"
    if train.is_file():
        try:
            t = json.loads(train.read_text())
        except (OSError, ValueError):
            t = {}
        if isinstance(t, dict):
            env: dict[str, Any] = t["env"] if isinstance(t.get("env"), dict) else {}
            ds: dict[str, Any] = t["dataset"] if isinstance(t.get("dataset"), dict) else {}
            candidates += [
                (t.get("fps"), "train_config.json fps"),
                (env.get("fps"), "train_config.json env.fps"),
                (ds.get("fps"), "train_config.json dataset.fps"),
            ]
    for value, source in candidates:
        if isinstance(value, (int, float)) and value > 0:
            return float(value), source
    return DEFAULT_CONTROL_HZ, "default: the checkpoint names no fps"


def embodiment_spec(
    folder: Path,
    cfg: Mapping[str, Any],
    inputs: list[Feature],
    outputs: list[Feature],
    policy_type: str,
) -> dict[str, Any] | None:
    """The EmbodimentSpec dict (see the module docstring); None when the checkpoint reads no
    state (an EmbodimentSpec needs one)."""
    from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec

    state = [f for f in inputs if f.type == "STATE"]
    action = [f for f in outputs if f.type == "ACTION"]
    if not state or not action:
        return None
    hz, source = control_hz(folder, cfg)
    cameras = [
        CameraSpec(short_name(f.key), int(f.shape[1]), int(f.shape[2]), int(f.shape[0]))
        for f in inputs
        if f.type == "VISUAL" and len(f.shape) == 3
    ]
    spec = EmbodimentSpec(
        robot_type=str(cfg.get("robot_type") or f"{ROBOT_TYPE}_{policy_type}"),
        cameras=cameras,
        state=VectorSpec([f"state_{i}" for i in range(state[0].shape[0])]),
        action=VectorSpec([f"action_{i}" for i in range(action[0].shape[0])], kind="absolute"),
        control_hz=hz,
        description=f"from the LeRobot {policy_type} checkpoint's config.json features",
        # names_unknown: state_<i>/action_<i> are placeholders, so the environment check
        # compares sizes, kinds and cameras only
        extra={"control_hz_source": source, "source": str(folder), "names_unknown": True},
    )
    spec.validate(str(folder))
    return spec.to_dict()


def task_text(obs: Mapping[str, Any], key: str = TASK_KEY) -> str:
    """The instruction of one observation (``task`` or ``prompt``: str, bytes or a one-element
    array). Absent: ``""``, what LeRobot 0.6.1's ``lerobot_eval`` sends for an environment with
    no task description (``observation["task"] = [""] * env.num_envs``); the newline step then
    makes it ``"\\n"``."""
    value = find_key(obs, list(dict.fromkeys([key, TASK_KEY, "prompt"])))
    if value is None:
        return ""
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else str(value)
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        raise ConfigError(
            f"observation {key!r} must be the instruction as a string, got "
            f"{type(value).__name__}; {key!r} must be a string, bytes or a one-element array"
        )
    return value
