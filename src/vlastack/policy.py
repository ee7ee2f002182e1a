"""Policy: a trained VLA plus its normalization, device and observation history, in numpy.

``Policy.infer(obs) -> {"actions": (H, A)}`` is what simulators, the evaluation harness and the
policy server call. It owns everything between raw robot observations and raw robot actions:
image layout and size, observation history, normalization of state, un-normalization of actions.
The model (``models/vla.py``) only ever sees normalized tensors; the server only sees ``Policy``.

Data path of a call: ``parse`` (any client spelling -> ``observation.Observation``, the one place
key spellings and image layout are resolved) -> history window -> ``batch`` (model keys) ->
``predict`` (normalize -> sample -> unnormalize, the one copy; ``infer_guided`` swaps in the
model's guided sampler). ``load_vla`` is the one place a checkpoint's model is built.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from vlastack.batch import STATE, TASK, Batch, as_batch, image_key
from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, DataError, NonFiniteActionError
from vlastack.functional.noise import RowGenerators
from vlastack.models.hierarchy import SUBTASK_KEY
from vlastack.observation import (
    DEFAULT_MAX_PROMPT_CHARS,
    Observation,
    ObservationError,
    image_to_chw_float,
    observation_batch,
    parse_observation,
)
from vlastack.profiling import stage
from vlastack.runners import structure_key, use_runner

if TYPE_CHECKING:
    from vlastack.data.normalization import Normalizer


log = logging.getLogger(__name__)


class UnknownEmbodimentError(ConfigError, DataError):
    """``embodiment=NAME`` names no member of a mixture checkpoint (a config mistake; also a
    DataError, the type ``Checkpoint.select_embodiment`` raises, for callers catching that)."""


def load_vla(
    path: str | Path, *, expect_embodiment: EmbodimentSpec | None = None
) -> tuple[Any, Any]:
    """(Checkpoint, its VLA with the weights loaded, in eval mode): the one place a checkpoint's
    model is built (``Policy.from_checkpoint``, ``export.quantize``, ``export.onnx``). Every key
    the model has must be in the weights file and no other: anything else is another
    architecture. Quantized checkpoints come back with their stored (float) weights."""
    from vlastack.checkpoints import load_checkpoint
    from vlastack.models.vla import VLAConfig, build_vla

    ckpt = load_checkpoint(path, expect_embodiment=expect_embodiment)
    model_d = ckpt.config.get("model")
    if not isinstance(model_d, Mapping):
        raise DataError(f"{ckpt.path}/config.json has no 'model' section; not a VLA checkpoint")
    model = build_vla(VLAConfig.from_dict(model_d))
    # MiniLM lives outside the module tree (reloaded from its package), so every key the
    # model has must be in the file: anything else means another architecture.
    missing, unexpected = model.load_state_dict(ckpt.weights, strict=False)
    if missing or unexpected:
        raise DataError(
            f"{ckpt.path}/model.safetensors does not fit the model in config.json: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return ckpt, model.eval()


def member_layout(entry: Any, cfg: Any, is_mixture: bool) -> tuple[list[str], int, int, list[str]]:
    """(cameras, state_dim, action_dim, pad_cameras) a policy acting as checkpoint member
    ``entry`` reads and writes (``Policy._mixture_member``, ``vlastack inspect``): a mixture
    member's own cameras and sizes, the model's other cameras fed as padding."""
    if is_mixture:
        cameras = [c for c in cfg.cameras if entry.cameras is None or c in entry.cameras]
        state_dim = min(entry.state_dim or 0, cfg.state_dim)
        action_dim = entry.action_dim or cfg.action_dim
    else:
        cameras, state_dim, action_dim = list(cfg.cameras), cfg.state_dim, cfg.action_dim
    return cameras, state_dim, action_dim, [c for c in cfg.cameras if c not in cameras]


class PolicySession:
    """One client's state: its observation history and its noise generator. A policy serving
    several robots (the server: one per connection) gives each its own, so one client's frames
    or reconnects never change another's actions."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.history: deque[Observation] = deque(maxlen=policy.obs_horizon)
        self.generator = torch.Generator(device="cpu").manual_seed(policy.seed)

    def reset(self) -> None:
        self.history.clear()
        self.generator.manual_seed(self.policy.seed)

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        return self.policy.infer(obs, session=self)


