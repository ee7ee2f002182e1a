"""A LeRobot SmolVLA ``pretrained_model`` folder as a vlastack policy (``infer``, ``reset``,
``metadata``); the loader registered as the ``lerobot_smolvla`` checkpoint format.

What ``infer(obs)`` runs, stage by stage as LeRobot 0.6.1 (each stage a method, so that the
tests compare each with the golden tensors):

1. ``preprocess``: the cameras and the state found under LeRobot's keys or any client spelling
   (``policy.preprocess_observations``; uint8 frames / 255, CHW), the state normalized by the
   ``normalizer_processor`` step; the task (``task`` or ``prompt``; ``""`` when absent, as
   ``lerobot_eval`` sends for task-less environments) gets a trailing ``\\n``
   (``smolvla_new_line_processor``) and is tokenized as ``tokenizer_processor`` says
   (``max_length``, ``padding`` 'longest' or 'max_length', ``padding_side``, truncation) into
   ``observation.language.tokens`` / ``.attention_mask``.
2. ``prepare``: what ``SmolVLAPolicy.prepare_images`` / ``prepare_state`` give
   ``sample_actions``: each camera in config order resized with padding on the top/left to
   ``resize_imgs_with_padding`` (read as (width, height)) and mapped to [-1, 1]; empty cameras
   (``empty_cameras``) as all -1 images with mask 0 after them; the state zero-padded to
   ``max_state_dim``.
3. ``sample_actions`` (``smolvla.SmolVLAModel``) from noise of shape (B, chunk_size,
   max_action_dim), drawn from a generator seeded with ``seed`` at load and on ``reset``
   (LeRobot draws from the global RNG; ``predict_normalized(..., noise=)`` takes given noise);
   the first ``action_dim`` columns are the normalized chunk.
4. ``postprocess``: the ``unnormalizer_processor`` over the whole chunk.

The reply is the whole chunk (``chunk_size`` actions, dataset units); ``metadata
["execute_horizon"]`` is ``n_action_steps``. The tokenizer is loaded as the processor JSON names
it (``tokenizer.load_tokenizer``: a local folder or the local HF cache) unless one is passed
(``tokenizer=``; the fixtures' ``tokenizer.ByteTokenizer``). A LeRobot < 0.4 folder (no processor
JSON) is read as LeRobot's migration would: stats from model.safetensors, the tokenizer settings
from config.json (``tokenizer_max_length``, ``pad_language_to``, right padding).

The noise generator is per session (``new_session()``; the server gives each connection one).
``infer_guided`` is real-time chunking (``serving.runtime.RTCRuntime``): ``functional.rtc``'s
guided Euler sampler over the model's velocity, toward the committed actions (``guided``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlastack.errors import ConfigError
from vlastack.observation import TASK_KEY
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.guided import check_prev_actions, guidance
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer
from vlastack.pretrained.lerobot.observation import example_observation, task_text
from vlastack.pretrained.lerobot.policy import (
    Processors,
    default_device,
    folder_embodiment,
    legacy_processors,
    no_embodiment,
    preprocess_observations,
)
from vlastack.pretrained.lerobot.session import (
    LeRobotSession,
    SessionInfer,
    check_sessions,
    draw_noise,
)
from vlastack.pretrained.lerobot.smolvla import (
    EMPTY_CAMERA,
    SmolVLANetwork,
    SmolVLASpec,
    pad_vector,
    resize_with_pad,
)
from vlastack.pretrained.lerobot.tokenizer import tokenize_like_lerobot
from vlastack.pretrained.lerobot.vla_runner import RunnerSlot
from vlastack.profiling import stage

FORMAT_NAME = "lerobot_smolvla"
SMOLVLA_HINT = (
    "num_vlm_layers, num_expert_layers, attention_mode, self_attn_every_n_layers, "
    "expert_width_multiplier, max_state_dim, max_action_dim and vlm_model_name (the SmolVLM "
    "config the architecture is read from) in config.json"
)
NEWLINE_STEP = "smolvla_new_line_processor"
TOKENIZER_STEP = "tokenizer_processor"
TOKENS = "observation.language.tokens"
TOKEN_MASK = "observation.language.attention_mask"


@dataclass(frozen=True)
class TokenizerStep:
    """The ``tokenizer_processor`` step's config."""

    tokenizer_name: str
    max_length: int
    padding: str = "longest"
    padding_side: str = "right"
    truncation: bool = True
    task_key: str = TASK_KEY

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str) -> TokenizerStep:
        try:
            step = cls(
                tokenizer_name=str(cfg["tokenizer_name"]),
                max_length=int(cfg.get("max_length", 48)),
                padding=str(cfg.get("padding", "max_length")),
                padding_side=str(cfg.get("padding_side", "right")),
                truncation=bool(cfg.get("truncation", True)),
                task_key=str(cfg.get("task_key", TASK_KEY)),
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{where}: the tokenizer_processor step needs 'tokenizer_name' and an integer "
                f"'max_length' (got {dict(cfg)!r})"
            ) from None
        if step.padding not in ("longest", "max_length") or step.padding_side not in (
            "left",
            "right",
        ):
            raise ConfigError(
                f"{where}: tokenizer_processor padding {step.padding!r} / padding_side "
                f"{step.padding_side!r} not supported (padding 'longest' or 'max_length', side "
                "'left' or 'right')"
            )
        return step


