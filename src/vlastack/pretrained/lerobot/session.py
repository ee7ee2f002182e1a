"""One client's state for an imported LeRobot policy (``policy.new_session()``), as
``vlastack.policy.PolicySession`` is for native checkpoints.

What LeRobot keeps between ``select_action`` calls lives here, one copy per client, so that a
server with several robots (one session per connection, ``serving.server``) gives each the actions
it would get alone: the sampler's noise generator (SmolVLA, pi0, pi0.5, Diffusion; seeded with the
policy's ``seed`` at creation and on ``reset``), the observation history (Diffusion's
``n_obs_steps`` preprocessed observations, LeRobot's ``populate_queues``) and the temporal
ensembler (ACT with ``temporal_ensemble_coeff``). The policy keeps one default session for
callers that pass none (``infer(obs)``, ``reset()``).

``draw_noise`` draws a batch's sampler noise: from one generator for a batch without sessions
(as before sessions existed), or row by row from each session's own generator
(``functional.noise.RowGenerators``, as native policies batch their clients), so a row's noise
is what that client would have drawn alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from vlastack.functional.noise import RowGenerators, randn


class LeRobotSession:
    """One client's generator, observation history and ensembler (module docstring)."""

    def __init__(
        self,
        policy: Any,
        *,
        seed: int | None = None,
        history: int = 0,
        ensembler: Callable[[], Any] | None = None,
    ) -> None:
        self.policy = policy
        self.seed = seed
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=policy.device).manual_seed(seed)
        self.history: deque[dict[str, torch.Tensor]] = deque(maxlen=max(1, history))
        self.ensembler: Any = ensembler() if ensembler is not None else None

    def reset(self) -> None:
        """A new episode: empty history, fresh ensembler, the generator reseeded."""
        self.history.clear()
        if self.ensembler is not None:
            self.ensembler.reset()
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed)

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        return self.policy.infer(obs, session=self)  # type: ignore[no-any-return]

    def observe(self, obs: Mapping[str, Any]) -> None:
        """Record a control step's observation without computing a chunk (policies with an
        observation history: ``LeRobotDiffusionPolicy.observe``)."""
        self.policy.observe(obs, session=self)


class SessionInfer:
    """The policy contract's ``infer(obs, session=None)`` for an imported policy: one observation
    through its ``infer_batch`` with that client's session (default: the policy's own
    ``_session``, made by its ``new_session()``)."""

    _session: LeRobotSession

    if TYPE_CHECKING:

        def infer_batch(
            self,
            batch: list[Mapping[str, Any]],
            *,
            sessions: Sequence[LeRobotSession] | None = None,
        ) -> list[dict[str, Any]]: ...

    def infer(
        self, obs: Mapping[str, Any], *, session: LeRobotSession | None = None
    ) -> dict[str, Any]:
        """One chunk (ACT: the ensembled action) from ``session``'s noise, history and
        ensembler (default: the policy's own)."""
        return self.infer_batch([obs], sessions=[session or self._session])[0]


def draw_noise(
    shape: Sequence[int],
    generator: torch.Generator | None,
    sessions: Sequence[LeRobotSession] | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, 1) of ``shape`` (B, ...): from ``generator`` when ``sessions`` is None, else row i
    from ``sessions[i].generator`` (its own (1, ...) draw)."""
    if sessions is None:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    if len(sessions) != shape[0]:
        raise ValueError(f"{len(sessions)} sessions for a batch of {shape[0]}")
    return randn(tuple(shape), RowGenerators([s.generator for s in sessions]), device, dtype)


def check_sessions(sessions: Sequence[Any] | None, n: int, policy: Any) -> None:
    """Each of ``sessions`` must be one of ``policy``'s, one per observation."""
    if sessions is None:
        return
    if len(sessions) != n:
        raise ValueError(f"{len(sessions)} sessions for {n} observations")
    for s in sessions:
        if not isinstance(s, LeRobotSession) or s.policy is not policy:
            raise ValueError(
                f"session {s!r} does not belong to this policy; make it with policy.new_session()"
            )