class Policy:
    """A VLA ready to act: ``infer(obs)`` returns an action chunk in the robot's own units."""

    def __init__(
        self,
        model: Any,
        normalizer: Normalizer,
        *,
        cameras: list[str],
        image_size: tuple[int, int],
        obs_horizon: int,
        action_horizon: int,
        state_dim: int,
        action_dim: int,
        embodiment: EmbodimentSpec | None = None,
        execute_horizon: int | None = None,
        default_prompt: str = "",
        device: str | torch.device = "cpu",
        seed: int = 0,
        source: str = "policy",
        model_state_dim: int | None = None,
        model_action_dim: int | None = None,
        pad_cameras: list[str] | None = None,
        embodiment_name: str | None = None,
        mixture_members: list[str] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.normalizer = normalizer.to(self.device)
        self.cameras = list(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.obs_horizon = int(obs_horizon)
        self.action_horizon = int(action_horizon)
        self.execute_horizon = int(execute_horizon or max(1, action_horizon // 2))
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.embodiment = embodiment
        self.default_prompt = default_prompt
        # longer instructions are refused (bounded memory for a server facing clients)
        self.max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS
        self.source = source
        self.seed = int(seed)
        self._session = PolicySession(self)  # the state of callers that use no session
        self.last_latency_ms: float = 0.0
        # A model trained on a mixture reads/writes padded vectors and every camera of the
        # mixture; this robot sends its own sizes, and cameras it lacks are fed as zero images
        # flagged ``_is_pad`` (masked out of the context), exactly as in training (data/mixture.py).
        self.model_state_dim = int(model_state_dim if model_state_dim is not None else state_dim)
        self.model_action_dim = int(
            model_action_dim if model_action_dim is not None else action_dim
        )
        self.pad_cameras = list(pad_cameras or [])
        self.embodiment_name = embodiment_name
        self.mixture_members = list(mixture_members or [])
        # what the model's head, trunk and vision encoder run through at inference
        # (vlastack.runners): the fastest that applies on this device unless ``use_runner`` names another, or
        # VLASTACK_RUNNER does (``vlastack eval --runner`` sets it for its worker processes)
        self.use_runner(os.environ.get("VLASTACK_RUNNER") or "auto")

    def use_runner(self, name: str = "auto") -> str:
        """Run the model's head (trunk, vision encoder) through runner ``name`` from now on:
        ``eager``, ``native`` (CPU), ``cuda_graphs`` (GPU), ``onnxruntime`` (CPU), or ``auto`` (the
        fastest that applies here). A runner is built for the weights as they are now: a layer
        or parameter replaced under the head, trunk or vision encoder afterwards (quantizing the
        loaded model), an in-place update and a change of BatchNorm statistics or train/eval
        mode are noticed before the next chunk (``runners.structure_key``) and the runner
        rebuilt; after writing weights through ``.data``, call this again. Returns the runner's name."""
        if name == "cuda_graphs" and self.device.type != "cuda":
            raise ConfigError(
                f"CUDA graphs need a CUDA device; this policy runs on {self.device} "
                "(load it with device='cuda', or drop --cuda-graphs / --runner cuda_graphs)"
            )
        self.runner = use_runner(self.model, name)
        self._runner_request = name
        self._runner_key = structure_key(self.model)
        return self.runner

    def enable_cuda_graphs(self) -> None:
        """Run the action head's sampler as recorded CUDA graphs (one per batch shape, captured
        on first use). At batch 1 a head is launch-bound on a GPU; replaying the graph removes
        the per-kernel launch cost. Same chunk as eager for the same seed. GPU only; heads that
        decode autoregressively on data (FAST) or draw noise every step (DDPM) refuse."""
        self.use_runner("cuda_graphs")

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        execute_horizon: int | None = None,
        seed: int = 0,
        expect_embodiment: EmbodimentSpec | None = None,
        embodiment: str | None = None,
    ) -> Policy:
        """Load a checkpoint folder. For a checkpoint trained on a mixture of robots,
        ``embodiment`` names the robot to act as (a member name or its robot_type; default:
        the one matching ``expect_embodiment``, else the first member, with a log line).
        A folder a registered format claims (``vlastack.policy_formats``, e.g. a LeRobot
        ``pretrained_model``) is loaded by that format on ``device`` instead, and is returned as
        that format's policy object (``execute_horizon`` and ``seed`` do not apply to it)."""
        from vlastack.data.normalization import Normalizer
        from vlastack.policy_formats import load_registered_policy

        registered = load_registered_policy(
            path, device=device, expect_embodiment=expect_embodiment, embodiment=embodiment
        )
        if registered is not None:
            return registered
        ckpt, model = load_vla(path, expect_embodiment=expect_embodiment)
        cfg = model.config
        if ckpt.config.get("quantization"):
            from vlastack.models.quantize import apply_quantization

            model = apply_quantization(model, ckpt.config["quantization"])
        extra = ckpt.config.get("recipe_extra", {}) or {}
        common: dict[str, Any] = dict(
            image_size=tuple(cfg.image_size),
            obs_horizon=cfg.obs_horizon,
            action_horizon=cfg.action_horizon,
            execute_horizon=execute_horizon or extra.get("execute_horizon"),
            device=device,
            seed=seed,
            source=str(ckpt.path),
        )
        if ckpt.is_mixture:
            return cls._mixture_member(ckpt, model, cfg, embodiment, expect_embodiment, common)
        if embodiment is not None:
            only = ckpt.select_embodiment(None)
            if embodiment not in (only.name, getattr(ckpt.embodiment, "robot_type", None)):
                raise ConfigError(
                    f"{ckpt.path} was trained on one robot ({only.name!r}), not {embodiment!r}; "
                    "drop embodiment= or load a checkpoint trained on that robot"
                )
        normalizer = Normalizer.from_dict(
            ckpt.normalization, source=f"{ckpt.path}/normalization.json"
        )
        return cls(
            model,
            normalizer,
            cameras=list(cfg.cameras),
            state_dim=cfg.state_dim,
            action_dim=cfg.action_dim,
            embodiment=ckpt.embodiment,
            **common,
        )

    @classmethod
    def _mixture_member(
        cls,
        ckpt: Any,
        model: Any,
        cfg: Any,
        name: str | None,
        expect: EmbodimentSpec | None,
        common: dict[str, Any],
    ) -> Policy:
        """A policy acting as one robot of a mixture checkpoint (its stats, sizes, cameras)."""
        from vlastack.data.mixture import MemberNormalizer
        from vlastack.data.normalization import Normalizer

        entries = ckpt.embodiments()
        if name is None and expect is not None:
            fits = [e for e in entries if e.embodiment and not e.embodiment.differences(expect)]
            name = fits[0].name if fits else None
        try:
            entry = ckpt.select_embodiment(name)
        except DataError as exc:
            raise UnknownEmbodimentError(str(exc)) from None
        names = [e.name for e in entries]
        if name is None:
            log.warning(
                "%s was trained on a mixture of %s; acting as the first, %r (pass "
                "embodiment=NAME to choose)",
                ckpt.path,
                names,
                entry.name,
            )
        else:
            log.info("%s: acting as %r of the mixture %s", ckpt.path, entry.name, names)
        inner = Normalizer.from_dict(
            entry.normalization, source=f"{ckpt.path}/normalization.json members[{entry.name}]"
        )
        normalizer = MemberNormalizer(
            inner, {"observation.state": cfg.state_dim, "action": cfg.action_dim}
        )
        cameras, state_dim, action_dim, pad_cameras = member_layout(entry, cfg, True)
        return cls(
            model,
            normalizer,  # type: ignore[arg-type]
            cameras=cameras,
            state_dim=state_dim,
            action_dim=action_dim,
            embodiment=entry.embodiment,
            model_state_dim=cfg.state_dim,
            model_action_dim=cfg.action_dim,
            pad_cameras=pad_cameras,
            embodiment_name=entry.name,
            mixture_members=names,
            **common,
        )

    # ---- protocol used by envs, evaluation and the server -------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "action_horizon": self.action_horizon,
            "execute_horizon": self.execute_horizon,
            "obs_horizon": self.obs_horizon,
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "cameras": self.cameras,
            "image_size": list(self.image_size),
            "embodiment": self.embodiment.to_dict() if self.embodiment else None,
            "observation_keys": self.observation_keys(),
            **(self._mixture_metadata() if self.embodiment_name else {}),
        }

    def _mixture_metadata(self) -> dict[str, Any]:
        """Which robot of a mixture checkpoint this policy acts as (clients check it)."""
        return {
            "embodiment_name": self.embodiment_name,
            "robot_type": self.embodiment.robot_type if self.embodiment else None,
            "mixture_members": self.mixture_members,
        }

    def observation_keys(self) -> list[str]:
        keys = [image_key(c) for c in self.cameras]
        if self.state_dim:
            keys.append(STATE)
        keys.append(TASK)
        return keys

    @property
    def _history(self) -> deque[Observation]:
        return self._session.history

    @property
    def _generator(self) -> torch.Generator:
        return self._session.generator

    def new_session(self) -> PolicySession:
        """A fresh per-client state (history, generator) for ``infer(obs, session=...)``."""
        return PolicySession(self)

    def reset(self) -> None:
        """Forget the observation history (call at the start of every episode)."""
        self._session.reset()

    def parse(self, obs: Mapping[str, Any]) -> Observation:
        """A client's observation (any accepted key spelling, HWC or CHW) -> ``Observation``."""
        return parse_observation(
            obs,
            cameras=self.cameras,
            state_dim=self.state_dim,
            image_size=self.image_size,
            default_prompt=self.default_prompt,
            max_prompt_chars=self.max_prompt_chars,
        )

    def batch(self, windows: list[list[Observation]]) -> Batch:
        """Windows of observations -> the model's batch on this policy's device (mixture
        padding included), in robot units."""
        return observation_batch(
            windows,
            image_size=self.image_size,
            model_state_dim=self.model_state_dim,
            pad_cameras=self.pad_cameras,
            device=self.device,
        )

    def _window(
        self, observation: Observation, session: PolicySession | None = None
    ) -> list[Observation]:
        """Append to ``session``'s history (default: the policy's own) and return the last
        ``obs_horizon`` observations, oldest first, padding by repeating the oldest one."""
        history = (session or self._session).history
        if not history:
            history.extend([observation] * (self.obs_horizon - 1))
        history.append(observation)
        return list(history)

    def _peek_window(
        self, observation: Observation, session: PolicySession | None = None
    ) -> list[Observation]:
        """The window ``_window`` would return, without changing the history."""
        past = list((session or self._session).history)
        if not past:
            past = [observation] * (self.obs_horizon - 1)
        return (past + [observation])[-self.obs_horizon :]

    def predict(
        self,
        batch: Mapping[str, Any],
        *,
        generator: torch.Generator | None = None,
        sample: Callable[[dict[str, Any]], torch.Tensor] | None = None,
    ) -> np.ndarray:
        """normalize -> sample -> unnormalize, the one copy: a batch in robot units (model keys)
        -> action chunks float32 (B, H, A) in robot units. ``generator`` defaults to the
        policy's own seeded one; ``sample(normalized batch) -> normalized actions`` replaces
        ``model.sample_actions`` (real-time chunking's guided sampler, which needs autograd)."""
        with torch.no_grad() if sample is None else nullcontext():
            with stage("normalize"):
                batch = as_batch(batch)  # a caller's plain dict: keys checked here
                normalized = as_batch(self.normalizer.normalize(dict(batch)))
            if sample is None:
                if structure_key(self.model) != self._runner_key:  # layers swapped since
                    self.use_runner(self._runner_request)
                gen = self._generator if generator is None else generator
                actions = self.model.sample_actions(normalized, generator=gen)
            else:
                actions = sample(normalized)
            with stage("unnormalize"):
                actions = self.normalizer.unnormalize_actions(actions.detach())
                out = actions.float().cpu().numpy()
        if not np.isfinite(out).all():
            bad = int(out.size - np.isfinite(out).sum())
            raise NonFiniteActionError(
                f"policy {self.source}: the model produced {bad} non-finite action value(s) "
                f"(NaN/Inf) in a chunk of shape {out.shape[1:]}; refusing to return them "
                "(check the checkpoint's weights and normalization stats)"
            )
        return out

    def infer(
        self, obs: Mapping[str, Any], *, session: PolicySession | None = None
    ) -> dict[str, Any]:
        """One observation (unbatched) -> {"actions": float32 (H, A), "policy_timing": {...}}.
        ``session`` (``new_session()``) holds the history and noise of one client; default: the
        policy's own."""
        t0 = time.perf_counter()
        with stage("preprocess"):  # parse, history window, batch, to device
            batch = self.batch([self._window(self.parse(obs), session)])
        subtasks = self._subtasks(batch, [obs])
        gen = session.generator if session is not None else None
        actions = self.predict(batch, generator=gen)[0]
        self.last_latency_ms = (time.perf_counter() - t0) * 1000.0
        out = {"actions": actions, "policy_timing": {"infer_ms": self.last_latency_ms}}
        if subtasks is not None:
            out[SUBTASK_KEY] = subtasks[0]
        return out

    # ---- System 2 / System 1 (a model built with hierarchy=True) -------------------------
    @property
    def supports_hierarchy(self) -> bool:
        """True when the model has a slow high level naming subtasks (``hierarchy=True``)."""
        return bool(getattr(self.model, "supports_hierarchy", False))

    def infer_high_level(
        self, obs: Mapping[str, Any], *, session: PolicySession | None = None
    ) -> dict[str, Any]:
        """System 2 alone: {"subtask": str, "policy_timing": {"high_level_ms"}}. The history is
        read, not advanced (the low level's ``infer`` on the same tick advances it)."""
        if not self.supports_hierarchy:
            raise ConfigError(
                f"policy {self.source}: no high level; train a recipe with hierarchy=True "
                "(`vlastack train --recipe hierarchy`) to run two rates"
            )
        t0 = time.perf_counter()
        batch = self.batch([self._peek_window(self.parse(obs), session)])
        with torch.no_grad():
            subtask = self.model.predict_subtasks(self.normalizer.normalize(batch))[0]
        ms = (time.perf_counter() - t0) * 1000.0
        return {SUBTASK_KEY: subtask, "policy_timing": {"high_level_ms": ms}}

    def _subtasks(
        self, batch: dict[str, Any], observations: list[Mapping[str, Any]]
    ) -> list[str] | None:
        """The subtask each observation's low level acts on: the client's ``subtask`` (the
        latest high-level output), else System 2 run now; None for a model without one."""
        if not self.supports_hierarchy:
            return None
        given = [subtask_of(o) for o in observations]
        if any(s is None for s in given):
            with torch.no_grad():
                predicted = self.model.predict_subtasks(self.normalizer.normalize(batch))
            given = [s if s is not None else p for s, p in zip(given, predicted)]
        subtasks = [str(s) for s in given]
        batch[SUBTASK_KEY] = subtasks
        return subtasks

    @property
    def supports_guided_sampling(self) -> bool:
        """True when the action head can run real-time-chunking guidance (flow matching)."""
        return bool(getattr(self.model, "supports_guided_sampling", False))

    def infer_guided(
        self,
        obs: Mapping[str, Any],
        prev_actions: np.ndarray,
        inference_delay: int,
        *,
        max_guidance_weight: float = 5.0,
        schedule: str = "exp",
        session: PolicySession | None = None,
    ) -> dict[str, Any]:
        """Real-time chunking (Black, Galliker & Levine 2025; REFERENCE.md §3.6): sample a chunk
        guided to agree with ``prev_actions`` (L, A), the previous chunk's not-yet-executed actions
        in robot units with ``prev_actions[0]`` aligned to this observation's tick. The first
        ``inference_delay`` of them execute while this call runs (weight 1), the rest are a soft
        target decaying to 0 at L (``prefix_weights``). Same return as ``infer``; ``session``
        as there (the server passes each connection's)."""
        from vlastack.functional.rtc import prefix_weights

        if not self.supports_guided_sampling:
            head = getattr(self.model, "head", None)
            raise ConfigError(
                f"policy {self.source}: real-time chunking (strategy 'rtc', infer_guided) needs a "
                f"flow-matching action head; this model's head is "
                f"{type(head).__name__ if head is not None else 'LM action tokens'} "
                f"(model.head={getattr(self.model.config, 'head', '?')!r}). Use strategy 'async' "
                "or retrain with --model.head=flow_matching"
            )
        prev = np.asarray(prev_actions, dtype=np.float32)
        if prev.ndim != 2 or prev.shape[1] != self.action_dim:
            raise ObservationError(
                f"infer_guided: prev_actions must have shape (L, {self.action_dim}), "
                f"got {prev.shape}"
            )
        H = self.action_horizon
        L = min(len(prev), H)
        t0 = time.perf_counter()
        with stage("preprocess"):
            batch = self.batch([self._window(self.parse(obs), session)])
        generator = (session or self._session).generator
        if L == 0:  # nothing committed: plain sampling (same noise draw, no VJPs)
            actions = self.predict(batch, generator=generator)[0]
        else:
            # prev (L, A) -> normalized (1, H, A), zero after L (weight 0 there)
            y = torch.zeros(1, H, self.model_action_dim, device=self.device)
            y[0, :L, : self.action_dim] = self.normalizer.normalize_key(
                "action", torch.from_numpy(prev[:L]).to(self.device)
            )
            d = max(0, min(int(inference_delay), L))
            weights = torch.as_tensor(prefix_weights(d, L, H, schedule), dtype=torch.float32)

            def guided(normalized: dict[str, Any]) -> torch.Tensor:
                return self.model.sample_actions_guided(
                    normalized,
                    y,
                    weights.to(self.device),
                    max_guidance_weight=max_guidance_weight,
                    generator=generator,
                )

            actions = self.predict(batch, sample=guided)[0]
        self.last_latency_ms = (time.perf_counter() - t0) * 1000.0
        return {"actions": actions, "policy_timing": {"infer_ms": self.last_latency_ms}}

    def infer_batch(
        self,
        observations: list[Mapping[str, Any]],
        *,
        sessions: list[PolicySession] | None = None,
    ) -> list[dict[str, Any]]:
        """Several observations (e.g. several server clients) in one model call.

        Without ``sessions`` each observation stands alone (its frame repeated ``obs_horizon``
        times); with them, observation i extends ``sessions[i]``'s history, as ``infer`` would.
        Histories change only once the whole batch succeeded (a caller may retry one by one).
        """
        t0 = time.perf_counter()
        parsed = [self.parse(obs) for obs in observations]
        if sessions is None:
            windows = [[o] * self.obs_horizon for o in parsed]
        else:
            if len(sessions) != len(parsed):
                raise ValueError(f"{len(sessions)} sessions for {len(parsed)} observations")
            windows = [self._peek_window(o, s) for o, s in zip(parsed, sessions)]
        batch = self.batch(windows)
        subtasks = self._subtasks(batch, observations)
        # each client's noise from its own session, as ``infer`` alone draws it
        gen = None if sessions is None else RowGenerators([s.generator for s in sessions])
        actions = self.predict(batch, generator=cast(torch.Generator, gen))
        for session, window in zip(sessions or [], windows):
            session.history.extend(window[len(window) - 1 if session.history else 0 :])
        ms = (time.perf_counter() - t0) * 1000.0
        out: list[dict[str, Any]] = [
            {"actions": a, "policy_timing": {"infer_ms": ms}} for a in actions
        ]
        for o, s in zip(out, subtasks or []):
            o[SUBTASK_KEY] = s
        return out


def subtask_of(obs: Mapping[str, Any]) -> str | None:
    """An observation's ``subtask`` (str, bytes or a one-element array), or None."""
    value = obs.get(SUBTASK_KEY)
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise ObservationError(
            f"observation '{SUBTASK_KEY}' must be a string (a subtask the policy knows), "
            f"got {type(value).__name__}"
        )
    return value


def check_policy_fits_env(policy: Policy, env_embodiment: EmbodimentSpec) -> None:
    """Raise a ConfigError explaining how a policy's embodiment differs from an environment's."""
    if policy.embodiment is None:
        return
    diffs = policy.embodiment.differences(env_embodiment)
    if diffs:
        raise ConfigError(
            f"policy {policy.source} was trained for robot {policy.embodiment.robot_type!r} but the "
            f"environment is {env_embodiment.robot_type!r}: {'; '.join(diffs)}. Retrain or "
            "fine-tune on this robot, or pass --allow-mismatch to pad/truncate actions"
        )


__all__ = [
    "NonFiniteActionError",
    "Observation",
    "PolicySession",
    "ObservationError",
    "Policy",
    "UnknownEmbodimentError",
    "check_policy_fits_env",
    "image_to_chw_float",
    "load_vla",
    "member_layout",
    "parse_observation",
]