def _normalizer(path: Path, steps: list[lf.Step], names: tuple[str, ...]) -> Any:
    found = [s for s in steps if s.name in names]
    if not found:
        return None
    if len(found) > 1:
        raise ConfigError(f"{path}: {len(found)} normalizer steps in one pipeline; expected one")
    step = found[0]
    return FeatureNormalizer.from_step(
        step, lf.read_stats(path, step.state_file) if step.state_file else {}
    )


def read_smolvla_processors(
    path: Path, cfg: Mapping[str, Any]
) -> tuple[Processors, TokenizerStep, bool]:
    """(rename + normalizers, the tokenizer step, whether the task gets a trailing newline)."""
    path = Path(path)
    if not (path / lf.PREPROCESSOR).is_file():  # LeRobot < 0.4: tokenized inside the model
        tok = TokenizerStep(
            str(cfg.get("vlm_model_name")),
            int(cfg.get("tokenizer_max_length", 48)),
            str(cfg.get("pad_language_to", "longest")),
        )
        return legacy_processors(path, dict(cfg)), tok, True
    known = (lf.RENAME_STEP, *lf.PASSIVE_STEPS, *lf.NORMALIZER_STEPS, NEWLINE_STEP, TOKENIZER_STEP)
    pre = lf.read_pipeline(path, lf.PREPROCESSOR)
    lf.check_steps(path, lf.PREPROCESSOR, pre, known)
    post: list[lf.Step] = []
    if (path / lf.POSTPROCESSOR).is_file():
        post = lf.read_pipeline(path, lf.POSTPROCESSOR)
        lf.check_steps(path, lf.POSTPROCESSOR, post, known)
    toks = [s for s in pre if s.name == TOKENIZER_STEP]
    if len(toks) != 1:
        raise ConfigError(
            f"{path / lf.PREPROCESSOR} has {len(toks)} tokenizer_processor steps; SmolVLA needs "
            "exactly one (it turns the task into the language tokens)"
        )
    rename: dict[str, str] = {}
    for s in pre:
        if s.name == lf.RENAME_STEP:
            rename.update(s.config.get("rename_map") or {})
    procs = Processors(
        rename,
        _normalizer(path, pre, ("normalizer_processor",)),
        _normalizer(path, post, ("unnormalizer_processor",)),
    )
    tok = TokenizerStep.from_config(toks[0].config, str(path / lf.PREPROCESSOR))
    return procs, tok, any(s.name == NEWLINE_STEP for s in pre)


