"""LeRobot X-VLA's whole network (``model.vlm`` + ``model.transformer``): Florence-2 from
transformers' own ``Florence2Model`` (DaViT vision tower, multi-modal projector, BART encoder;
the BART decoder is dropped, as LeRobot does), the soft-prompted transformer of ``xvla``, and
the sampler.

The Florence-2 architecture is config.json's ``florence_config`` (LeRobot 0.6.1 has no default
one): given in transformers' format, or in the Microsoft remote-code format older X-VLA
checkpoints store (``dim_embed``, ``image_pos_embed``, ``visual_temporal_embedding``,
``florence2_language``), translated field by field as LeRobot 0.6.1's
``configuration_xvla._translate_vision_config`` does.

``encode`` is LeRobot's ``XVLAModel.forward_vlm``: every valid camera through
``get_image_features`` (its ``pooler_output``: DaViT, then the projector's spatial + temporal
pooling and ``image_projection``), invalid (padded) views as zero tokens; the FIRST view's
tokens are put before the text embeddings (``get_input_embeddings()``, i.e. ``shared``) and the
BART encoder runs over all of them with an all-ones mask (the tokenizer's padding is attended
too); the other views go to the transformer as ``aux_visual``.

``vlastack bench latency`` stages: ``vision`` (DaViT + projector), ``language`` (the token
embedding), ``backbone`` (the BART encoder), ``head`` (the denoising steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.xvla import ActionSpace, SoftPromptedTransformer, TransformerSpec
from vlastack.profiling import stage

FLORENCE_KEYS = (
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "image_token_id",
    "is_encoder_decoder",
    "tie_word_embeddings",
)


def _vision_config(vision: Mapping[str, Any]) -> dict[str, Any]:
    """Remote-code (``davit``) vision config -> transformers' ``florence_vision`` fields."""
    v = dict(vision)
    kind = v.pop("model_type", None)
    if kind not in (None, "davit", "florence_vision"):
        raise ConfigError(
            f"config.json florence_config.vision_config.model_type {kind!r}: X-VLA's vision "
            "tower is DaViT ('florence_vision' or 'davit')"
        )
    v.pop("enable_checkpoint", None)
    pos = v.pop("image_pos_embed", None)
    if pos is not None:
        if pos.get("type") != "learned_abs_2d":
            raise ConfigError(
                f"config.json florence_config.vision_config.image_pos_embed type "
                f"{pos.get('type')!r} is not supported (only 'learned_abs_2d')"
            )
        v["max_position_embeddings"] = pos["max_pos_embeddings"]
    temporal = v.pop("visual_temporal_embedding", None)
    if temporal is not None:
        if temporal.get("type") != "COSINE":
            raise ConfigError(
                "config.json florence_config.vision_config.visual_temporal_embedding type "
                f"{temporal.get('type')!r} is not supported (only 'COSINE')"
            )
        v["max_temporal_embeddings"] = temporal["max_temporal_embeddings"]
    source = v.pop("image_feature_source", None)
    if source is not None and list(source) != ["spatial_avg_pool", "temporal_avg_pool"]:
        raise ConfigError(
            f"config.json florence_config.vision_config.image_feature_source {source!r} is not "
            "supported (transformers' Florence-2 projector pools spatial_avg_pool + "
            "temporal_avg_pool)"
        )
    if "dim_embed" in v:
        v["embed_dim"] = v.pop("dim_embed")
    return v


