"""System 2 / System 1: a slow high level that names the subtask, a fast low level that acts on it.

RT-H (Belkhale et al. 2024, arXiv 2403.01823) generalized to two rates, as π0.5 (arXiv 2504.16054)
splits a high-level subtask prediction from low-level action generation and GR00T N1 / Helix run a
slow VLM beside a fast policy. In a ``VLA`` with ``hierarchy=True``:

- **System 2 (high level)**: the language backbone (the decoder LM over [image tokens, instruction,
  state], or the trunk) pooled over its valid tokens → a classifier over the subtask vocabulary.
  The vocabulary is RT-H's language motions ("move arm forward", "close gripper", "stop", ...),
  labelled automatically from each training window's action chunk (``label_motions``): every
  dataset has them. It runs at a low rate (``VLA.predict_subtasks``).
- **System 1 (low level)**: the action head reading the tokens *before* the backbone (projected
  image tokens, instruction embeddings, state) plus one embedding token of the subtask. It skips
  the backbone, so a tick costs the vision encoder and the head; it runs every tick with the
  latest subtask (``batch["subtask"]``), teacher-forced with the window's own label in training.

The rates live above the model: ``serving/hierarchy.py`` (the runtime and the server).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.models.common import masked_mean
from vlastack.models.language.language_motion import label_motions, motion_vocabulary

SUBTASK_KEY = "subtask"  # batch / observation key of the subtask the low level acts on


class SubtaskHierarchy(nn.Module):
    """The subtask classifier (System 2's output) and the subtask embedding (System 1's input)."""

    def __init__(
        self, width: int, action_dim: int, gripper_index: int | None, threshold: float
    ) -> None:
        super().__init__()
        self.vocab = motion_vocabulary(action_dim, gripper_index)
        self.index = {name: i for i, name in enumerate(self.vocab)}
        self.gripper_index = gripper_index
        self.threshold = float(threshold)
        self.classifier = nn.Linear(width, len(self.vocab))
        self.embed = nn.Embedding(len(self.vocab), width)

    def labels(self, actions: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
        """(B,) subtask ids of the windows' action chunks (normalized units)."""
        names = label_motions(actions, self.threshold, self.gripper_index, action_is_pad)
        return torch.tensor([self.index[n] for n in names], device=actions.device)

    def logits(self, backbone_out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(masked_mean(backbone_out, mask))

    def loss(
        self, backbone_out: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return F.cross_entropy(self.logits(backbone_out, mask), labels, reduction="none")

    def predict(self, backbone_out: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [self.vocab[i] for i in self.logits(backbone_out, mask).argmax(-1).tolist()]

    def ids(self, subtasks: Sequence[str], B: int, device: torch.device) -> torch.Tensor:
        """Subtask names → ids; a name outside the vocabulary is an error that lists it."""
        names = [subtasks] * B if isinstance(subtasks, str) else list(subtasks)
        if len(names) != B:
            raise ConfigError(f"'{SUBTASK_KEY}' has {len(names)} entries for batch size {B}")
        bad = [n for n in names if n not in self.index]
        if bad:
            raise ConfigError(
                f"'{SUBTASK_KEY}' {bad[0]!r} is not one this policy knows; its subtasks are "
                f"{self.vocab}"
            )
        return torch.tensor([self.index[n] for n in names], device=device)

    def low_level_context(
        self, tokens: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """System 1's context: the pre-backbone tokens + one subtask token."""
        tok = self.embed(ids).unsqueeze(1).to(tokens.dtype)
        return torch.cat([tokens, tok], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