def language_facts(path: Path, cfg: Mapping[str, Any]) -> tuple[Processors, dict[str, Any]]:
    """For ``vlastack inspect``: the processors and what the language input goes through (the
    tokenizer and the VLM config, and whether each is found locally), without loading either."""
    from vlastack.pretrained.lerobot.hub import hub_cache_dir
    from vlastack.pretrained.lerobot.smolvlm import KNOWN_VLMS
    from vlastack.pretrained.lerobot.tokenizer import local_folder

    procs, tok, newline = read_smolvla_processors(path, cfg)

    def where(name: str, files: tuple[str, ...]) -> str:
        folder = local_folder(name, Path(path))
        if folder is not None:
            have = [f for f in files if (folder / f).is_file()]
            if not have:
                return f"local folder {folder.resolve()}, but it has no {' / '.join(files)}"
            return f"local folder {folder.resolve()}"
        cached = hub_cache_dir() / ("models--" + name.replace("/", "--"))
        if cached.is_dir():
            return f"local Hugging Face cache ({cached})"
        return f"NOT FOUND locally: `hf download {name}`"

    vlm = str(cfg.get("vlm_model_name") or "")
    vlm_where = where(vlm, ("config.json",))
    if vlm_where.startswith("NOT FOUND") and vlm in KNOWN_VLMS:
        vlm_where = "vlastack's KNOWN_VLMS table (the hub config is not cached)"
    facts = {
        "tokenizer": tok.tokenizer_name,
        "tokenizer_found": where(tok.tokenizer_name, ("tokenizer.json", "tokenizer_config.json")),
        "max_length": tok.max_length,
        "padding": tok.padding,
        "padding_side": tok.padding_side,
        "newline": newline,
        "vlm": vlm,
        "vlm_config_found": vlm_where,
    }
    facts["summary"] = (
        f"{'a trailing newline is added, then ' if newline else ''}tokenized by "
        f"{tok.tokenizer_name!r} ({facts['tokenizer_found']}), padded to the "
        f"{tok.padding} ({tok.max_length} max) on the {tok.padding_side}; VLM config "
        f"{vlm!r} ({vlm_where})"
    )
    return procs, facts