def florence_config(cfg: Mapping[str, Any]) -> Any:
    """transformers' ``Florence2Config`` from config.json's ``florence_config``."""
    from transformers import Florence2Config

    fc = cfg.get("florence_config")
    if not isinstance(fc, dict) or not fc.get("vision_config") or not fc.get("text_config"):
        raise ConfigError(
            "config.json 'florence_config' must hold 'vision_config' and 'text_config' (the "
            "Florence-2 architecture; LeRobot 0.6.1 has no default): copy it from the X-VLA "
            "checkpoint this folder was trained from"
        )
    text = dict(fc["text_config"])
    if text.get("model_type", "florence2_language") == "florence2_language":
        text["model_type"] = "bart"  # the remote-code language config is BART's, field for field
    kwargs = {k: fc[k] for k in FLORENCE_KEYS if k in fc}
    try:
        return Florence2Config(
            vision_config=_vision_config(fc["vision_config"]), text_config=text, **kwargs
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"config.json 'florence_config' is not a Florence-2 config: {exc}"
        ) from None


class XVLAModel(nn.Module):
    """``model``: ``vlm`` (Florence2Model without the BART decoder) and ``transformer``."""

    def __init__(self, fconfig: Any, tspec: TransformerSpec, space: ActionSpace) -> None:
        from transformers import Florence2Model

        super().__init__()
        self.space = space
        self.vlm = Florence2Model(fconfig)
        del self.vlm.language_model.decoder  # X-VLA uses the encoder side only
        self.transformer = SoftPromptedTransformer(tspec)

    def encode(
        self, input_ids: torch.Tensor, images: torch.Tensor, image_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V, C, H, W) images with a (B, V) validity mask and (B, L) token ids -> (encoder
        output (B, T0 + L, D), other views' tokens (B, (V - 1) * T0, D))."""
        b, views = images.shape[:2]
        flat_mask = image_mask.reshape(-1).to(torch.bool)
        if not bool(flat_mask.any()):
            raise ConfigError("X-VLA needs at least one valid camera view per batch")
        with stage("vision"):
            feats = self.vlm.get_image_features(images.flatten(0, 1)[flat_mask]).pooler_output
            tokens, width = feats.shape[1:]
            all_feats = feats.new_zeros((b * views, tokens, width))
            all_feats[flat_mask] = feats
            all_feats = all_feats.view(b, views, tokens, width)
        with stage("language"):
            text = self.vlm.get_input_embeddings()(input_ids)
        with stage("backbone"):  # the BART encoder over image + text tokens
            merged = torch.cat([all_feats[:, 0], text], dim=1)
            ones = torch.ones(merged.shape[:2], dtype=torch.long, device=merged.device)
            enc = self.vlm.language_model.encoder(attention_mask=ones, inputs_embeds=merged)[0]
        return enc, all_feats[:, 1:].reshape(b, -1, width)

    def generate_actions(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor,
        image_mask: torch.Tensor,
        domain: torch.Tensor,
        proprio: torch.Tensor,
        noise: torch.Tensor,
        steps: int,
    ) -> torch.Tensor:
        """LeRobot's ``XVLAModel.generate_actions`` with the start noise given (B, chunk,
        dim_action): the action space's output (``auto``: the real action columns)."""
        dtype = next(self.transformer.parameters()).dtype
        images, proprio, x1 = images.to(dtype), proprio.to(dtype), noise.to(dtype)
        vlm, aux = self.encode(input_ids, images, image_mask)
        b = x1.shape[0]
        action = torch.zeros_like(x1)
        steps = max(1, int(steps))
        with stage("head"):  # the soft-prompted transformer, once per step
            for i in range(steps, 0, -1):
                t = torch.full((b,), i / steps, device=x1.device, dtype=dtype)
                x_t = x1 * t.view(-1, 1, 1) + action * (1 - t).view(-1, 1, 1)
                p, x = self.space.preprocess(proprio, x_t)
                action = self.transformer(domain, vlm, aux, x, p, t)
            return self.space.postprocess(action)


class XVLANetwork(nn.Module):
    """The module whose ``state_dict`` keys are LeRobot's (``model.vlm.*``,
    ``model.transformer.*``)."""

    def __init__(self, fconfig: Any, tspec: TransformerSpec, space: ActionSpace) -> None:
        super().__init__()
        self.model = XVLAModel(fconfig, tspec, space)
