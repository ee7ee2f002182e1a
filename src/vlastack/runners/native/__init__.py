"""The ``native`` runner: the CPU fast path. Each block type has one fast form here, built from
the plain module when the runner is built, so any head made of these blocks is fast for free:

- ``CrossDecoder`` → ``NativeDecoder`` (``decoder.DecoderPlan``: the whole decoder one native
  call, or one loop of raw ops with the short-memory re-association);
- ``Attention`` / ``MLP`` / ``nn.Linear`` → packed forms (``layers``): q/k/v in one product,
  the activation fused into the first FFN product, weights packed once;
- the observation trunk (``nn.TransformerEncoder``) → ``trunk.EncoderPlan``;
- the vision encoder → ``vision.fold_encoder``: each eval-mode Conv2d → BatchNorm2d pair folded
  into one convolution (MobileNetV2, ``hf_resnet``);
- whole-head shortcuts where a head's math allows them: ACT's z = 0 sampler (``act``),
  the diffusion U-Net's plan and split FiLM (``unet``), and π0's expert dropping an all-valid
  attention mask (same softmax).

Products run on vlastack's native kernels (``vlastack.native``: float32 CPU, built on first use
with the host C compiler); without them (bfloat16, no compiler, ``VLASTACK_NATIVE=0``) the same
plans run oneDNN's prepacked products where the weight is large enough to pay, else MKL.

The runner works on a shallow copy of the head (its own child-module table; parameters shared,
not copied): the module the caller holds is never changed, and training it stays plain. The
packs are copies of the weights when the runner was built: rebuild it after they change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlastack.models.action_heads.act import ACTHead
from vlastack.models.action_heads.diffusion import DiffusionHead
from vlastack.models.action_heads.flow_matching import FlowMatchingHead
from vlastack.models.layers.attention import Attention
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.mlp import MLP
from vlastack.runners.base import HeadFn, Runner, TrunkFn, VisionFn, no_grad
from vlastack.runners.native.act import native_act
from vlastack.runners.native.decoder import DecoderPlan, NativeDecoder
from vlastack.runners.native.layers import PackedAttention, PackedLinear, packed_mlp
from vlastack.runners.native.linear import plain_linears
from vlastack.runners.native.rewrite import rewrite, shallow_copy
from vlastack.runners.native.trunk import native_trunk
from vlastack.runners.native.unet import native_unet_head
from vlastack.runners.native.vision import native_vision


def _decoder(m: nn.Module) -> nn.Module | None:
    return NativeDecoder(m) if DecoderPlan.supports(m) else None  # type: ignore[arg-type]


def _attention(m: nn.Module) -> nn.Module | None:
    return PackedAttention(m) if plain_linears(m) else None  # type: ignore[arg-type]


def _mlp(m: nn.Module) -> nn.Module | None:
    return packed_mlp(m) if plain_linears(m) else None  # type: ignore[arg-type]


# block type → its fast form (None: this instance is not supported; its children are tried)
BLOCK_RULES: dict[type, Callable[[nn.Module], nn.Module | None]] = {
    CrossDecoder: _decoder,
    Attention: _attention,
    MLP: _mlp,
    nn.Linear: lambda m: PackedLinear(m),  # type: ignore[arg-type]
}


def swap_blocks(module: nn.Module) -> nn.Module:
    """``module`` with every block a rule covers replaced by its fast form: the module itself
    where nothing under it changes, else a shallow copy (the original is untouched)."""
    return rewrite(module, lambda m: BLOCK_RULES.get(type(m)))


def _flow(head: Any) -> Any:
    """π0's expert with the all-valid suffix mask dropped once per chunk (same softmax; SDPA
    then skips building the additive mask), on top of the block swaps."""
    fast: Any = swap_blocks(head)
    if fast is head:
        fast = shallow_copy(head)
    prefix_cache = fast.prefix_cache

    def cache_without_full_mask(*args: Any, **kwargs: Any) -> Any:
        cache = prefix_cache(*args, **kwargs)
        if cache.mask is not None and bool(cache.mask.all()):
            cache.mask = None
        return cache

    fast.prefix_cache = cache_without_full_mask
    return fast


class NativeRunner(Runner):
    name = "native"
    description = "vlastack's CPU fast path: native kernels / prepacked plans per block type"
    # float32: the plans reorder sums (stacked products, re-associated attention, split FiLM)
    tolerance = (1e-4, 1e-4)

    def not_applicable(self, head: nn.Module, device: torch.device) -> str | None:
        if device.type != "cpu":
            return f"the native runner runs on a CPU; this model is on {device}"
        return None

    def head(self, head: nn.Module) -> HeadFn:
        if isinstance(head, ACTHead) and type(head).sample_actions is ACTHead.sample_actions:
            fn = native_act(head)
            if fn is not None:
                return no_grad(fn)
        if isinstance(head, DiffusionHead) and head.denoiser == "unet":
            fast = native_unet_head(head, shallow_copy(swap_blocks(head)))
            if fast is not None:
                return fast.sample_actions  # type: ignore[no-any-return]
        if isinstance(head, FlowMatchingHead):
            return _flow(head).sample_actions  # type: ignore[no-any-return]
        return swap_blocks(head).sample_actions  # type: ignore[return-value]

    def trunk(self, trunk: nn.Module) -> TrunkFn | None:
        return native_trunk(trunk)

    def vision(self, vision: nn.Module) -> VisionFn | None:
        return native_vision(vision)
