"""A LeRobot X-VLA ``pretrained_model`` folder as a vlastack policy (``infer``, ``reset``,
``metadata``); the loader registered as the ``lerobot_xvla`` checkpoint format.

What ``infer(obs)`` runs, stage by stage as LeRobot 0.6.1 (each stage a method, so that the
tests compare each with the golden tensors):

1. ``preprocess``: the cameras and the state found under LeRobot's keys or any client spelling
   (uint8 frames / 255, CHW, as ``prepare_observation_for_inference``); the task tokenized as
   the ``tokenizer_processor`` step says (no newline; X-VLA's default: padded to 64 on the
   right, BART's tokenizer); ``xvla_image_to_float``, ``xvla_imagenet_normalize`` and
   ``xvla_add_domain_id`` (``xvla_inputs``); the ``normalizer_processor`` last.
2. ``prepare``: the model inputs of ``XVLAPolicy._build_model_inputs`` (stacked views and
   their mask, domain id, proprio padded to ``max_state_dim``).
3. ``generate_actions`` (``xvla_model.XVLAModel``) from start noise of shape (B, chunk_size,
   dim_action), drawn from a generator seeded with ``seed`` at load and on ``reset`` (LeRobot
   draws it from the global RNG inside ``generate_actions`` and ignores ``noise=``;
   ``predict_normalized(..., noise=)`` takes given noise). The action space's postprocess
   gives the real action columns.
4. ``postprocess``: the ``unnormalizer_processor`` over the whole chunk.

The reply is the whole chunk (``chunk_size`` actions, dataset units); ``metadata
["execute_horizon"]`` is ``n_action_steps``. The language attention mask is computed (it is
part of LeRobot's preprocessed batch) but, as in LeRobot, not used: the encoder attends to the
padding tokens too. The tokenizer is loaded as the processor JSON names it (a local folder or
the local HF cache) unless one is passed (``tokenizer=``; the fixtures' ``ByteTokenizer``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vlastack.errors import ConfigError
from vlastack.observation import TASK_KEY
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.observation import example_observation, find_input, task_text
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
from vlastack.pretrained.lerobot.tokenizer import tokenize_like_lerobot
from vlastack.pretrained.lerobot.xvla_inputs import (
    DOMAIN_KEY,
    TOKEN_MASK,
    TOKENS,
    XVLAProcessors,
    XVLASpec,
    image_to_float,
    imagenet_normalize,
    pad_state,
    read_xvla_processors,
    resize_with_pad,
    selected,
)
from vlastack.profiling import stage

FORMAT_NAME = "lerobot_xvla"


class LeRobotXVLAPolicy(SessionInfer):
    """LeRobot X-VLA checkpoint with the vlastack policy contract (module docstring)."""

    def __init__(
        self,
        network: Any,
        spec: XVLASpec,
        processors: XVLAProcessors,
        tokenizer: Any,
        *,
        num_domains: int,
        checkpoint: str | None = None,
        seed: int = 0,
        embodiment: dict[str, Any] | None = None,
        folder_json: lf.FolderJSON | None = None,
    ) -> None:
        self.network = network.eval()
        self.spec = spec
        self.processors = processors
        self.tokenizer = tokenizer
        self.tokenizer_step = processors.tokenizer
        self.num_domains = num_domains
        self.checkpoint = checkpoint
        self.seed = seed
        self.embodiment_dict = embodiment
        self.folder_json = folder_json
        self.num_resets = 0
        self._session = self.new_session()

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dim_action(self) -> int:
        return int(self.network.model.space.dim_action)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.spec
        shapes = dict(zip(s.cameras, s.image_shapes, strict=True))
        if s.state_key is not None:
            shapes[s.state_key] = (s.state_dim,)
        return shapes

    @property
    def metadata(self) -> dict[str, Any]:
        s = self.spec
        return {
            "policy": "lerobot/xvla",
            "format": FORMAT_NAME,
            "checkpoint": self.checkpoint,
            "action_horizon": s.chunk_size,
            "execute_horizon": s.n_action_steps,
            "obs_horizon": 1,
            "action_dim": s.action_dim,
            "state_dim": s.state_dim,
            "cameras": list(s.cameras),
            "image_size": list(s.image_shapes[0][1:]),
            "observation_keys": [*self.input_shapes, TASK_KEY],
            "language": True,
            "flow_steps": s.steps,
            "action_mode": s.action_mode,
            "domain_id": self.processors.domain_id,
            "tokenizer": self.tokenizer_step.tokenizer_name,
            "seed": self.seed,
            "embodiment": self.embodiment_dict,
        }

    def example_observation(self, seed: int = 0) -> dict[str, Any]:
        """A random observation of the checkpoint's shapes, in LeRobot keys, with a task."""
        return example_observation(self.input_shapes, set(self.spec.cameras), seed)

    def new_session(self) -> LeRobotSession:
        """One client's state (its noise generator, seeded with ``seed``)."""
        return LeRobotSession(self, seed=self.seed)

    def reset(self) -> None:
        """Reseed the default session's sampler (X-VLA keeps no observation history)."""
        self.num_resets += 1
        self._session.reset()

    # ---- LeRobot's stages, usable one by one (the tests compare each) -----------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tasks -> (ids (B, L) int64, mask (B, L) bool) as ``tokenizer_processor`` makes them."""
        st = self.tokenizer_step
        if self.tokenizer is None:
            raise ConfigError(
                "this X-VLA policy was loaded without a tokenizer (tokenizer=False); load it "
                f"with one to tokenize tasks ({st.tokenizer_name!r})"
            )
        return tokenize_like_lerobot(self.tokenizer, st, list(texts), self.device)

    def preprocess(self, observations: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Raw observations -> LeRobot's preprocessor output (golden ``preprocessed.*``)."""
        s, p = self.spec, self.processors
        out = preprocess_observations(
            observations,
            self.input_shapes,
            set(s.cameras),
            p.base.rename_map,
            None,  # the normalizer runs last, after the image steps
            self.device,
            "X-VLA",
        )
        out[TOKENS], out[TOKEN_MASK] = self.tokenize(
            [task_text(o, self.tokenizer_step.task_key) for o in observations]
        )
        img = p.images
        for key in s.cameras:
            if img.has_to_float and selected(img.to_float_keys, key):
                out[key] = image_to_float(key, out[key], img.validate_range)
            if img.has_imagenet and selected(img.imagenet_keys, key):
                out[key] = imagenet_normalize(key, out[key])
        out[DOMAIN_KEY] = torch.full(
            (len(observations),), p.domain_id, dtype=torch.long, device=self.device
        )
        dkey = s.domain_feature_key
        if dkey and all(find_input(o, dkey, False) is not None for o in observations):
            out[dkey] = torch.as_tensor(
                [int(find_input(o, dkey, False)) for o in observations], device=self.device
            )
        norm = p.base.normalizer
        if norm is not None:
            for k in self.input_shapes:
                out[k] = norm.normalize(k, out[k])
        return out

    def prepare(
        self, pre: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, views (B, V, C, H, W), view mask (B, V), domain (B,), proprio (B, P)) as
        ``generate_actions`` takes them (golden ``generate_actions.*``)."""
        s = self.spec
        ids = pre[TOKENS]
        images = []
        for key in s.cameras:
            img = pre[key]
            if s.resize is not None:
                img = resize_with_pad(img, *s.resize)
            images.append(img)
        shapes = {tuple(i.shape) for i in images}
        if len(shapes) > 1:
            raise ConfigError(
                f"X-VLA stacks its cameras, which must share one shape (got {sorted(shapes)}); "
                "set resize_imgs_with_padding in config.json or send equal frames"
            )
        views = torch.stack(images, dim=1)
        b = views.shape[0]
        mask = torch.ones((b, views.shape[1]), dtype=torch.bool, device=views.device)
        pad = s.num_views - views.shape[1]
        if pad > 0:
            views = torch.cat([views, views.new_zeros((b, pad, *views.shape[2:]))], dim=1)
            mask = torch.cat([mask, mask.new_zeros((b, pad))], dim=1)
        domain = pre.get(s.domain_feature_key or DOMAIN_KEY, pre[DOMAIN_KEY])
        domain = domain.reshape(b, -1)[:, 0].to(torch.long)
        bad = [int(d) for d in domain.tolist() if not 0 <= int(d) < self.num_domains]
        if bad:
            raise ConfigError(
                f"X-VLA domain id {bad[0]} is outside the checkpoint's {self.num_domains} "
                "domains (config.json num_domains); set the xvla_add_domain_id step's "
                "'domain_id' in policy_preprocessor.json to the embodiment's domain"
            )
        if s.use_proprio and s.state_key is not None:
            proprio = pad_state(pre[s.state_key], s.max_state_dim)
        else:
            proprio = views.new_zeros((b, 0))
        return ids, views, mask, domain, proprio

    def draw_noise(
        self, batch: int, sessions: Sequence[LeRobotSession] | None = None
    ) -> torch.Tensor:
        """The sampler's start noise (B, chunk_size, dim_action)."""
        shape = (batch, self.spec.chunk_size, self.dim_action)
        return draw_noise(shape, self._session.generator, sessions, self.device)

    @torch.inference_mode()
    def predict_normalized(
        self,
        pre: Mapping[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> torch.Tensor:
        """Preprocessed tensors -> (B, chunk_size, action_dim), normalized units."""
        with stage("preprocess"):
            ids, views, mask, domain, proprio = self.prepare(pre)
        if noise is None:
            noise = self.draw_noise(ids.shape[0], sessions)
        out = self.network.model.generate_actions(
            ids, views, mask, domain, proprio, noise.to(self.device), self.spec.steps
        )
        return out[..., : self.spec.action_dim].float()

    def postprocess(self, chunk: torch.Tensor) -> torch.Tensor:
        return self.processors.base.postprocess(self.spec.action_key, chunk)

    def lerobot_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict as LeRobot's ``save_pretrained`` writes it (``vlastack export
        lerobot``): the tied ``shared`` embedding left out, its alias ``encoder.embed_tokens``
        kept (``xvla_weights``)."""
        from vlastack.pretrained.lerobot.xvla_weights import SHARED

        return {k: v for k, v in self.network.state_dict().items() if k != SHARED}

    @property
    def lerobot_file_metadata(self) -> dict[str, str]:
        """The header metadata ``safetensors.torch.save_model`` writes for the dropped alias
        (what LeRobot's file holds: ``{shared: encoder.embed_tokens}``)."""
        from vlastack.pretrained.lerobot.xvla_weights import EMBED, SHARED

        return {SHARED: EMBED}

    # ---- policy contract --------------------------------------------------------------------
    def infer_batch(
        self,
        batch: list[Mapping[str, Any]],
        *,
        sessions: Sequence[LeRobotSession] | None = None,
    ) -> list[dict[str, Any]]:
        """Chunks for several observations in one call (row i's noise from ``sessions[i]``)."""
        check_sessions(sessions, len(batch), self)
        with torch.inference_mode():
            with stage("preprocess"):
                pre = self.preprocess(batch)
            normalized = self.predict_normalized(pre, sessions=sessions)
            with stage("unnormalize"):
                chunk = self.postprocess(normalized)
        return [{"actions": a} for a in chunk.float().cpu().numpy()]


def build_xvla(cfg: Mapping[str, Any], spec: XVLASpec) -> tuple[Any, int]:
    """(a ``build()`` of the network for this config, num_domains)."""
    from vlastack.pretrained.lerobot.xvla import TransformerSpec, action_space
    from vlastack.pretrained.lerobot.xvla_model import XVLANetwork, florence_config

    fconfig = florence_config(cfg)
    space = action_space(spec.action_mode, spec.action_dim, spec.max_action_dim)
    width = getattr(fconfig.vision_config, "projection_dim", None)
    if width is None:
        raise ConfigError(
            "config.json florence_config.vision_config needs 'projection_dim' (the width of "
            "Florence-2's image tokens, which X-VLA's transformer reads)"
        )
    out_width = space.keep if space.keep is not None else space.dim_action
    if out_width != spec.action_dim:
        raise ConfigError(
            f"config.json: action_mode {spec.action_mode!r} returns {out_width} action values "
            f"but output_features {spec.action_key!r} has {spec.action_dim}; set the action "
            "feature's shape to the action space's width (or action_mode 'auto')"
        )
    tspec = TransformerSpec.from_config(cfg, space.dim_action, spec.dim_proprio, int(width))
    return (lambda: XVLANetwork(fconfig, tspec, space)), tspec.num_domains


def load_lerobot_xvla(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    tokenizer: Any = None,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
) -> LeRobotXVLAPolicy:
    """Load a LeRobot X-VLA ``pretrained_model`` folder. The Florence-2 architecture comes from
    config.json's ``florence_config``; ``tokenizer`` (anything with a Hugging Face tokenizer's
    call signature) replaces the one the processor JSON names (``facebook/bart-large``);
    ``tokenizer=False`` loads none (for writing the folder back only)."""
    from vlastack.pretrained.lerobot.tokenizer import load_tokenizer
    from vlastack.pretrained.lerobot.xvla_weights import load_xvla_network

    del expect_embodiment
    path = Path(path)
    no_embodiment(path, embodiment)
    cfg = lf.read_config(path, "xvla")
    spec = XVLASpec.from_config(cfg)
    procs = read_xvla_processors(path)
    build, num_domains = build_xvla(cfg, spec)
    if tokenizer is None:
        tokenizer = load_tokenizer(procs.tokenizer.tokenizer_name, path, what="tokenizer_name")
    elif tokenizer is False:  # ``export lerobot``: weights and stats only, no task to tokenize
        tokenizer = None
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
    network = load_xvla_network(path / lf.WEIGHTS, build, dtype, default_device(device))
    return LeRobotXVLAPolicy(
        network,
        spec,
        procs,
        tokenizer,
        num_domains=num_domains,
        checkpoint=str(path),
        seed=seed,
        embodiment=folder_embodiment(path, cfg, "xvla"),
        folder_json=lf.read_folder_json(path, cfg),
    )
