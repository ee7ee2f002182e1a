"""A LeRobot ACT ``pretrained_model`` folder as a vlastack policy: ``infer(obs) -> {"actions":
(H, A)}`` in dataset units, ``reset()``, ``metadata``; the loader registered as the
``lerobot_act`` checkpoint format (``vlastack.policy_formats``). The observation parsing
(``observation_tensor``, ``preprocess_observations``) and the processor reading
(``read_processors``) here are shared with ``diffusion_policy``.

The observation uses LeRobot's keys (config.json ``input_features``, after the preprocessor's
``rename_map``) or any client spelling vlastack's ``Policy`` accepts (``observation/<cam>``,
``images/<cam>``, ``state``: ``observation.find_input``): each camera a uint8 HWC frame (divided by 255 and made CHW, as LeRobot's
``prepare_observation_for_inference``) or a float image already in [0, 1], CHW or HWC; the
state a float vector. ``infer`` then runs what LeRobot runs: the preprocessor's normalizer,
``ACTPolicy.predict_action_chunk`` (``chunk_size`` steps, zero VAE latent) and the
postprocessor's unnormalizer over the whole chunk. ``metadata["execute_horizon"]`` is
``n_action_steps`` (how many actions LeRobot's ``select_action`` executes per chunk). With
``temporal_ensemble_coeff`` set (LeRobot then requires ``n_action_steps`` 1), ``infer`` is
LeRobot's ``select_action``: one call per control step, a new chunk each time, and the step's
temporally ensembled action back, (1, A) (``ensemble.LeRobotTemporalEnsembler``; ``reset``
clears it).

Verified against the golden tensors of ``shared/fixtures/lerobot_policies/act`` (LeRobot 0.6.1):
the preprocessed tensors bit-exactly, the normalized and final chunks of 3 observations within
the fixture's fresh-process tolerance (tests/test_pretrained_lerobot_act.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot import legacy
from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec, load_act_network
from vlastack.pretrained.lerobot.ensemble import LeRobotTemporalEnsembler
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer
from vlastack.pretrained.lerobot.observation import (
    embodiment_spec,
    example_observation,
    find_input,
    spellings,
)
from vlastack.pretrained.lerobot.session import LeRobotSession, SessionInfer, check_sessions

FORMAT_NAME = "lerobot_act"


def _normalizer(path: Path, filename: str, steps: list[lf.Step]) -> FeatureNormalizer | None:
    found = [s for s in steps if s.name in lf.NORMALIZER_STEPS]
    if len(found) > 1:
        raise ConfigError(f"{path / filename} has {len(found)} normalizer steps; expected one")
    if not found:
        return None
    step = found[0]
    stats = lf.read_stats(path, step.state_file) if step.state_file else {}
    return FeatureNormalizer.from_step(step, stats)


def observation_tensor(key: str, value: Any, image: bool, want: tuple[int, ...]) -> torch.Tensor:
    """One observation entry as LeRobot's ``prepare_observation_for_inference`` makes it (without
    the batch dimension): images through ``vlastack.policy.image_to_chw_float`` at their own
    size (uint8 / 255 as float32, HWC or CHW), which must be the checkpoint's; floats as given."""
    from vlastack.observation import ObservationError, image_to_chw_float

    arr = np.array(value)  # a copy: served frames are read-only views of the request
    if image:
        if arr.ndim != 3:
            raise ConfigError(
                f"{key}: shape {tuple(arr.shape)} does not fit the checkpoint's {want} "
                "(CHW; HWC uint8 frames are accepted too)"
            )
        # the frame's own H, W (image_to_chw_float's HWC rule), so nothing is resized
        hwc = arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3)
        hw = arr.shape[:2] if hwc else arr.shape[1:]
        try:
            t = image_to_chw_float(arr, key, (int(hw[0]), int(hw[1])))
        except ObservationError as exc:
            raise ConfigError(str(exc)) from None
    else:
        t = torch.from_numpy(arr.astype(np.float32, copy=False)).reshape(-1)
    if tuple(t.shape) != want:
        raise ConfigError(
            f"{key}: shape {tuple(arr.shape)} does not fit the checkpoint's {want}"
            + (" (CHW; HWC uint8 frames are accepted too; frames are not resized)" if image else "")
        )
    return t


