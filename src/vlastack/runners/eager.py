"""The ``eager`` runner: the modules themselves (identity). The reference every other runner is
compared with, and what runs on any device and under autograd."""

from __future__ import annotations

from torch import nn

from vlastack.runners.base import HeadFn, Runner


class EagerRunner(Runner):
    name = "eager"
    description = "the plain modules, as written (any device; the reference)"
    tolerance = (0.0, 0.0)

    def head(self, head: nn.Module) -> HeadFn:
        return head.sample_actions  # type: ignore[return-value]
