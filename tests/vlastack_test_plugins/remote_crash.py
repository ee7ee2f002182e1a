"""A served policy that kills its own process on chosen calls: worker deaths for the sharded
remote evaluation (``vlastack.evaluation.remote_sharded``) on the pool and on Ray.

Picklable and importable from worker processes (this package is on their PYTHONPATH). Calls are
counted across processes with one file per call in ``count_dir``, so a replaced worker goes on
counting where the dead one stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class DyingToyPolicy:
    """openpi ALOHA-style ``ToyPolicy`` whose ``n``-th call overall (1-based) for ``n`` in
    ``die_on`` ends its process with ``os._exit(3)`` before answering."""

    def __init__(self, count_dir: str | Path, die_on: tuple[int, ...], action_horizon: int = 50):
        self.count_dir = str(count_dir)
        self.die_on = tuple(die_on)
        self.action_horizon = action_horizon
        self._inner: Any = None

    def _toy(self) -> Any:
        if self._inner is None:
            from vlastack.serving.toy import ToyPolicy

            self._inner = ToyPolicy("aloha", action_horizon=self.action_horizon)
        return self._inner

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._toy().metadata)

    def reset(self) -> None:
        self._toy().reset()

    def _next_call(self) -> int:
        n = 1
        while True:
            try:
                fd = os.open(Path(self.count_dir) / f"call-{n}", os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                n += 1
                continue
            os.close(fd)
            return n

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        if self._next_call() in self.die_on:
            os._exit(3)
        return dict(self._toy().infer(obs))