def preprocess_observations(
    observations: Sequence[Mapping[str, Any]],
    shapes: Mapping[str, tuple[int, ...]],
    image_keys: set[str],
    rename_map: Mapping[str, str],
    normalizer: FeatureNormalizer | None,
    device: torch.device,
    policy_name: str,
) -> dict[str, torch.Tensor]:
    """Observations -> ``{key: (B, ...)}`` normalized as LeRobot's preprocessor (rename, batch,
    normalize) leaves them; ``shapes`` lists the inputs read. Each input is found under LeRobot's
    key or any client spelling ``observation.find_input`` accepts."""
    renamed = [{rename_map.get(k, k): v for k, v in o.items()} for o in observations]
    out: dict[str, torch.Tensor] = {}
    for key, want in shapes.items():
        rows = []
        for o in renamed:
            value = find_input(o, key, key in image_keys)
            if value is None:
                also = " / ".join(repr(s) for s in spellings(key, key in image_keys)[1:])
                raise ConfigError(
                    f"observation has no {key!r} (nor {also}); this LeRobot {policy_name} "
                    f"checkpoint reads {', '.join(shapes)} (got {', '.join(map(str, o))})"
                )
            rows.append(observation_tensor(key, value, key in image_keys, tuple(want)))
        x = torch.stack(rows).to(device)
        out[key] = normalizer.normalize(key, x) if normalizer else x
    return out


@dataclass
class Processors:
    """What the processor pipelines do at inference: rename keys, normalize inputs,
    unnormalize the action."""

    rename_map: dict[str, str]
    normalizer: FeatureNormalizer | None
    unnormalizer: FeatureNormalizer | None

    def postprocess(self, action_key: str, chunk: torch.Tensor) -> torch.Tensor:
        """The postprocessor: ``chunk`` back in dataset units (as it is without one)."""
        un = self.unnormalizer
        return chunk if un is None else un.unnormalize(action_key, chunk)


def legacy_processors(path: Path, cfg: dict[str, Any]) -> Processors:
    """The processors LeRobot's converter would write for the pre-0.4 folder ``path``
    (``legacy``): a normalizer over input and output features, an unnormalizer over the output
    features, config.json's ``normalization_mapping``, eps 1e-8, no rename."""
    from safetensors import safe_open

    inputs = lf.read_features(cfg, "input_features")
    outputs = lf.read_features(cfg, "output_features")
    file = path / lf.WEIGHTS
    with safe_open(str(file), framework="pt") as f:
        buffers = {k: f.get_tensor(k) for k in f.keys() if legacy.stat_prefix(k)}  # noqa: SIM118
    if not buffers:
        raise ConfigError(f"{path} {legacy.MISSING_STATS}")
    features = [f.key for f in (*inputs, *outputs)]
    stats = {
        k: {s: t.to(torch.float32) for s, t in v.items()}
        for k, v in legacy.extract_stats(buffers, features).items()
    }
    norm_map = cfg.get("normalization_mapping")
    if not isinstance(norm_map, dict):
        raise ConfigError(
            f"{path / lf.CONFIG} has no 'normalization_mapping' object; a LeRobot < 0.4 "
            "checkpoint needs it to read its stats buffers (LeRobot's converter needs it too)"
        )
    unknown = sorted(set(stats) - set(features))
    if unknown:
        raise ConfigError(
            f"{file}: stats buffers for {', '.join(unknown)}, which config.json's "
            "input_features/output_features do not list; the config and weights do not match"
        )
    out_keys = {f.key for f in outputs}
    return Processors(
        {},
        FeatureNormalizer(
            {f.key: f.type for f in (*inputs, *outputs)}, dict(norm_map), stats, legacy.DEFAULT_EPS
        ),
        FeatureNormalizer(
            {f.key: f.type for f in outputs},
            dict(norm_map),
            {k: v for k, v in stats.items() if k in out_keys},
            legacy.DEFAULT_EPS,
        ),
    )


