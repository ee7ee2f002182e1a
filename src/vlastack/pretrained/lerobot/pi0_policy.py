"""A LeRobot pi0 or pi0.5 ``pretrained_model`` folder as a vlastack policy (``infer``, ``reset``,
``metadata``); the loader registered as the ``lerobot_pi0`` / ``lerobot_pi05`` checkpoint
formats.

An observation holds each camera (LeRobot key or any client spelling; uint8 HWC/CHW or float in
[0, 1], of any size: LeRobot resizes every camera to ``image_resolution`` with padding), the
state and the instruction (``task`` or ``prompt``). ``infer`` runs
LeRobot's preprocessor (rename, normalize, pi0's newline or pi0.5's discretized-state prompt,
tokenizer, relative actions), ``predict_action_chunk`` (``pi0_inputs`` then ``Pi0Core.
sample_actions``, noise from a generator seeded with ``seed`` at load and on ``reset``; LeRobot
draws it from the global RNG) and the postprocessor (unnormalize, absolute actions) on the whole
``chunk_size`` chunk, in dataset units. ``metadata["execute_horizon"]`` is ``n_action_steps``.
The noise generator is per session (``new_session()``; the server gives each connection one).
``infer_guided`` is real-time chunking (``serving.runtime.RTCRuntime``): ``functional.rtc``'s
guided Euler sampler over the expert's velocity, toward the committed actions (``guided``).

Weights: every key of model.safetensors is loaded by name into ``Pi0Network`` except the two
``lm_head`` matrices (saved, never used: ``paligemma.UNUSED_HEADS``; their shapes are checked).
As LeRobot's ``_fix_pytorch_state_dict_keys``, a file without ``embed_tokens.weight`` gets
PaliGemma's ``lm_head.weight`` as the embedding; a file with both uses ``embed_tokens``
(LeRobot copies lm_head first and the saved embed_tokens, later in key order, overwrites it).

Verified against ``shared/fixtures/lerobot_policies/{pi0,pi05}`` (tests/test_pretrained_lerobot_pi0.py):
every preprocessing step and the chunks bit for bit at the goldens' 1 thread, and the same bits
as LeRobot 0.6.1 run beside it at 2 threads, in float32 and bfloat16 (slow test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.guided import check_prev_actions, guidance
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer
from vlastack.pretrained.lerobot.observation import (
    example_observation,
    find_input,
    short_name,
    task_text,
)
from vlastack.pretrained.lerobot.pi0 import Pi0Network, Pi0Spec
from vlastack.pretrained.lerobot.pi0_inputs import (
    PALIGEMMA_TOKENIZER,
    Tokenizer,
    load_tokenizer,
    pad_state,
    pi0_prompt,
    pi05_prompt,
    resize_with_pad,
)
from vlastack.pretrained.lerobot.pi0_weights import load_pi0_network
from vlastack.pretrained.lerobot.policy import (
    default_device,
    folder_embodiment,
    no_embodiment,
    preprocess_observations,
)
from vlastack.pretrained.lerobot.session import (
    LeRobotSession,
    SessionInfer,
    check_sessions,
    draw_noise,
)
from vlastack.pretrained.lerobot.vla_runner import RunnerSlot
from vlastack.profiling import stage

FORMAT_NAMES = {"pi0": "lerobot_pi0", "pi05": "lerobot_pi05"}
NEW_LINE = "pi0_new_line_processor"
TOKENIZER = "tokenizer_processor"
PI05_STATE = "pi05_prepare_state_tokenizer_processor_step"
RELATIVE, ABSOLUTE = "relative_actions_processor", "absolute_actions_processor"
KNOWN = (
    lf.RENAME_STEP,
    *lf.PASSIVE_STEPS,
    *lf.NORMALIZER_STEPS,
    NEW_LINE,
    TOKENIZER,
    PI05_STATE,
    RELATIVE,
    ABSOLUTE,
)


@dataclass
class PiProcessors:
    """What the processor pipelines of a pi0 / pi0.5 folder do at inference."""

    rename_map: dict[str, str]
    normalizer: FeatureNormalizer | Any  # openpi_pi0.OpenpiNormalizer for openpi folders
    unnormalizer: FeatureNormalizer | Any
    tokenizer_name: str = PALIGEMMA_TOKENIZER
    max_length: int = 48
    new_line: bool = False
    state_prompt: bool = False
    clean_prompt: bool = False  # openpi: strip, '_' and '\n' as spaces (pi0 too)
    relative: bool = False
    exclude_joints: list[str] = field(default_factory=list)
    action_names: list[str] | None = None


def _normalizer(path: Path, filename: str, steps: list[lf.Step]) -> FeatureNormalizer | None:
    found = [s for s in steps if s.name in lf.NORMALIZER_STEPS]
    if len(found) > 1:
        raise ConfigError(f"{path / filename} has {len(found)} normalizer steps; expected one")
    if not found:
        return None
    stats = lf.read_stats(path, found[0].state_file) if found[0].state_file else {}
    return FeatureNormalizer.from_step(found[0], stats)


def read_pi_processors(path: Path, policy_type: str) -> PiProcessors:
    """policy_preprocessor.json / policy_postprocessor.json of a pi0 / pi0.5 folder."""
    path = Path(path)
    if not (path / lf.PREPROCESSOR).is_file():
        raise ConfigError(
            f"{path} has no {lf.PREPROCESSOR}: a LeRobot < 0.4 {policy_type} checkpoint, whose "
            "network and keys differ; convert it with LeRobot >= 0.4 (lerobot's "
            "migrate_policy_normalization) first"
        )
    pre = lf.read_pipeline(path, lf.PREPROCESSOR)
    lf.check_steps(path, lf.PREPROCESSOR, pre, KNOWN)
    post: list[lf.Step] = []
    if (path / lf.POSTPROCESSOR).is_file():
        post = lf.read_pipeline(path, lf.POSTPROCESSOR)
        lf.check_steps(path, lf.POSTPROCESSOR, post, KNOWN)
    procs = PiProcessors(
        {}, _normalizer(path, lf.PREPROCESSOR, pre), _normalizer(path, lf.POSTPROCESSOR, post)
    )
    names = [s.name for s in pre]
    for step in pre:
        c = step.config
        if step.name == lf.RENAME_STEP:
            procs.rename_map.update(c.get("rename_map") or {})
        elif step.name == NEW_LINE:
            procs.new_line = True
        elif step.name == PI05_STATE:
            norm_at = next((i for i, n in enumerate(names) if n in lf.NORMALIZER_STEPS), None)
            if norm_at is None or norm_at > names.index(PI05_STATE):
                raise ConfigError(
                    f"{path / lf.PREPROCESSOR}: {PI05_STATE} must come after the normalizer "
                    "(it discretizes the normalized state); restore LeRobot's step order"
                )
            procs.state_prompt = True
        elif step.name == TOKENIZER:
            procs.tokenizer_name = str(c.get("tokenizer_name") or PALIGEMMA_TOKENIZER)
            procs.max_length = int(c.get("max_length") or procs.max_length)
            for key, want in (
                ("padding_side", "right"),
                ("padding", "max_length"),
                ("truncation", True),
            ):
                if c.get(key, want) != want:
                    raise ConfigError(
                        f"{path / lf.PREPROCESSOR}: tokenizer_processor '{key}' is "
                        f"{c.get(key)!r}; vlastack reproduces {want!r} only (LeRobot's pi0 "
                        "default): set it back"
                    )
        elif step.name == RELATIVE:
            procs.relative = bool(c.get("enabled", False))
            procs.exclude_joints = list(c.get("exclude_joints") or [])
            procs.action_names = c.get("action_names")
    if TOKENIZER not in names:
        raise ConfigError(f"{path / lf.PREPROCESSOR} has no {TOKENIZER} step; pi0 needs tokens")
    return procs


def pi_language_facts(path: Path, policy_type: str) -> tuple[Any, dict[str, Any]]:
    """For ``vlastack inspect``: the processors (a ``PiProcessors``) and what the instruction
    goes through (prompt rule, tokenizer and where it would be found), loading nothing."""
    import os

    from vlastack.pretrained.lerobot.hub import hub_cache_dir
    from vlastack.pretrained.lerobot.pi0_inputs import TOKENIZER_ENV

    procs = read_pi_processors(path, policy_type)
    name = procs.tokenizer_name
    if os.environ.get(TOKENIZER_ENV):
        found = f"${TOKENIZER_ENV} = {os.environ[TOKENIZER_ENV]}"
    elif (Path(path) / "tokenizer").is_dir():
        found = f"local folder {(Path(path) / 'tokenizer').resolve()}"
    elif (hub_cache_dir() / ("models--" + name.replace("/", "--"))).is_dir():
        found = f"local Hugging Face cache ({hub_cache_dir()})"
    else:
        found = f"NOT FOUND locally: `hf download {name}`"
    prompt = (
        "written as 'Task: <task>, State: <the normalized state in 256 bins>;\\nAction: '"
        if procs.state_prompt
        else ("a trailing newline is added" if procs.new_line else "used as sent")
    )
    facts = {
        "tokenizer": name,
        "tokenizer_found": found,
        "max_length": procs.max_length,
        "padding": "max_length",
        "padding_side": "right",
        "state_in_prompt": procs.state_prompt,
        "newline": procs.new_line,
        "summary": f"{prompt}, tokenized by {name!r} ({found}), right-padded to {procs.max_length}",
    }
    return procs, facts


def relative_mask(procs: PiProcessors, action_dim: int) -> list[bool]:
    """LeRobot's ``RelativeActionsProcessorStep._build_mask``: dims whose action name contains
    an excluded joint name stay absolute; without names every dim is relative."""
    tokens = [str(n).lower() for n in procs.exclude_joints if n]
    if not tokens or procs.action_names is None:
        return [True] * action_dim
    mask = [
        not any(t == str(n).lower() or t in str(n).lower() for t in tokens)
        for n in procs.action_names[:action_dim]
    ]
    return mask + [True] * (action_dim - len(mask))


@dataclass
class Pi0Inputs:
    """One batch after the preprocessor: ``batch`` as LeRobot's preprocessor returns it
    (images in [0, 1], normalized state, ``observation.language.tokens`` / ``.attention_mask``),
    ``prompts`` (the tokenizer's input), the raw state and the ``sample_actions`` arguments."""

    batch: dict[str, torch.Tensor]
    prompts: list[str]
    raw_state: torch.Tensor
    images: list[torch.Tensor]
    img_masks: list[torch.Tensor]
    state: torch.Tensor | None


class LeRobotPi0Policy(RunnerSlot, SessionInfer):
    """LeRobot pi0 / pi0.5 checkpoint with the vlastack policy contract."""

    def __init__(
        self,
        network: Pi0Network,
        cfg: dict[str, Any],
        processors: PiProcessors,
        tokenizer: Tokenizer,
        *,
        checkpoint: str | None = None,
        seed: int = 0,
        embodiment: dict[str, Any] | None = None,
        folder_json: lf.FolderJSON | None = None,
        optional_images: tuple[str, ...] = (),
        format_name: str | None = None,
    ) -> None:
        self.network = network.eval()
        self.spec: Pi0Spec = network.spec
        self.policy_type = "pi05" if self.spec.pi05 else "pi0"
        self.processors = processors
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint
        self.seed = seed
        self.embodiment_dict = embodiment
        self.folder_json = folder_json
        self.num_resets = 0
        inputs = lf.read_features(cfg, "input_features")
        outputs = lf.read_features(cfg, "output_features")
        self.image_keys = [f.key for f in inputs if f.type == "VISUAL"]
        # cameras a client may leave out (openpi's unused slots): then -1 with mask False
        self.optional_images = set(optional_images)
        self.format_name = format_name
        self.image_keys += [
            k
            for i in range(int(cfg.get("empty_cameras") or 0))
            if (k := f"observation.images.empty_camera_{i}") not in self.image_keys
        ]
        self.shapes = {f.key: f.shape for f in inputs if not _empty(f.key)}
        state = [f for f in inputs if f.type == "STATE"]
        action = [f for f in outputs if f.type == "ACTION"]
        if not action:
            raise ConfigError(f"{checkpoint}: config.json output_features has no ACTION feature")
        if not state:
            raise ConfigError(f"{checkpoint}: config.json input_features has no STATE feature")
        if not any(not _empty(k) for k in self.image_keys):
            raise ConfigError(f"{checkpoint}: config.json input_features has no VISUAL feature")
        self.state_key, self.state_dim = state[0].key, state[0].shape[0]
        self.action_key, self.action_dim = action[0].key, action[0].shape[0]
        for what, dim, most in (
            ("state", self.state_dim, self.spec.max_state_dim),
            ("action", self.action_dim, self.spec.max_action_dim),
        ):
            if dim > most:
                raise ConfigError(
                    f"{checkpoint}: the {what} has {dim} dims, more than config.json's "
                    f"max_{what}_dim {most}; the network only takes {most}"
                )
        self._session = self.new_session()  # the state of callers that pass no session

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def runner_format(self) -> str:
        return "lerobot_pi05" if self.spec.pi05 else "lerobot_pi0"

    @property
    def metadata(self) -> dict[str, Any]:
        s = self.spec
        return {
            "policy": f"lerobot/{self.policy_type}",
            "format": self.format_name or FORMAT_NAMES[self.policy_type],
            "checkpoint": self.checkpoint,
            "action_horizon": s.chunk_size,
            "execute_horizon": s.n_action_steps,
            "obs_horizon": 1,
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "cameras": [k for k in self.image_keys if not _empty(k)],
            "image_size": [s.image_size, s.image_size],
            "observation_keys": [*self.shapes, "task"],
            "language": True,
            "tokenizer": self.tokenizer.name,
            "flow_steps": s.num_inference_steps,
            "seed": self.seed,
            "embodiment": self.embodiment_dict,
            "runner": self.runner,
        }

    def absent(self, observations: Sequence[Mapping[str, Any]]) -> set[str]:
        """The cameras left out: ``empty_camera_<i>`` always, optional ones when no
        observation of the batch has them (some but not all is an error)."""
        out = {k for k in self.image_keys if _empty(k)}
        for key in self.optional_images:
            have = [find_input(o, key, True) is not None for o in observations]
            if not any(have):
                out.add(key)
            elif not all(have):
                raise ConfigError(f"{key}: sent in some observations of the batch but not all")
        return out

    def example_observation(self, seed: int = 0) -> dict[str, Any]:
        return example_observation(self.shapes, set(self.image_keys), seed)

    def new_session(self) -> LeRobotSession:
        """One client's state (its noise generator, seeded with ``seed``) for
        ``infer(obs, session=...)``; the server gives each connection one."""
        return LeRobotSession(self, seed=self.seed)

    @property
    def _generator(self) -> torch.Generator | None:
        return self._session.generator

    @_generator.setter
    def _generator(self, generator: torch.Generator) -> None:
        self._session.generator = generator

    def reset(self) -> None:
        """Reseed the default session's noise (pi0 keeps no observation history)."""
        self.num_resets += 1
        self._session.reset()

    # ---- LeRobot's stages, usable one by one (the tests compare each) -----------------------
    def preprocess(self, observations: Sequence[Mapping[str, Any]]) -> Pi0Inputs:
        p, s = self.processors, self.spec
        absent = self.absent(observations)
        shapes = {k: v for k, v in self.shapes.items() if k not in absent}
        for key in shapes:  # any frame size: LeRobot resizes every camera to image_resolution
            if key in self.image_keys:
                shapes[key] = _frame_shape(find_input(observations[0], key, True), shapes[key])
        raw = preprocess_observations(
            observations,
            shapes,
            set(self.image_keys),
            p.rename_map,
            None,
            self.device,
            self.policy_type,
        )
        batch = {k: (p.normalizer.normalize(k, v) if p.normalizer else v) for k, v in raw.items()}
        tasks = [task_text(o) for o in observations]
        if p.clean_prompt:
            tasks = [t.strip().replace("_", " ").replace("\n", " ") for t in tasks]
        if s.pi05:
            state_np = batch[self.state_key].cpu().numpy()
            prompts = [pi05_prompt(t, state_np[i]) for i, t in enumerate(tasks)]
        else:
            prompts = [pi0_prompt(t) if p.new_line else t for t in tasks]
        ids, mask = self.tokenizer(prompts, p.max_length)
        batch["observation.language.tokens"] = ids.to(self.device)
        batch["observation.language.attention_mask"] = mask.to(self.device)
        images, masks = [], []
        b = len(observations)
        for key in self.image_keys:
            if key not in batch:
                continue
            images.append(resize_with_pad(batch[key], s.image_size))
            masks.append(torch.ones(b, dtype=torch.bool, device=self.device))
        if not images:
            raise ConfigError(f"observation has none of the cameras {', '.join(self.image_keys)}")
        for key in self.image_keys:  # LeRobot appends the missing (empty) cameras last
            if key not in batch:
                images.append(torch.ones_like(images[0]) * -1)
                masks.append(torch.zeros(b, dtype=torch.bool, device=self.device))
        state = None if s.pi05 else pad_state(batch[self.state_key], s.max_state_dim)
        return Pi0Inputs(batch, prompts, raw[self.state_key], images, masks, state)

    def draw_noise(
        self, batch: int, sessions: Sequence[LeRobotSession] | None = None
    ) -> torch.Tensor:
        """The sampler's start noise (B, chunk_size, max_action_dim): row i from
        ``sessions[i]``, or the whole batch from the default session's generator."""
        s = self.spec
        shape = (batch, s.chunk_size, s.max_action_dim)
        return draw_noise(shape, self._generator, sessions, self.device)

    @torch.inference_mode()
    def sample(
        self,
        inputs: Pi0Inputs,
        noise: torch.Tensor | None = None,
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> torch.Tensor:
        """``sample_actions``: (B, chunk_size, max_action_dim), normalized, padded dims kept."""
        if noise is None:
            noise = self.draw_noise(inputs.batch["observation.language.tokens"].shape[0], sessions)
        return self.sample_fn(
            inputs.images,
            inputs.img_masks,
            inputs.batch["observation.language.tokens"],
            inputs.batch["observation.language.attention_mask"],
            inputs.state,
            noise.to(self.device),
        )

    def predict_normalized(
        self,
        inputs: Pi0Inputs,
        noise: torch.Tensor | None = None,
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> torch.Tensor:
        """``predict_action_chunk``: (B, chunk_size, action_dim) in normalized units."""
        return self.sample(inputs, noise, sessions=sessions)[:, :, : self.action_dim]

    def postprocess(self, chunk: torch.Tensor, raw_state: torch.Tensor) -> torch.Tensor:
        """Unnormalize, then (``use_relative_actions``) add the raw state back."""
        p = self.processors
        out = p.unnormalizer.unnormalize(self.action_key, chunk) if p.unnormalizer else chunk
        if p.relative:
            mask = torch.tensor(relative_mask(p, out.shape[-1]), dtype=out.dtype, device=out.device)
            state = raw_state.to(device=out.device, dtype=out.dtype)
            out = out.clone()
            dims = mask.shape[0]
            out[..., :dims] += (state[..., :dims] * mask).unsqueeze(-2)
        return out

    def lerobot_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's state dict with LeRobot's keys plus the two ``lm_head`` matrices it
        does not hold (read back from the source checkpoint), for ``write`` (``vlastack export
        lerobot``). openpi sources are refused there (their JSON is not LeRobot's)."""
        from safetensors import safe_open

        from vlastack.pretrained.lerobot.paligemma import UNUSED_HEADS

        state = dict(self.network.state_dict())
        file = Path(str(self.checkpoint)) / lf.WEIGHTS
        if not file.is_file():
            raise ConfigError(
                f"{file} is gone; the export needs its lm_head matrices (LeRobot saves them)"
            )
        with safe_open(str(file), framework="pt") as f:
            for key in UNUSED_HEADS:
                if key in f.keys():  # noqa: SIM118
                    state[key] = f.get_tensor(key)
        return state

    def training_loss(
        self,
        observations: Sequence[Mapping[str, Any]],
        actions: torch.Tensor,
        noise: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LeRobot's ``PI0Policy.forward`` loss (``reduction="mean"``) for fine-tuning:
        ``actions`` (B, chunk_size, action_dim) in dataset units are normalized as the
        preprocessor does, padded to ``max_action_dim``; noise N(0, 1) and time
        Beta(1.5, 1) * 0.999 + 0.001 from the policy's generator unless given; the per-element
        loss (``pi0_train.flow_matching_loss``) is averaged over the real action dims. With
        ``use_relative_actions`` the actions are made relative to the raw state first."""
        from vlastack.pretrained.lerobot.flow import sample_time
        from vlastack.pretrained.lerobot.pi0_train import flow_matching_loss

        p, s = self.processors, self.spec
        inputs = self.preprocess(observations)
        a = actions.to(self.device, torch.float32)
        if p.relative:
            mask = torch.tensor(relative_mask(p, a.shape[-1]), dtype=a.dtype, device=a.device)
            dims = mask.shape[0]
            a = a.clone()
            a[..., :dims] -= (inputs.raw_state[..., :dims] * mask).unsqueeze(-2)
        if p.normalizer is not None:
            a = p.normalizer.normalize(self.action_key, a)
        a = pad_state(a, s.max_action_dim)
        b = a.shape[0]
        if noise is None:
            noise = torch.randn(a.shape, generator=self._generator, device=self.device)
        if time is None:
            time = sample_time(b, self._generator, device=self.device)
        loss = flow_matching_loss(
            self.network.model,
            inputs.images,
            inputs.img_masks,
            inputs.batch["observation.language.tokens"],
            inputs.batch["observation.language.attention_mask"],
            inputs.state,
            a,
            noise.to(self.device),
            time.to(self.device),
        )
        return loss[:, :, : self.action_dim].mean()

    # ---- policy contract --------------------------------------------------------------------
    def infer_batch(
        self,
        batch: list[Mapping[str, Any]],
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> list[dict[str, Any]]:
        """Chunks for several observations in one call; with ``sessions`` row i's noise comes
        from ``sessions[i]`` (what that client would get alone, up to the batch's rounding)."""
        check_sessions(sessions, len(batch), self)
        with torch.inference_mode():
            with stage("preprocess"):
                inputs = self.preprocess(batch)
            normalized = self.predict_normalized(inputs, sessions=sessions)
            with stage("unnormalize"):
                chunk = self.postprocess(normalized, inputs.raw_state)
        return [{"actions": a} for a in chunk.float().cpu().numpy()]

    # ---- real-time chunking (``serving.runtime.RTCRuntime``) ---------------------------------
    supports_guided_sampling = True

    def infer_guided(
        self,
        obs: Mapping[str, Any],
        prev_actions: Any,
        inference_delay: int,
        *,
        max_guidance_weight: float = 5.0,
        schedule: str = "exp",
        session: LeRobotSession | None = None,
    ) -> dict[str, Any]:
        """A chunk guided to agree with ``prev_actions`` (L, action_dim), the previous chunk's
        not-yet-executed actions in dataset units, ``prev_actions[0]`` at this observation's
        tick; the first ``inference_delay`` execute while this runs (``guided``; REFERENCE.md
        §3.6). They are mapped back as the postprocessor's inverse (minus the state on the
        relative dims, then normalized). With none (L = 0) this is ``infer``."""
        prev = check_prev_actions(prev_actions, self.action_dim, self.policy_type)
        session = session or self._session
        if len(prev) == 0:
            return self.infer(obs, session=session)
        p, s = self.processors, self.spec
        with torch.no_grad():  # not inference_mode: the guidance differentiates the expert
            inputs = self.preprocess([obs])
            noise = self.draw_noise(1, [session])
            y = torch.from_numpy(prev).to(self.device)
            if p.relative:
                mask = torch.tensor(relative_mask(p, y.shape[-1]), dtype=y.dtype, device=y.device)
                dims = mask.shape[0]
                y = y.clone()
                y[..., :dims] -= inputs.raw_state[0, :dims].to(y) * mask
            if p.unnormalizer is not None:
                y = p.unnormalizer.normalize(self.action_key, y)
            target, weights = guidance(y, inference_delay, s.chunk_size, s.max_action_dim, schedule)
            out = self.network.model.sample_actions_guided(
                inputs.images,
                inputs.img_masks,
                inputs.batch["observation.language.tokens"],
                inputs.batch["observation.language.attention_mask"],
                inputs.state,
                noise,
                target,
                weights,
                max_guidance_weight,
            )
            chunk = self.postprocess(out[:, :, : self.action_dim], inputs.raw_state)
        return {"actions": chunk[0].float().cpu().numpy()}


def _frame_shape(value: Any, default: tuple[int, ...]) -> tuple[int, ...]:
    """(3, H, W) of a frame sent HWC or CHW (one channel is repeated to three)."""
    arr = np.asarray(value) if value is not None else None
    if arr is None or arr.ndim != 3:
        return default  # observation_tensor names the key and the shape it wanted
    hwc = arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3)
    return (3, *(arr.shape[:2] if hwc else arr.shape[1:]))


def _empty(key: str) -> bool:
    return short_name(key).startswith("empty_camera_")


def load_lerobot_pi0(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    tokenizer: Any = None,
    policy_type: str | None = None,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
    network: Any = None,
) -> LeRobotPi0Policy:
    """Load a LeRobot pi0 or pi0.5 ``pretrained_model`` folder (``policy_type`` "pi0"/"pi05";
    None: config.json's type). ``tokenizer``: see ``pi0_inputs.load_tokenizer``. ``network``:
    a callable ``(spec) -> Pi0Network`` used instead of reading model.safetensors (the int8
    copy's loader, ``quantize.load_lerobot_int8``)."""
    del expect_embodiment
    path = Path(path)
    no_embodiment(path, embodiment)
    kind = policy_type or lf.config_type(path)
    if kind not in FORMAT_NAMES:
        raise ConfigError(
            f"{path / lf.CONFIG}: 'type' is {kind!r}; this loader reads pi0 and pi05 checkpoints"
        )
    cfg = lf.read_config(path, kind)
    spec = Pi0Spec.from_config(cfg)
    procs = read_pi_processors(path, kind)
    tok = load_tokenizer(tokenizer, procs.tokenizer_name, path)
    device = default_device(device)
    if network is None:
        net = load_pi0_network(path / lf.WEIGHTS, spec, device)
    else:
        net = network(spec).to(device).eval()
    return LeRobotPi0Policy(
        net,
        cfg,
        procs,
        tok,
        checkpoint=str(path),
        seed=seed,
        embodiment=folder_embodiment(path, cfg, kind),
        folder_json=lf.read_folder_json(path, cfg),
    )
