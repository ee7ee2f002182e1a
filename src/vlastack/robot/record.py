"""Record robot rollouts as a LeRobot v3 dataset (``data.writer.DatasetWriter``), ready to train on.

Per control tick (one frame per command sent): the robot's observation (cameras, state), the
command the robot received as ``action`` (what a policy trained on the rollout should imitate:
safety corrections included), the policy's raw action as ``action.policy`` (non-finite values
stored as 0, ``action.policy_valid`` False; also False on ticks with no action), and the safety
layer's interventions as ``safety.interventions`` (one 0/1 per kind of ``safety.KINDS``) and
``safety.hold``, and ``intervention`` (bool (1,), LeRobot 0.6.1's name for it in its
human-in-the-loop rollouts): True on the ticks a person drove through a teleoperator
(``intervention.TeleopIntervention``), whose command is then the ``action``. Episode rows carry ``success``, ``stopped`` and ``seed``. An existing dataset is
appended to (its features must match).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, DataError
from vlastack.robot.safety import HOLD_REASONS, KINDS


class RolloutRecorder:
    """``add(obs, command, raw_action, kinds, task, intervention=)`` per tick, ``save_episode(extra)`` per episode.

    The dataset is created on the first frame (image sizes come from the observations).
    ``use_videos=False`` stores PNG frames instead of video.
    """

    def __init__(self, root: str | Path, embodiment: EmbodimentSpec, *, use_videos: bool = True):
        self.root = Path(root)
        self.embodiment = embodiment
        self.use_videos = use_videos
        self.writer: Any = None
        self.episodes = 0

    def _features(self, obs: dict[str, Any]) -> dict[str, Any]:
        from vlastack.data.layout import Feature

        spec = self.embodiment
        feats: dict[str, Any] = {}
        for key in sorted(k for k in obs if k.startswith("observation.images.")):
            img = np.asarray(obs[key])
            shape = img.shape if img.ndim == 3 else (*img.shape, 1)
            kind = "video" if self.use_videos and shape[2] == 3 else "image"
            feats[key] = Feature(kind, shape, ["height", "width", "channels"])
        if "observation.state" in obs:
            n = int(np.asarray(obs["observation.state"]).size)
            names = list(spec.state.names) if spec.state.dim == n else None
            feats["observation.state"] = Feature("float32", (n,), names)
        a = list(spec.action.names)
        feats["action"] = Feature("float32", (len(a),), a)
        feats["action.policy"] = Feature("float32", (len(a),), a)
        feats["action.policy_valid"] = Feature("bool", (1,))
        feats["safety.interventions"] = Feature("int32", (len(KINDS),), list(KINDS))
        feats["safety.hold"] = Feature("bool", (1,))
        feats["intervention"] = Feature("bool", (1,))
        return feats

    def _open(self, obs: dict[str, Any]) -> None:
        try:
            from vlastack.data.writer import DatasetWriter
        except ImportError as exc:  # a simulator's own venv (ALOHA) lacks pyarrow / av
            raise ConfigError(
                f"recording needs {exc.name or 'pyarrow'}, which this Python environment lacks; "
                "record from vlastack's own environment, or drop --record"
            ) from None

        feats = self._features(obs)
        if (self.root / "meta" / "info.json").exists():
            self.writer = DatasetWriter.resume(self.root)
            have = {k: (f.dtype, tuple(f.shape)) for k, f in self.writer.features.items()}
            want = {k: (f.dtype, tuple(f.shape)) for k, f in feats.items()}
            if any(have.get(k) != v for k, v in want.items()):
                raise DataError(
                    f"{self.root} holds a dataset with other features ({sorted(have)}); record "
                    "this robot's rollouts into a new folder (--record DIR)"
                )
            return
        self.writer = DatasetWriter.create(
            self.root,
            fps=self.embodiment.control_hz,
            features=feats,
            robot_type=self.embodiment.robot_type,
            embodiment=self.embodiment,
            use_videos=self.use_videos,
        )

    def add(
        self,
        obs: dict[str, Any],
        command: np.ndarray,
        raw_action: np.ndarray | None,
        kinds: list[str],
        task: str,
        *,
        intervention: bool = False,
    ) -> None:
        if self.writer is None:
            self._open(obs)
        dim = len(self.embodiment.action.names)
        raw = np.zeros(dim) if raw_action is None else np.asarray(raw_action, np.float64).ravel()
        valid = raw_action is not None and raw.size == dim and bool(np.all(np.isfinite(raw)))
        if raw.size != dim:
            raw = np.zeros(dim)
        frame: dict[str, Any] = {
            k: np.asarray(obs[k]) for k in self.writer.user_keys if k.startswith("observation.")
        }
        frame["action"] = np.asarray(command, np.float32)
        frame["action.policy"] = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0).astype(
            np.float32
        )
        frame["action.policy_valid"] = np.array([valid])
        frame["safety.interventions"] = np.array([k in kinds for k in KINDS], np.int32)
        held = any(k in HOLD_REASONS for k in kinds) or (not valid and not intervention)
        frame["safety.hold"] = np.array([held])
        frame["intervention"] = np.array([bool(intervention)])
        self.writer.add_frame(frame, task=task)

    def save_episode(self, extra: dict[str, Any] | None = None) -> int | None:
        """Commit the buffered ticks as one episode (nothing when no tick was recorded)."""
        if self.writer is None or self.writer.episode_length == 0:
            return None
        ep = self.writer.save_episode(extra=extra)
        self.episodes += 1
        return int(ep) if isinstance(ep, int) else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.finalize()
