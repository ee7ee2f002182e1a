"""A LeRobot Diffusion Policy ``pretrained_model`` folder as a vlastack policy (``infer``,
``reset``, ``metadata``); the loader registered as the ``lerobot_diffusion`` checkpoint format.

Observations use LeRobot's keys or the client spellings of vlastack's ``Policy``, as for ACT (``policy.preprocess_observations``). ``infer``
keeps the last ``n_obs_steps`` preprocessed observations (after ``reset`` the first one is
repeated, as LeRobot's ``populate_queues`` does) and stacks them along dim 1, which is what
LeRobot's ``select_action`` gives ``predict_action_chunk``. LeRobot's ``select_action``
enqueues every control step's observation and predicts only when its action queue is empty, so
the chunk's history is the previous control step; a caller running the chunk step by step calls
``observe(obs)`` on the other steps to get the same (``serving.runtime.SyncRuntime`` and
``vlastack eval`` do; over the openpi protocol a client sends only the observations it wants a
chunk for, so a served Diffusion policy's history is the previous request's observation).
The history and the noise generator (seeded with ``seed`` at creation and on ``reset``; LeRobot
draws the DDPM step noise from the global RNG) are per session (``new_session()``,
``session.LeRobotSession``: one per server connection); ``infer_batch`` without sessions treats
each observation alone (its frame repeated). ``predict_normalized(..., noise=, step_noise=)``
takes recorded draws instead. The returned chunk is ``n_action_steps`` long, in dataset units.

Verified against ``shared/fixtures/lerobot_policies/diffusion`` (LeRobot 0.6.1): the
preprocessed tensors and the n_obs_steps stacks (``policy_input``) bit-exactly, the normalized
and final chunks of 3 observations with the recorded ``noise`` and ``ddpm_step_noise`` within
the fixture's fresh-process tolerance (tests/test_pretrained_lerobot_diffusion.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec
from vlastack.pretrained.lerobot.observation import example_observation
from vlastack.pretrained.lerobot.policy import (
    Processors,
    default_device,
    folder_embodiment,
    no_embodiment,
    preprocess_observations,
    read_processors,
)
from vlastack.pretrained.lerobot.session import (
    LeRobotSession,
    SessionInfer,
    check_sessions,
    draw_noise,
)
from vlastack.pretrained.lerobot.weights import load_strict

FORMAT_NAME = "lerobot_diffusion"


class LeRobotDiffusionPolicy(SessionInfer):
    """LeRobot Diffusion Policy checkpoint with the vlastack policy contract."""

    def __init__(
        self,
        network: DiffusionNetwork,
        spec: DiffusionSpec,
        processors: Processors,
        *,
        checkpoint: str | None = None,
        seed: int = 0,
        embodiment: dict[str, Any] | None = None,
        folder_json: lf.FolderJSON | None = None,
    ) -> None:
        self.embodiment_dict = embodiment
        self.folder_json = folder_json  # the source's JSON files, for ``write``
        self.network = network.eval()
        self.spec = spec
        self.processors = processors
        self.checkpoint = checkpoint
        self.seed = seed
        self.num_resets = 0
        self.quantization: dict[str, Any] | None = None  # set by quantize.load_lerobot_int8
        self._session = self.new_session()  # the state of callers that pass no session

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.spec
        shapes = {k: tuple(s.image_shape or ()) for k in s.image_keys}
        shapes[s.state_key] = (s.state_dim,)
        if s.env_state_key:
            shapes[s.env_state_key] = (int(s.env_state_dim or 0),)
        return shapes

    @property
    def metadata(self) -> dict[str, Any]:
        s = self.spec
        return {
            "policy": "lerobot/diffusion",
            "format": FORMAT_NAME,
            "checkpoint": self.checkpoint,
            "action_horizon": s.n_action_steps,
            "execute_horizon": s.n_action_steps,
            "obs_horizon": s.n_obs_steps,
            "action_dim": s.action_dim,
            "state_dim": s.state_dim,
            "cameras": list(s.image_keys),
            "image_size": list(s.image_shape[1:]) if s.image_shape else [],
            "observation_keys": list(self.input_shapes),
            "diffusion_steps": len(self.network.diffusion.sampler.timesteps),
            "seed": self.seed,
            "quantization": self.quantization,
            "embodiment": self.embodiment_dict,
        }

    def example_observation(self, seed: int = 0) -> dict[str, Any]:
        """A random observation of the checkpoint's shapes, in LeRobot keys."""
        return example_observation(self.input_shapes, set(self.spec.image_keys), seed)

    def new_session(self) -> LeRobotSession:
        """One client's state (its observation history and noise generator, seeded with
        ``seed``) for ``infer(obs, session=...)``; the server gives each connection one."""
        return LeRobotSession(self, seed=self.seed, history=self.spec.n_obs_steps)

    @property
    def _history(self) -> deque[dict[str, torch.Tensor]]:
        return self._session.history

    @property
    def _generator(self) -> torch.Generator | None:
        return self._session.generator

    def reset(self) -> None:
        """Forget the default session's observation history and reseed its sampler."""
        self.num_resets += 1
        self._session.reset()

    # ---- LeRobot's stages, usable one by one (the tests compare each) -----------------------
    def preprocess(self, observations: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        p = self.processors
        return preprocess_observations(
            observations,
            self.input_shapes,
            set(self.spec.image_keys),
            p.rename_map,
            p.normalizer,
            self.device,
            "Diffusion Policy",
        )

    def window(
        self, pre: dict[str, torch.Tensor], session: LeRobotSession | None = None
    ) -> dict[str, torch.Tensor]:
        """Append to ``session``'s history (default: the policy's) as LeRobot's
        ``populate_queues`` does (the first observation fills it); ``{key: (B, n_obs_steps,
        ...)}``, oldest first."""
        history = (session or self._session).history
        self._append(history, pre)
        return {k: torch.stack([h[k] for h in history], dim=1) for k in pre}

    def _append(
        self, history: deque[dict[str, torch.Tensor]], pre: dict[str, torch.Tensor]
    ) -> None:
        if not history:
            for _ in range(self.spec.n_obs_steps - 1):
                history.append(pre)
        history.append(pre)

    def observe(self, obs: Mapping[str, Any], *, session: LeRobotSession | None = None) -> None:
        """Record a control step's observation in ``session``'s history (default: the
        policy's) without computing a chunk. LeRobot's ``select_action`` enqueues every control
        step's observation and predicts a chunk only when its action queue is empty; a caller
        that executes a chunk step by step (``serving.runtime.SyncRuntime``, ``vlastack eval``)
        calls ``observe`` on the steps it does not call ``infer``, so that the chunk's history
        holds the previous control step, as LeRobot's does."""
        with torch.inference_mode():
            self._append((session or self._session).history, self.preprocess([obs]))

    def repeated(self, pre: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.spec.n_obs_steps
        return {k: torch.stack([v] * n, dim=1) for k, v in pre.items()}

    @torch.inference_mode()
    def predict_normalized(
        self,
        policy_input: Mapping[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        step_noise: torch.Tensor | None = None,
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> torch.Tensor:
        """``{key: (B, n_obs_steps, ...)}`` -> (B, n_action_steps, A), normalized units.
        The start noise and the DDPM step draws come from the default session's generator, or
        row i's from ``sessions[i]``."""
        s = self.spec
        model = self.network.diffusion
        state = policy_input[s.state_key]
        cond = model.global_condition(
            state,
            [policy_input[k] for k in s.image_keys],
            policy_input[s.env_state_key] if s.env_state_key else None,
        )
        shape = (state.shape[0], s.horizon, s.action_dim)
        gen = self._generator
        if noise is None:
            noise = draw_noise(shape, gen, sessions, state.device, state.dtype)

        def draw() -> torch.Tensor:
            return draw_noise(shape, gen, sessions, state.device, state.dtype)

        trajectory = model.sample(cond, noise.to(state.device), step_noise, draw)
        return model.chunk(trajectory)

    def postprocess(self, chunk: torch.Tensor) -> torch.Tensor:
        return self.processors.postprocess(self.spec.action_key, chunk)

    # ---- policy contract --------------------------------------------------------------------
    def infer_batch(
        self,
        batch: list[Mapping[str, Any]],
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> list[dict[str, Any]]:
        """Several observations in one model call. Without ``sessions`` each stands alone
        (its frame repeated ``n_obs_steps`` times; noise from the default generator); with
        them, observation i extends ``sessions[i]``'s history and draws its noise, as
        ``infer(obs, session=sessions[i])`` would. Histories change only once the whole batch
        succeeded."""
        check_sessions(sessions, len(batch), self)
        with torch.inference_mode():
            pre = self.preprocess(batch)
            if sessions is None:
                policy_input = self.repeated(pre)
            else:
                rows = [{k: v[i : i + 1] for k, v in pre.items()} for i in range(len(batch))]
                windows = [self._peek(s.history, r) for s, r in zip(sessions, rows)]
                policy_input = {k: torch.cat([w[k] for w in windows]) for k in pre}
            chunk = self.postprocess(self.predict_normalized(policy_input, sessions=sessions))
            for s, r in zip(sessions or [], rows if sessions is not None else []):
                self._append(s.history, r)
        return [{"actions": a} for a in chunk.float().cpu().numpy()]

    def _peek(
        self, history: deque[dict[str, torch.Tensor]], pre: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The window ``window`` would stack, without changing ``history``."""
        past = list(history) or [pre] * (self.spec.n_obs_steps - 1)
        steps = (past + [pre])[-self.spec.n_obs_steps :]
        return {k: torch.stack([h[k] for h in steps], dim=1) for k in pre}


def load_lerobot_diffusion(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
) -> LeRobotDiffusionPolicy:
    """Load a LeRobot Diffusion Policy ``pretrained_model`` folder."""
    del expect_embodiment
    path = Path(path)
    no_embodiment(path, embodiment)
    cfg = lf.read_config(path, "diffusion")
    spec = DiffusionSpec.from_config(cfg)
    procs = read_processors(path, cfg)
    device = default_device(device)
    network = load_strict(lambda: DiffusionNetwork(spec), path / lf.WEIGHTS, device)
    return LeRobotDiffusionPolicy(
        network,
        spec,
        procs,
        checkpoint=str(path),
        seed=seed,
        embodiment=folder_embodiment(path, cfg, "diffusion"),
        folder_json=lf.read_folder_json(path, cfg),
    )
