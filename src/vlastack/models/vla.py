"""The VLA: vision encoder → projector → language backbone → action head, as one ``nn.Module``.

Prefix tokens are [image tokens per camera and frame, language tokens (a decoder LM) or one pooled
instruction embedding, one state token]; the action head reads them as ``context``. Options follow
the survey's design axes: FiLM (RT-1), gradient insulation and an auxiliary discrete-token loss
(π0.5 knowledge insulation, Driess et al. 2505.23705: 256-bin or FAST tokens, next-token CE in the
LM after the prefix), action bins as the last 256 LM tokens (RT-2 / OpenVLA), and RT-H's
language-motion hierarchy and its two-rate generalization (System 2 / System 1,
``models/hierarchy.py``). Batches are already normalized.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.batch import as_batch
from vlastack.errors import ConfigError, DataError
from vlastack.functional.action_tokenization import (
    actions_to_token_ids,
    bin_index,
    token_ids_to_actions,
)
from vlastack.functional.fast_tokenizer import FastTokenizer
from vlastack.models.aux_fast import build_aux_fast, fast_lm_ids
from vlastack.models.bitlinear import ternarize_
from vlastack.models.common import freeze_, masked_mean
from vlastack.models.foresight import Foresight, subgoal_config, world_model_config
from vlastack.models.hierarchy import SUBTASK_KEY, SubtaskHierarchy
from vlastack.models.language import build_language
from vlastack.models.language.language_motion import label_motions, motion_vocabulary
from vlastack.models.projectors import build_projector
from vlastack.models.trunk import build_trunk, encoder_forward
from vlastack.models.vision import MultiCameraEncoder, build_vision_encoder
from vlastack.models.vla_config import (
    AUX_TOKEN_LOSSES,
    TERNARY_PARTS,
    FastAuxConfig,
    VLAConfig,
    config_for_embodiment,
)
from vlastack.profiling import stage

# Batch key of precomputed vision-encoder outputs, (B, cams, T, n, D_enc); see
# training/feature_cache.py. When present the (frozen) encoder is skipped.
IMAGE_FEATURES_KEY = "observation.image_features"


def _build_head(
    name: str, kwargs: dict[str, Any], context_dim: int, action_dim: int, action_horizon: int
) -> nn.Module:
    from vlastack.models import action_heads

    registry = getattr(action_heads, "ACTION_HEADS", None)
    if registry is None:
        raise ConfigError(
            "no action heads are registered (vlastack.models.action_heads.ACTION_HEADS missing)"
        )
    if name not in registry:
        raise ConfigError(f"model config field 'head': {registry.unknown_message(name)}")
    return registry.get(name)(
        kwargs, context_dim=context_dim, action_dim=action_dim, action_horizon=action_horizon
    )


HeadBuilder = Callable[[str, dict[str, Any], int, int, int], nn.Module]


class VLA(nn.Module):
    """Composes the parts named in a ``VLAConfig``; ``loss(batch) -> (B,)``, ``sample_actions``."""

    # Any: the three language kinds expose different helpers (encode / tokenize, embed, ...).
    language: Any
    motion_classifier: nn.Linear
    motion_embed: nn.Embedding
    head: Any  # an action head (vlastack.models.action_heads.base.ActionHead contract)
    # The runner slots (``vlastack.runners``): set, they are called at inference instead of
    # ``head.sample_actions(context, mask, generator=...)`` and the trunk's
    # ``encoder_forward(trunk, x, mask)`` and ``self.vision(batch, film_cond)`` (the vision
    # runner only in eval mode); None runs the modules themselves (eager)
    head_runner: Any = None
    trunk_runner: Any = None
    vision_runner: Any = None
    last_subgoal: torch.Tensor | None = None  # CoT-VLA: latents of the last generated subgoal

    def __init__(self, cfg: VLAConfig, head_builder: HeadBuilder | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.language = build_language(cfg.language, cfg.language_kwargs)
        self.lang_kind: str = self.language.kind
        decoder = self.lang_kind == "decoder"
        D = int(self.language.out_dim) if decoder else int(cfg.width)
        self.context_dim = D
        if cfg.freeze_language:
            freeze_(self.language)
        self.lang_proj = (
            nn.Linear(self.language.out_dim, D) if self.lang_kind == "encoder" else None
        )

        self.vision: MultiCameraEncoder | None = None
        self.projector: nn.Module | None = None
        if cfg.cameras:
            film_dim = int(self.language.out_dim) if cfg.film else 0
            self.vision = MultiCameraEncoder(
                lambda: build_vision_encoder(cfg.vision, cfg.vision_kwargs, film_dim=film_dim),
                cfg.cameras,
                cfg.obs_horizon,
                (int(cfg.image_size[0]), int(cfg.image_size[1])),
                shared=cfg.shared_vision,
                pooled=cfg.vision_pooled,
            )
            if cfg.freeze_vision:
                freeze_(self.vision)
            self.projector = build_projector(
                cfg.projector, cfg.projector_kwargs, self.vision.out_dim, D
            )
            self.camera_embed = nn.Parameter(torch.randn(len(cfg.cameras), D) * 0.02)
            self.time_embed = nn.Parameter(torch.randn(cfg.obs_horizon, D) * 0.02)
            self.image_pos: nn.Parameter | None = None
            if cfg.image_pos_embed:
                n_tokens = self._tokens_per_frame()
                self.image_pos = nn.Parameter(torch.randn(n_tokens, D) * 0.02)
        self.state_proj = (
            nn.Linear(cfg.obs_horizon * cfg.state_dim, D) if cfg.state_dim > 0 else None
        )
        self.trunk: nn.Module | None = None
        if cfg.trunk_layers > 0 and not decoder:
            self.trunk = build_trunk(D, cfg.trunk_heads, cfg.trunk_layers)

        self.head = None
        if not cfg.action_tokens_in_lm:
            build = head_builder or _build_head
            self.head = build(
                cfg.head, dict(cfg.head_kwargs), D, cfg.action_dim, cfg.action_horizon
            )
        self.motion_vocab: list[str] = []
        if cfg.motion_hierarchy:
            self.motion_vocab = motion_vocabulary(cfg.action_dim, cfg.gripper_index)
            self.motion_classifier = nn.Linear(D, len(self.motion_vocab))
            self.motion_embed = nn.Embedding(len(self.motion_vocab), D)
        self.hierarchy: SubtaskHierarchy | None = None
        if cfg.hierarchy:
            self.hierarchy = SubtaskHierarchy(
                D, cfg.action_dim, cfg.gripper_index, cfg.motion_threshold
            )
        self.foresight: Foresight | None = None  # CoT-VLA subgoal / world model
        if self.vision is not None and (subgoal_config(cfg) or world_model_config(cfg)):
            self.foresight = Foresight(cfg, D, self.vision, self.head)
        self.aux_bins: nn.Module | None = None
        if cfg.aux_token_loss == "bins" and not decoder:
            self.aux_bins = nn.Linear(D, cfg.action_horizon * cfg.action_dim * cfg.num_action_bins)
        if (
            (cfg.action_tokens_in_lm or cfg.aux_token_loss == "bins")
            and decoder
            and self.language.vocab_size < cfg.num_action_bins
        ):
            raise ConfigError("the LM vocabulary is smaller than num_action_bins")
        self.aux_fast: FastTokenizer | None = None
        if cfg.aux_token_loss == "fast":
            self.aux_fast = build_aux_fast(self.config, self.language.vocab_size)
        for part in cfg.ternary:
            mod = self.head if part == "head" else getattr(self, part, None)
            if mod is not None:
                ternarize_(mod)

    def fast_lm_ids(
        self, actions: torch.Tensor, action_is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chunks' FAST tokens as LM ids (``aux_fast.fast_lm_ids``) on this model's device."""
        assert self.aux_fast is not None
        ids = fast_lm_ids(self.aux_fast, self.language.vocab_size, actions, action_is_pad)
        return tuple(t.to(self.device) for t in ids)  # type: ignore[return-value]

    def _tokens_per_frame(self) -> int:
        """Tokens the projector makes from one frame (one dummy forward at build time)."""
        assert self.vision is not None and self.projector is not None
        was_training = self.training
        self.vision.eval()
        self.projector.eval()
        with torch.no_grad():
            H, W = self.config.image_size
            feats = self.vision.encode_frames(0, torch.zeros(1, 3, int(H), int(W)))
            n = int(self.projector(feats).shape[1])
        self.vision.train(was_training)
        self.projector.train(was_training)
        return n

    @property
    def action_output_range(self) -> float | None:
        """The largest |normalized action| the policy can output (None = unbounded): 1.0 for
        256-bin tokens in the LM vocabulary, else the head's ``output_range``."""
        if self.config.action_tokens_in_lm:
            return 1.0
        return getattr(self.head, "output_range", None)

    @property
    def action_range_reason(self) -> str:
        if self.config.action_tokens_in_lm:
            return "256-bin action tokens span [-1, 1]"
        return f"head '{self.config.head}': {getattr(self.head, 'output_range_reason', '')}"

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _batch_size(self, batch: Mapping[str, Any]) -> int:
        for key in ("action", "observation.state"):
            if isinstance(batch.get(key), torch.Tensor):
                return int(batch[key].shape[0])
        for cam in self.config.cameras:
            x = batch.get(f"observation.images.{cam}")
            if isinstance(x, torch.Tensor):
                return int(x.shape[0])
        if "task" in batch:
            return len(batch["task"])
        raise DataError(
            "cannot infer the batch size: the batch has no images, state, action or task"
        )

    def _tasks(self, batch: Mapping[str, Any], B: int) -> list[str]:
        task = batch.get("task")
        if task is None:
            raise DataError(
                f"batch has no 'task' (instruction strings); language '{self.config.language}' needs one per sample"
            )
        tasks = [task] * B if isinstance(task, str) else list(task)
        if len(tasks) != B:
            raise DataError(f"batch 'task' has {len(tasks)} strings for batch size {B}")
        return tasks

    def _state(self, batch: Mapping[str, Any], B: int) -> torch.Tensor:
        cfg = self.config
        x = batch.get("observation.state")
        expected = f"(B, T={cfg.obs_horizon}, S={cfg.state_dim})"
        if not isinstance(x, torch.Tensor):
            raise DataError(
                f"batch has no tensor 'observation.state' {expected}; set state_dim=0 to run without state"
            )
        if x.dim() != 3 or tuple(x.shape[1:]) != (cfg.obs_horizon, cfg.state_dim):
            raise DataError(
                f"'observation.state' has shape {tuple(x.shape)}, model expects {expected}: state_dim must "
                "match the embodiment spec's state size and obs_horizon the dataset window."
            )
        return x.reshape(B, -1).to(self.device, torch.float32)

    def _actions(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        a = batch.get("action")
        if (
            not isinstance(a, torch.Tensor)
            or a.dim() != 3
            or tuple(a.shape[1:]) != (cfg.action_horizon, cfg.action_dim)
        ):
            got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise DataError(
                f"'action' is {got}, model expects (B, action_horizon={cfg.action_horizon}, "
                f"action_dim={cfg.action_dim}); match the embodiment spec's action size and the recipe's horizon."
            )
        pad = batch.get("action_is_pad")
        if pad is None:
            pad = torch.zeros(a.shape[:2], dtype=torch.bool)
        return a.to(self.device, torch.float32), pad.to(self.device).bool()

    # ------------------------------------------------------------------ prefix
    def _image_tokens(
        self, batch: Mapping[str, Any], film_cond: torch.Tensor | None
    ) -> torch.Tensor:
        assert self.vision is not None and self.projector is not None
        feats = batch.get(IMAGE_FEATURES_KEY)  # precomputed by a frozen encoder (feature_cache)
        if feats is None:
            vision = self.vision
            if (
                self.vision_runner is not None
                and not torch.is_grad_enabled()
                and not vision.training
            ):
                vision = self.vision_runner  # runners are inference only
            feats = vision(batch, film_cond)  # (B, cams, T, n, D_enc)
        B, C, T, n, _ = feats.shape
        tok = self.projector(feats.flatten(0, 2))  # (B*C*T, n', D): reduce each frame on its own
        tok = tok.view(B, C, T, tok.shape[1], -1)
        tok = (
            tok
            + self.camera_embed[None, :, None, None, :]
            + self.time_embed[None, None, :, None, :]
        )
        if self.image_pos is not None:
            tok = tok + self.image_pos[None, None, None, :, :]
        return tok.flatten(1, 3)

    def _image_token_mask(self, batch: Mapping[str, Any], B: int, n_tokens: int) -> torch.Tensor:
        """(B, n_tokens) bool, camera-major like ``_image_tokens``: False on the tokens of a camera
        a sample lacks entirely, i.e. every history step of ``observation.images.<cam>_is_pad``
        set (a mixture member without that camera, fed as a zero image; Octo and openpi mask such
        images the same way). A camera with only some padded history steps (episode start, frames
        edge-repeated) keeps all its tokens."""
        cams = self.config.cameras
        valid = torch.ones(B, len(cams), dtype=torch.bool, device=self.device)
        for i, cam in enumerate(cams):
            pad = batch.get(f"observation.images.{cam}_is_pad")
            if isinstance(pad, torch.Tensor):
                valid[:, i] = ~pad.to(self.device, torch.bool).reshape(B, -1).all(-1)
        return valid.repeat_interleave(n_tokens // len(cams), dim=1)

    def _prefix_embeds(
        self, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, N, D) prefix embeddings before any backbone, mask (B, N), and the instruction embedding."""
        batch = as_batch(batch)  # a plain dict is checked here: one spelling of each key
        B = self._batch_size(batch)
        dev = self.device
        parts: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        sentence = None
        text = None
        with stage("language") if self.lang_kind in ("encoder", "decoder") else nullcontext():
            if self.lang_kind == "encoder":
                sentence = self.language.encode(self._tasks(batch, B), device=dev)  # (B, 384)
            elif self.lang_kind == "decoder":
                ids, tmask = self.language.tokenize(self._tasks(batch, B), device=dev)
                text = (self.language.embed(ids), tmask)
        if self.vision is not None:
            with stage("vision"):  # encoder + projector + camera/time embeddings
                img = self._image_tokens(batch, sentence if self.config.film else None)
            parts.append(img)
            masks.append(self._image_token_mask(batch, B, img.shape[1]))
        if sentence is not None:
            assert self.lang_proj is not None
            parts.append(self.lang_proj(sentence).unsqueeze(1))
            masks.append(torch.ones(B, 1, dtype=torch.bool, device=dev))
        if text is not None:
            parts.append(text[0])
            masks.append(text[1])
        if self.state_proj is not None:
            parts.append(self.state_proj(self._state(batch, B)).unsqueeze(1))
            masks.append(torch.ones(B, 1, dtype=torch.bool, device=dev))
        if not parts:
            raise ConfigError(
                "model config gives the policy no input: no cameras, no language, state_dim=0"
            )
        return torch.cat(parts, 1), torch.cat(masks, 1), sentence

    def encode_prefix(
        self,
        batch: Mapping[str, Any],
        action_ids: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
        embeds: tuple[torch.Tensor, torch.Tensor, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> context (B, N, D), context_mask (B, N), and (with ``action_ids`` (B, K), decoder only)
        the LM logits (B, K+1, V), teacher-forced after the prefix: entry k predicts token k, the
        last one what follows token K-1. ``action_mask`` (B, K) marks right padding (False).
        ``embeds``: ``_prefix_embeds(batch)`` when the caller already has them."""
        x, mask, _ = embeds if embeds is not None else self._prefix_embeds(batch)
        if self.lang_kind == "decoder":
            N = x.shape[1]
            if action_ids is not None:
                x = torch.cat([x, self.language.embed(action_ids)], 1)
                if action_mask is None:
                    action_mask = torch.ones_like(action_ids, dtype=torch.bool)
                mask = torch.cat([mask, action_mask], 1)
            # Causal LM: prefix positions never attend to the action tokens after them, so the
            # context the head reads is the same with or without them.
            with stage("backbone"):
                hidden, _ = self.language.hidden_states(x, mask)
            logits = None
            if action_ids is not None:
                logits = self.language.logits(hidden[:, N - 1 :])
            return hidden[:, :N], mask[:, :N], logits
        if self.trunk is not None:
            with stage("backbone"):
                if self.trunk_runner is not None and not torch.is_grad_enabled():
                    x = self.trunk_runner(x, mask)  # runners are inference only
                else:
                    x = encoder_forward(self.trunk, x, mask)
        return x, mask, None

    # ------------------------------------------------------------------ training
    def _token_ce(
        self,
        logits: torch.Tensor,
        ids: torch.Tensor,
        is_pad: torch.Tensor,
        dim_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # (B, H*A)
        w = (~is_pad).float().repeat_interleave(self.config.action_dim, dim=1)
        if dim_mask is not None:
            w = w * dim_mask.to(w).reshape(w.shape[0], -1).repeat(1, self.config.action_horizon)
        return (ce * w).sum(1) / w.sum(1).clamp_min(1.0)

    def motion_labels(self, actions: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        names = label_motions(
            actions, self.config.motion_threshold, self.config.gripper_index, is_pad
        )
        index = {m: i for i, m in enumerate(self.motion_vocab)}
        return torch.tensor([index[m] for m in names], device=actions.device)

    def _with_motion(
        self, ctx: torch.Tensor, mask: torch.Tensor, motion: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.motion_embed(motion).unsqueeze(1)
        return torch.cat([ctx, tok], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)

    def loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-sample training loss (B,) on a normalized batch."""
        cfg = self.config
        batch = as_batch(batch)
        actions, is_pad = self._actions(batch)
        dim_mask = batch.get("action_dim_mask")
        dim_mask = dim_mask.to(self.device) if isinstance(dim_mask, torch.Tensor) else None
        if self.hierarchy is not None:
            return self._hierarchy_loss(batch, actions, is_pad, dim_mask)
        decoder = self.lang_kind == "decoder"
        vocab = self.language.vocab_size if decoder else 0
        lm_tokens = decoder and (cfg.action_tokens_in_lm or cfg.aux_token_loss == "bins")
        ids = (
            actions_to_token_ids(actions, vocab, cfg.num_action_bins).flatten(1)
            if lm_tokens
            else None
        )
        ids_mask = fast_tgt = None
        if cfg.aux_token_loss == "fast":
            ids, ids_mask, fast_tgt = self.fast_lm_ids(actions, is_pad)
        ctx, mask, logits = self.encode_prefix(batch, ids, ids_mask)
        if cfg.action_tokens_in_lm:
            assert logits is not None and ids is not None
            return self._token_ce(logits[:, :-1], ids, is_pad, dim_mask)
        head_ctx = ctx.detach() if cfg.insulate_head else ctx
        head_mask = mask
        total = torch.zeros(actions.shape[0], device=self.device)
        if cfg.motion_hierarchy:
            labels = self.motion_labels(actions, is_pad)
            motion_logits = self.motion_classifier(masked_mean(ctx, mask))
            total = total + cfg.motion_loss_weight * F.cross_entropy(
                motion_logits, labels, reduction="none"
            )
            head_ctx, head_mask = self._with_motion(head_ctx, mask, labels)  # teacher forcing
        if self.foresight is not None:  # future-latent losses; the head reads the true subgoal
            extra, head_ctx, head_mask = self.foresight.loss(
                self.vision, batch, ctx, mask, head_ctx, head_mask, actions
            )
            total = total + extra
        assert self.head is not None
        kwargs = {"action_dim_mask": dim_mask} if dim_mask is not None else {}
        total = total + self.head.loss(head_ctx, head_mask, actions, is_pad, **kwargs)
        if cfg.aux_token_loss == "bins":
            if logits is not None and ids is not None:
                aux = self._token_ce(logits[:, :-1], ids, is_pad, dim_mask)
            else:
                assert self.aux_bins is not None
                B = actions.shape[0]
                aux_logits = self.aux_bins(masked_mean(ctx, mask)).view(B, -1, cfg.num_action_bins)
                aux = self._token_ce(
                    aux_logits, bin_index(actions, cfg.num_action_bins).flatten(1), is_pad, dim_mask
                )
            total = total + cfg.aux_loss_weight * aux
        elif cfg.aux_token_loss == "fast":
            # Every FAST token mixes all dims, so action_dim_mask cannot apply (padded dims are
            # zeros, which cost few tokens); padded steps were filled before the DCT.
            assert logits is not None and fast_tgt is not None
            ce = F.cross_entropy(
                logits.transpose(1, 2), fast_tgt, ignore_index=-100, reduction="none"
            )
            aux = ce.sum(1) / (fast_tgt != -100).sum(1).clamp_min(1)
            total = total + cfg.aux_loss_weight * aux
        return total

    def _hierarchy_loss(
        self,
        batch: Mapping[str, Any],
        actions: torch.Tensor,
        is_pad: torch.Tensor,
        dim_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """System 2's subtask CE on the backbone + System 1's head loss on the pre-backbone
        tokens and the window's own subtask (teacher forcing)."""
        assert self.hierarchy is not None and self.head is not None
        embeds = self._prefix_embeds(batch)
        ctx, mask, _ = self.encode_prefix(batch, embeds=embeds)
        labels = self.hierarchy.labels(actions, is_pad)
        high = self.hierarchy.loss(ctx, mask, labels)
        low_ctx, low_mask = self.hierarchy.low_level_context(embeds[0], embeds[1], labels)
        kwargs = {"action_dim_mask": dim_mask} if dim_mask is not None else {}
        low = self.head.loss(low_ctx, low_mask, actions, is_pad, **kwargs)
        return self.config.motion_loss_weight * high + low

    # ------------------------------------------------------------------ inference
    @property
    def supports_hierarchy(self) -> bool:
        """True for a System 2 / System 1 model (``hierarchy=True``)."""
        return self.hierarchy is not None

    @torch.no_grad()
    def predict_subtasks(self, batch: Mapping[str, Any]) -> list[str]:
        """System 2 (the slow high level): the subtask for each sample."""
        if self.hierarchy is None:
            raise ConfigError("predict_subtasks needs a model built with hierarchy=True")
        ctx, mask, _ = self.encode_prefix(batch)
        return self.hierarchy.predict(ctx, mask)

    @torch.no_grad()
    def predict_motions(self, batch: Mapping[str, Any]) -> list[str]:
        """RT-H: the language motion the policy would condition on for each sample."""
        if not self.config.motion_hierarchy:
            raise ConfigError("predict_motions needs motion_hierarchy=True")
        ctx, mask, _ = self.encode_prefix(batch)
        idx = self.motion_classifier(masked_mean(ctx, mask)).argmax(-1)
        return [self.motion_vocab[i] for i in idx.tolist()]

    @torch.no_grad()
    def _decode_action_tokens(self, batch: Mapping[str, Any]) -> torch.Tensor:
        cfg = self.config
        x, mask, _ = self._prefix_embeds(batch)
        vocab = self.language.vocab_size
        lo = vocab - cfg.num_action_bins
        with stage("backbone"):
            hidden, cache = self.language.hidden_states(x, mask, use_cache=True)
        with stage("head"):  # greedy decoding of the action tokens, one LM step each
            return self._greedy_action_tokens(hidden, cache, mask, lo)

    def _greedy_action_tokens(
        self, hidden: torch.Tensor, cache: Any, mask: torch.Tensor, lo: int
    ) -> torch.Tensor:
        cfg = self.config
        vocab = self.language.vocab_size
        logits = self.language.logits(hidden[:, -1])
        ids = []
        for k in range(cfg.action_horizon * cfg.action_dim):
            nxt = logits[:, lo:].argmax(-1) + lo  # greedy, restricted to the action bins
            ids.append(nxt)
            if k + 1 == cfg.action_horizon * cfg.action_dim:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            hidden, cache = self.language.hidden_states(
                self.language.embed(nxt[:, None]), mask, cache, use_cache=True
            )
            logits = self.language.logits(hidden[:, -1])
        tokens = torch.stack(ids, 1)
        return token_ids_to_actions(tokens, vocab, cfg.num_action_bins).view(
            -1, cfg.action_horizon, cfg.action_dim
        )

    def head_context(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """What the action head reads at inference: the prefix (+ RT-H's predicted motion, +
        the generated CoT-VLA subgoal tokens), or with ``hierarchy`` System 1's context: the
        pre-backbone tokens + ``batch["subtask"]`` (the latest high-level output), System 2 run
        here when the batch has none."""
        if self.hierarchy is not None:
            embeds = self._prefix_embeds(batch)
            subtask = batch.get(SUBTASK_KEY)
            if subtask is None:
                ctx, mask, _ = self.encode_prefix(batch, embeds=embeds)
                ids = self.hierarchy.logits(ctx, mask).argmax(-1)
            else:
                ids = self.hierarchy.ids(subtask, embeds[0].shape[0], self.device)
            return self.hierarchy.low_level_context(embeds[0], embeds[1], ids)
        ctx, mask, _ = self.encode_prefix(batch)
        return self._conditioned(ctx, mask)[:2]

    def _conditioned(
        self, prefix: torch.Tensor, pmask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        ctx, mask, goal = prefix, pmask, None
        if self.config.motion_hierarchy:
            with stage("head"):
                motion = self.motion_classifier(masked_mean(ctx, mask)).argmax(-1)
                ctx, mask = self._with_motion(ctx, mask, motion)
        if self.foresight is not None:
            with stage("head"):
                ctx, mask, goal = self.foresight.extend(prefix, pmask, ctx, mask)
            self.last_subgoal = goal  # the evaluation compares it with the real frame t+k
        return ctx, mask, goal

    @torch.no_grad()
    def sample_actions(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A normalized action chunk (B, action_horizon, action_dim)."""
        if self.config.action_tokens_in_lm:
            return self._decode_action_tokens(batch)
        assert self.head is not None
        runner = self.head_runner or self.head.sample_actions
        if self.foresight is not None and self.foresight.rank_samples > 1:
            prefix, pmask, _ = self.encode_prefix(batch)  # world-model ranking of N samples
            ctx, mask, goal = self._conditioned(prefix, pmask)
            with stage("head"):
                return self.foresight.rank(prefix, pmask, ctx, mask, goal, runner, generator)
        ctx, mask = self.head_context(batch)
        with stage("head"):
            return runner(ctx, mask, generator=generator)

    @property
    def supports_guided_sampling(self) -> bool:
        """True when the head has real-time-chunking guidance (flow matching)."""
        return self.head is not None and hasattr(self.head, "sample_actions_guided")

    def sample_actions_guided(
        self,
        batch: Mapping[str, Any],
        target: torch.Tensor,
        weights: torch.Tensor,
        *,
        max_guidance_weight: float = 5.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Real-time chunking (``Policy.infer_guided``): a normalized chunk guided towards
        ``target`` (B, H, A) with per-step ``weights`` (H,). The guidance takes VJPs through the
        head, so the prefix is built under no_grad, not inference_mode."""
        if not self.supports_guided_sampling:
            raise ConfigError(f"head '{self.config.head}' has no guided (RTC) sampling")
        with torch.no_grad():
            ctx, mask = self.head_context(batch)
        with stage("head"):
            return self.head.sample_actions_guided(
                ctx, mask, target, weights, max_guidance_weight, generator=generator
            )

    # ------------------------------------------------------------------ groups
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by freeze group: ``vision``, ``projector`` (+ camera/time embeddings),
        ``language`` (the LM or trunk, the instruction projection: the backbone), ``state``,
        ``head`` (+ RT-H motion classifier, auxiliary bins). Every parameter is in exactly one."""
        groups: dict[str, list[nn.Parameter]] = {
            k: [] for k in ("vision", "language", "projector", "head", "state")
        }
        owner = {
            "vision": "vision",
            "projector": "projector",
            "camera_embed": "projector",
            "image_pos": "projector",
            "time_embed": "projector",
            "language": "language",
            "lang_proj": "language",
            "trunk": "language",
            "state_proj": "state",
        }
        for name, p in self.named_parameters():
            groups[owner.get(name.split(".")[0], "head")].append(p)
        return groups


def build_vla(cfg: VLAConfig | Mapping[str, Any], head_builder: HeadBuilder | None = None) -> VLA:
    """Build a ``VLA`` from a ``VLAConfig`` or its dict form (``config.json``)."""
    if not isinstance(cfg, VLAConfig):
        cfg = VLAConfig.from_dict(cfg)
    return VLA(cfg, head_builder=head_builder)


__all__ = [
    "AUX_TOKEN_LOSSES",
    "IMAGE_FEATURES_KEY",
    "TERNARY_PARTS",
    "VLA",
    "FastAuxConfig",
    "VLAConfig",
    "build_vla",
    "config_for_embodiment",
]
