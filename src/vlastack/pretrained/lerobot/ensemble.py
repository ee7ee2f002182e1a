"""ACT's temporal ensembling as LeRobot 0.6.1 runs it (``ACTTemporalEnsembler`` in
``policies/act/modeling_act.py``, used by ``ACTPolicy.select_action`` when config.json sets
``temporal_ensemble_coeff``): a chunk is predicted every control step; the action for a step is
the average of every prediction made for it, oldest first, with weights ``exp(-coeff * i)``.

It is kept online in float32 exactly as LeRobot keeps it, so the actions agree to rounding:
the running averages of the steps still ahead (B, n, A) and their counts (n, 1); each new chunk
rescales the averages by ``cumsum(w)[count - 1]``, adds ``chunk[:, :-1] * w[count]``, divides by
``cumsum(w)[count]``, appends the chunk's last action (count 1) and pops the first step. The
actions are normalized (LeRobot ensembles before its postprocessor unnormalizes).

(``vlastack.serving.runtime.TemporalEnsembler`` is the same formula in float64 NumPy for native
policies; this one follows LeRobot's arithmetic.)
"""

from __future__ import annotations

import torch


class LeRobotTemporalEnsembler:
    def __init__(self, coeff: float, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.weights = torch.exp(-coeff * torch.arange(chunk_size))
        self.weights_cumsum = torch.cumsum(self.weights, dim=0)
        self.reset()

    def reset(self) -> None:
        self.averages: torch.Tensor | None = None  # (B, steps ahead, A)
        self.counts: torch.Tensor | None = None  # (steps ahead, 1) long

    def update(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add the (B, chunk_size, A) chunk predicted at this step; return (B, A), the step's
        ensembled action, and advance one step."""
        w = self.weights.to(chunk.device)
        cw = self.weights_cumsum.to(chunk.device)
        if self.averages is None or self.counts is None:
            self.averages = chunk.clone()
            self.counts = torch.ones((self.chunk_size, 1), dtype=torch.long, device=chunk.device)
        else:
            if self.averages.shape[0] != chunk.shape[0]:
                raise ValueError(
                    f"temporal ensembling got a batch of {chunk.shape[0]} after "
                    f"{self.averages.shape[0]}: call reset() between episodes of different sizes"
                )
            avg = self.averages * cw[self.counts - 1]
            avg = avg + chunk[:, :-1] * w[self.counts]
            avg = avg / cw[self.counts]
            self.counts = torch.clamp(self.counts + 1, max=self.chunk_size)
            self.averages = torch.cat([avg, chunk[:, -1:]], dim=1)
            self.counts = torch.cat([self.counts, torch.ones_like(self.counts[-1:])])
        action = self.averages[:, 0]
        self.averages, self.counts = self.averages[:, 1:], self.counts[1:]
        return action