def read_processors(path: Path, cfg: dict[str, Any] | None = None) -> Processors:
    """policy_preprocessor.json (+ policy_postprocessor.json when present) and their stats; a
    step this loader does not implement is a ConfigError naming it. A folder without
    policy_preprocessor.json is a LeRobot < 0.4 checkpoint: its stats buffers in
    model.safetensors give the processors (``legacy``; ``cfg`` is its config.json)."""
    if not (Path(path) / lf.PREPROCESSOR).is_file():
        config = cfg if cfg is not None else lf.read_json(Path(path) / lf.CONFIG)
        return legacy_processors(Path(path), config)
    pre = lf.read_pipeline(path, lf.PREPROCESSOR)
    known = (lf.RENAME_STEP, *lf.PASSIVE_STEPS, *lf.NORMALIZER_STEPS)
    lf.check_steps(path, lf.PREPROCESSOR, pre, known)
    post: list[lf.Step] = []
    if (path / lf.POSTPROCESSOR).is_file():
        post = lf.read_pipeline(path, lf.POSTPROCESSOR)
        lf.check_steps(path, lf.POSTPROCESSOR, post, known)
    rename: dict[str, str] = {}
    for step in pre:
        if step.name == lf.RENAME_STEP:
            rename.update(step.config.get("rename_map") or {})
    return Processors(
        rename, _normalizer(path, lf.PREPROCESSOR, pre), _normalizer(path, lf.POSTPROCESSOR, post)
    )


def default_device(device: str | torch.device | None) -> str | torch.device:
    """``device``, or when None the GPU if there is one and the CPU otherwise (every LeRobot
    loader's default)."""
    return device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")


def no_embodiment(path: Path, embodiment: str | None) -> None:
    if embodiment is not None:
        raise ConfigError(
            f"{path} is a single-robot LeRobot checkpoint; embodiment={embodiment!r} selects a "
            "mixture member, which it has none of: drop --embodiment"
        )


