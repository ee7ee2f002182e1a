"""Real-time chunking for the imported flow policies (SmolVLA, pi0, pi0.5): what their
``infer_guided`` shares. The math is ``functional.rtc`` (the soft prefix mask
``prefix_weights`` and ``guided_euler_sample``, the one copy vlastack's own flow head uses);
this module only lays the committed actions out as the networks' padded action tensors.

``prev_actions`` (L, A) are the previous chunk's not-yet-executed actions in dataset units,
``prev_actions[0]`` aligned with this observation's tick (``serving.runtime.GuidedChunkPolicy``).
The policy maps them back through its postprocessor's inverse (normalize; pi0's relative actions
minus the state first) and ``guidance`` pads them to the network's ``max_action_dim``: the
target is 0 and the weight 0 on the padded dims and after step L, so guidance acts on the real
action dims of the committed steps only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlastack.errors import ConfigError
from vlastack.functional.rtc import prefix_weights


def check_prev_actions(prev_actions: Any, action_dim: int, policy: str) -> np.ndarray:
    """``prev_actions`` as float32 (L, action_dim); a ConfigError naming the shape otherwise."""
    prev = np.asarray(prev_actions, dtype=np.float32)
    if prev.size == 0:
        return np.zeros((0, action_dim), dtype=np.float32)
    if prev.ndim != 2 or prev.shape[1] != action_dim:
        raise ConfigError(
            f"{policy} infer_guided: prev_actions must have shape (L, {action_dim}) (the previous "
            f"chunk's not-yet-executed actions, dataset units), got {prev.shape}"
        )
    return prev


def guidance(
    prev_normalized: torch.Tensor,
    inference_delay: int,
    horizon: int,
    width: int,
    schedule: str = "exp",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, weights), each (1, horizon, width): the L committed normalized actions (L, A)
    in the first L steps and A dims of ``target``; ``weights`` = ``prefix_weights(d, L,
    horizon, schedule)`` over those dims (1 on the first ``d = min(inference_delay, L)``
    steps, decaying to 0 at L), 0 elsewhere."""
    steps, dims = prev_normalized.shape
    L = min(steps, horizon)
    device = prev_normalized.device
    target = torch.zeros(1, horizon, width, device=device)
    target[0, :L, :dims] = prev_normalized[:L].to(torch.float32)
    d = max(0, min(int(inference_delay), L))
    w = torch.as_tensor(prefix_weights(d, L, horizon, schedule), dtype=torch.float32)
    weights = torch.zeros(1, horizon, width, device=device)
    weights[0, :, :dims] = w.to(device)[:, None]
    return target, weights


__all__ = ["check_prev_actions", "guidance"]