class LeRobotSmolVLAPolicy(RunnerSlot, SessionInfer):
    """LeRobot SmolVLA checkpoint with the vlastack policy contract (module docstring)."""

    def __init__(
        self,
        network: SmolVLANetwork,
        spec: SmolVLASpec,
        processors: Processors,
        tokenizer: Any,
        tokenizer_step: TokenizerStep,
        *,
        newline: bool = True,
        checkpoint: str | None = None,
        seed: int = 0,
        embodiment: dict[str, Any] | None = None,
        folder_json: lf.FolderJSON | None = None,
        vlm_source: str | None = None,
    ) -> None:
        self.network = network.eval()
        self.spec = spec
        self.processors = processors
        self.tokenizer = tokenizer
        self.tokenizer_step = tokenizer_step
        self.newline = newline
        self.checkpoint = checkpoint
        self.seed = seed
        self.embodiment_dict = embodiment
        self.folder_json = folder_json
        self.vlm_source = vlm_source
        self.num_resets = 0
        self._session = self.new_session()  # the state of callers that pass no session

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def runner_format(self) -> str:
        return FORMAT_NAME

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.spec
        by_key = dict(zip(s.image_keys, s.image_shapes, strict=True))
        shapes = {k: by_key[k] for k in s.cameras}
        shapes[s.state_key] = (s.state_dim,)
        return shapes

    @property
    def metadata(self) -> dict[str, Any]:
        s = self.spec
        return {
            "policy": "lerobot/smolvla",
            "format": FORMAT_NAME,
            "checkpoint": self.checkpoint,
            "action_horizon": s.chunk_size,
            "execute_horizon": s.n_action_steps,
            "obs_horizon": 1,
            "action_dim": s.action_dim,
            "state_dim": s.state_dim,
            "cameras": list(s.cameras),
            "image_size": list(self.input_shapes[s.cameras[0]][1:]),
            "observation_keys": [*self.input_shapes, TASK_KEY],
            "language": True,
            "flow_steps": s.num_steps,
            "vlm": s.vlm_model_name,
            "vlm_config_source": self.vlm_source,
            "tokenizer": self.tokenizer_step.tokenizer_name,
            "seed": self.seed,
            "embodiment": self.embodiment_dict,
            "runner": self.runner,
        }

    def example_observation(self, seed: int = 0) -> dict[str, Any]:
        """A random observation of the checkpoint's shapes, in LeRobot keys, with a task."""
        return example_observation(self.input_shapes, set(self.spec.cameras), seed)

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
        """Reseed the default session's sampler (SmolVLA keeps no observation history)."""
        self.num_resets += 1
        self._session.reset()

    # ---- LeRobot's stages, usable one by one (the tests compare each) -----------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tasks -> (ids (B, L) int64, mask (B, L) bool) as LeRobot's newline + tokenizer
        steps make them."""
        st = self.tokenizer_step
        if self.newline:
            texts = [t if t.endswith("\n") else f"{t}\n" for t in texts]
        return tokenize_like_lerobot(self.tokenizer, st, list(texts), self.device)

    def preprocess(self, observations: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        s, p = self.spec, self.processors
        out = preprocess_observations(
            observations,
            self.input_shapes,
            set(s.cameras),
            p.rename_map,
            p.normalizer,
            self.device,
            "SmolVLA",
        )
        ids, mask = self.tokenize(
            [task_text(o, self.tokenizer_step.task_key) for o in observations]
        )
        out[TOKENS], out[TOKEN_MASK] = ids, mask
        return out

    def prepare(
        self, pre: Mapping[str, torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """(images in [-1, 1], image masks, padded state) as ``sample_actions`` takes them."""
        s = self.spec
        images, masks = [], []
        for key in s.cameras:
            img = pre[key]
            if s.resize is not None:
                img = resize_with_pad(img, *s.resize)
            images.append(img * 2.0 - 1.0)
            masks.append(torch.ones(img.shape[0], dtype=torch.bool, device=img.device))
        for _ in (k for k in s.image_keys if k.startswith(EMPTY_CAMERA)):
            images.append(torch.ones_like(images[-1]) * -1)
            masks.append(torch.zeros_like(masks[-1]))
        return images, masks, pad_vector(pre[s.state_key], s.max_state_dim)

    def draw_noise(
        self, batch: int, sessions: Sequence[LeRobotSession] | None = None
    ) -> torch.Tensor:
        """The sampler's start noise (B, chunk_size, max_action_dim): row i from
        ``sessions[i]``, or the whole batch from the default session's generator."""
        s = self.spec
        shape = (batch, s.chunk_size, s.max_action_dim)
        return draw_noise(shape, self._generator, sessions, self.device)

    @torch.inference_mode()
    def predict_normalized(
        self,
        pre: Mapping[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> torch.Tensor:
        """Preprocessed tensors -> (B, chunk_size, action_dim), normalized units."""
        s = self.spec
        with stage("preprocess"):
            images, masks, state = self.prepare(pre)
        if noise is None:
            noise = self.draw_noise(state.shape[0], sessions)
        out = self.sample_fn(
            images, masks, pre[TOKENS], pre[TOKEN_MASK], state, noise.to(state.device)
        )
        return out[:, :, : s.action_dim]

    def postprocess(self, chunk: torch.Tensor) -> torch.Tensor:
        return self.processors.postprocess(self.spec.action_key, chunk)

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
                pre = self.preprocess(batch)
            normalized = self.predict_normalized(pre, sessions=sessions)
            with stage("unnormalize"):
                chunk = self.postprocess(normalized)
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
        §3.6). With none (L = 0) this is ``infer``. Same noise draw as ``infer``."""
        prev = check_prev_actions(prev_actions, self.spec.action_dim, "SmolVLA")
        session = session or self._session
        if len(prev) == 0:
            return self.infer(obs, session=session)
        s = self.spec
        with torch.no_grad():  # not inference_mode: the guidance differentiates the expert
            pre = self.preprocess([obs])
            images, masks, state = self.prepare(pre)
            noise = self.draw_noise(1, [session])
            prev_t = torch.from_numpy(prev).to(self.device)
            un = self.processors.unnormalizer
            prev_n = un.normalize(s.action_key, prev_t) if un is not None else prev_t
            target, weights = guidance(
                prev_n, inference_delay, s.chunk_size, s.max_action_dim, schedule
            )
            out = self.network.model.sample_actions_guided(
                images,
                masks,
                pre[TOKENS],
                pre[TOKEN_MASK],
                state,
                noise,
                target,
                weights,
                max_guidance_weight,
            )
            chunk = self.postprocess(out[:, :, : s.action_dim])
        return {"actions": chunk[0].float().cpu().numpy()}


def load_smolvla_network(
    file: Path, spec: SmolVLASpec, vlm_config: Any, device: str | torch.device = "cpu"
) -> SmolVLANetwork:
    """Build on the meta device, check the file's keys and shapes (``weights.check_state_dict``),
    then load the tensors in place (cast to float32, as LeRobot's float32 model copies them)."""
    from safetensors import safe_open

    from vlastack.pretrained.lerobot.legacy import weight_key
    from vlastack.pretrained.lerobot.weights import check_state_dict

    with torch.device("meta"):
        net = SmolVLANetwork(spec, vlm_config)
    want = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in want.items()}
    with safe_open(str(file), framework="pt") as f:
        names = {k: m for k in f.keys() if (m := weight_key(k)) is not None}  # noqa: SIM118
        found = {m: tuple(f.get_slice(k).get_shape()) for k, m in names.items()}
        check_state_dict(shapes, found, str(file), SMOLVLA_HINT)
        weights = {m: f.get_tensor(k).to(want[m].dtype) for k, m in names.items()}
    net.load_state_dict(weights, strict=True, assign=True)
    leftover = [n for n, b in net.named_buffers() if b.is_meta]
    if leftover:  # pragma: no cover - the modules used hold no non-persistent buffers
        raise ConfigError(f"SmolVLA build left buffers without values: {leftover[:5]}")
    return net.to(device).eval()


def load_lerobot_smolvla(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    tokenizer: Any = None,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
    network: Any = None,
) -> LeRobotSmolVLAPolicy:
    """Load a LeRobot SmolVLA ``pretrained_model`` folder. The VLM architecture comes from
    config.json's ``vlm_model_name`` (``smolvlm.vlm_config``); ``tokenizer`` (anything with a
    Hugging Face tokenizer's call signature) replaces the one the processor JSON names.
    ``network``: a callable ``(spec, vlm_config) -> SmolVLANetwork`` used instead of reading
    model.safetensors (the int8 copy's loader, ``quantize.load_lerobot_int8``)."""
    from vlastack.pretrained.lerobot.smolvlm import vlm_config
    from vlastack.pretrained.lerobot.tokenizer import load_tokenizer

    del expect_embodiment
    path = Path(path)
    no_embodiment(path, embodiment)
    cfg = lf.read_config(path, "smolvla")
    spec = SmolVLASpec.from_config(cfg)
    procs, tok_step, newline = read_smolvla_processors(path, cfg)
    vcfg, source = vlm_config(spec.vlm_model_name, path)
    if tokenizer is None:
        tokenizer = load_tokenizer(tok_step.tokenizer_name, path, what="tokenizer_name")
    device = default_device(device)
    if network is None:
        net = load_smolvla_network(path / lf.WEIGHTS, spec, vcfg, device)
    else:
        net = network(spec, vcfg).to(device).eval()
    return LeRobotSmolVLAPolicy(
        net,
        spec,
        procs,
        tokenizer,
        tok_step,
        newline=newline,
        checkpoint=str(path),
        seed=seed,
        embodiment=folder_embodiment(path, cfg, "smolvla"),
        folder_json=lf.read_folder_json(path, cfg),
        vlm_source=source,
    )
