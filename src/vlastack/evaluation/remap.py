"""A policy built for one robot on an environment of another: the mismatch, explained or remapped.

``vlastack eval`` refuses a checkpoint whose embodiment differs from the environment's with
``mismatch_message``; with ``--action-remap pad`` a ``Remap`` zero-pads/truncates actions and
state to the other side's sizes instead (results are then not comparable, the manifest says so).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec


def mismatch_message(
    policy_emb: EmbodimentSpec,
    env_emb: EmbodimentSpec,
    task: str,
    note: str = "",
) -> str:
    """``note`` (ending in a space) says which mixture member was tried and why."""
    diffs = policy_emb.differences(env_emb)
    return (
        f"the checkpoint's embodiment ({policy_emb.robot_type}) does not match environment "
        f"{task!r} ({env_emb.robot_type}): "
        + "; ".join(f"policy {d} env" for d in diffs)
        + ". "
        + note
        + "Evaluate on an environment of the robot it was trained on, or pass --action-remap pad "
        "(alias --allow-mismatch) to zero-pad/truncate actions and state to the environment's "
        "sizes (a warning is logged and the manifest records it; results are then not comparable)."
    )


class Remap:
    """Zero-pad/truncate action (policy A → env A) and state (env S → policy S), rename camera."""

    def __init__(self, policy_emb: EmbodimentSpec, env_emb: EmbodimentSpec) -> None:
        self.action_dim = env_emb.action.dim
        self.state_dim = policy_emb.state.dim
        self.camera_rename: dict[str, str] = {}
        pol_cams = [c.key for c in policy_emb.cameras]
        env_cams = [c.key for c in env_emb.cameras]
        if len(pol_cams) == 1 and len(env_cams) == 1 and pol_cams != env_cams:
            self.camera_rename = {env_cams[0]: pol_cams[0]}

    def obs(self, obs: dict[str, Any]) -> dict[str, Any]:
        out = {self.camera_rename.get(k, k): v for k, v in obs.items()}
        s = np.asarray(out.get("observation.state", np.zeros(0)), dtype=np.float32)
        out["observation.state"] = fit_last_axis(s, self.state_dim)
        return out

    def actions(self, chunk: np.ndarray) -> np.ndarray:
        return fit_last_axis(chunk, self.action_dim)


def fit_last_axis(x: np.ndarray, dim: int) -> np.ndarray:
    """Truncate or zero-pad the last axis to ``dim``."""
    if x.shape[-1] >= dim:
        return x[..., :dim]
    out = np.zeros((*x.shape[:-1], dim), dtype=x.dtype)
    out[..., : x.shape[-1]] = x
    return out


__all__ = ["Remap", "fit_last_axis", "mismatch_message"]