class LeRobotACTPolicy(SessionInfer):
    """LeRobot ACT checkpoint with the vlastack policy contract (see the module docstring)."""

    def __init__(
        self,
        network: ACTNetwork,
        spec: ACTSpec,
        *,
        normalizer: FeatureNormalizer | None = None,
        unnormalizer: FeatureNormalizer | None = None,
        rename_map: Mapping[str, str] | None = None,
        checkpoint: str | None = None,
        embodiment: dict[str, Any] | None = None,
        folder_json: lf.FolderJSON | None = None,
    ) -> None:
        self.network = network.eval()
        self.folder_json = folder_json  # the source's JSON files, for ``write``
        self.spec = spec
        self.embodiment_dict = embodiment
        self.normalizer = normalizer
        self.unnormalizer = unnormalizer
        self.rename_map = dict(rename_map or {})
        self.checkpoint = checkpoint
        self.num_resets = 0
        self.quantization: dict[str, Any] | None = None  # set by quantize.load_lerobot_int8
        self._ensembled = spec.temporal_ensemble_coeff is not None
        self._session = self.new_session()  # the state of callers that pass no session

    def _make_ensembler(self) -> LeRobotTemporalEnsembler:
        coeff = self.spec.temporal_ensemble_coeff
        assert coeff is not None
        return LeRobotTemporalEnsembler(coeff, self.spec.chunk_size)

    def new_session(self) -> LeRobotSession:
        """One client's state (its temporal ensembler, when the checkpoint ensembles) for
        ``infer(obs, session=...)``; the server gives each connection one."""
        return LeRobotSession(self, ensembler=self._make_ensembler if self._ensembled else None)

    @property
    def ensembler(self) -> LeRobotTemporalEnsembler | None:
        """The default session's temporal ensembler (None: the checkpoint does not ensemble,
        or it was switched off by setting this to None)."""
        return self._session.ensembler if self._ensembled else None

    @ensembler.setter
    def ensembler(self, value: LeRobotTemporalEnsembler | None) -> None:
        if value is None:
            self._ensembled = False
        else:
            self._ensembled = True
            self._session.ensembler = value

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def input_keys(self) -> list[str]:
        s = self.spec
        return [*s.image_keys, *(k for k in (s.state_key, s.env_state_key) if k)]

    @property
    def metadata(self) -> dict[str, Any]:
        s = self.spec
        ensembled = self.ensembler is not None  # one ensembled action per infer call
        return {
            "policy": "lerobot/act",
            "format": FORMAT_NAME,
            "checkpoint": self.checkpoint,
            "action_horizon": 1 if ensembled else s.chunk_size,
            "execute_horizon": 1 if ensembled else s.n_action_steps,
            "obs_horizon": 1,
            "action_dim": s.action_dim,
            "state_dim": s.state_dim or 0,
            "cameras": list(s.image_keys),
            "image_size": list(s.image_shape[1:]) if s.image_shape else [],
            "observation_keys": self.input_keys,
            "temporal_ensemble_coeff": s.temporal_ensemble_coeff,
            "quantization": self.quantization,
            "embodiment": self.embodiment_dict,
        }

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.spec
        shapes = {k: tuple(s.image_shape or ()) for k in s.image_keys}
        if s.state_key:
            shapes[s.state_key] = (int(s.state_dim or 0),)
        if s.env_state_key:
            shapes[s.env_state_key] = (int(s.env_state_dim or 0),)
        return shapes

    def example_observation(self, seed: int = 0) -> dict[str, Any]:
        """A random observation of the checkpoint's shapes, in LeRobot keys."""
        return example_observation(self.input_shapes, set(self.spec.image_keys), seed)

    def reset(self) -> None:
        """Counted for the harness; clears the temporal ensemble when there is one (ACT keeps
        no other state between calls: n_obs_steps 1)."""
        self.num_resets += 1
        self._session.reset()

    # ---- the three LeRobot stages, usable one by one (the tests compare each) --------------
    def preprocess(self, observations: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Observations in LeRobot keys -> the batched, normalized tensors LeRobot's
        preprocessor gives ``predict_action_chunk``."""
        s = self.spec
        return preprocess_observations(
            observations,
            self.input_shapes,
            set(s.image_keys),
            self.rename_map,
            self.normalizer,
            self.device,
            "ACT",
        )

    @torch.inference_mode()
    def predict_normalized(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Preprocessed tensors -> (B, chunk_size, A) in normalized units."""
        s = self.spec
        images = [batch[k] for k in s.image_keys]
        state = batch[s.state_key] if s.state_key else None
        env = batch[s.env_state_key] if s.env_state_key else None
        return self.network.model(images, state, env)

    def postprocess(self, chunk: torch.Tensor) -> torch.Tensor:
        if self.unnormalizer is None:
            return chunk
        return self.unnormalizer.unnormalize(self.spec.action_key, chunk)

    # ---- policy contract --------------------------------------------------------------------
    def infer_batch(
        self,
        batch: list[Mapping[str, Any]],
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> list[dict[str, Any]]:
        """The chunks (B, chunk_size, A); with ``temporal_ensemble_coeff`` set, LeRobot's
        ``select_action``: each call is one control step of the batch's environments and gives
        their ensembled actions, (B, 1, A), from the default session's ensembler, or row i from
        ``sessions[i]``'s (one client each, as it would get alone)."""
        check_sessions(sessions, len(batch), self)
        with torch.inference_mode():
            chunk = self.predict_normalized(self.preprocess(batch))
            if self._ensembled and sessions is None:
                chunk = self._session.ensembler.update(chunk)[:, None]
            elif self._ensembled and sessions is not None:
                rows = [s.ensembler.update(chunk[i : i + 1]) for i, s in enumerate(sessions)]
                chunk = torch.cat(rows)[:, None]
            chunk = self.postprocess(chunk)
        arr = chunk.float().cpu().numpy()
        return [{"actions": a} for a in arr]


def load_lerobot_act(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
) -> LeRobotACTPolicy:
    """Load a LeRobot ACT ``pretrained_model`` folder (config.json, model.safetensors, processor
    JSON and stats). ``expect_embodiment`` is accepted for the format seam and left to the
    harness' check; ``embodiment`` (a mixture member) does not apply to LeRobot checkpoints."""
    del expect_embodiment
    path = Path(path)
    no_embodiment(path, embodiment)
    cfg = lf.read_config(path, "act")
    spec = ACTSpec.from_config(cfg)
    procs = read_processors(path, cfg)
    device = default_device(device)
    network = load_act_network(path, spec, device)
    return LeRobotACTPolicy(
        network,
        spec,
        normalizer=procs.normalizer,
        unnormalizer=procs.unnormalizer,
        rename_map=procs.rename_map,
        checkpoint=str(path),
        embodiment=folder_embodiment(path, cfg, "act"),
        folder_json=lf.read_folder_json(path, cfg),
    )


def folder_embodiment(path: Path, cfg: dict[str, Any], policy_type: str) -> dict[str, Any] | None:
    """``metadata["embodiment"]`` of a checkpoint folder (``observation.embodiment_spec``)."""
    return embodiment_spec(
        path,
        cfg,
        lf.read_features(cfg, "input_features"),
        lf.read_features(cfg, "output_features"),
        policy_type,
    )
