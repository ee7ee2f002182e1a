"""Loading a LeRobot pi0 / pi0.5 ``model.safetensors`` into ``Pi0Network``, strictly.

The file's keys are LeRobot's state-dict keys (``model.*``). ``expected_shapes(spec)`` lists what
the config builds (meta device, nothing allocated) plus the two unused ``lm_head`` matrices;
``weights.check_state_dict`` compares it with the file header (a missing key, an extra key or a
shape that differs is a ConfigError naming the keys). The network is then built on the meta
device and the file's tensors are assigned to it (no random init of a 3B model), the
``lm_head`` matrices skipped, and PaliGemma's ``lm_head`` used as ``embed_tokens`` when the file
has no ``embed_tokens`` (LeRobot's ``_fix_pytorch_state_dict_keys``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.paligemma import EMBED_KEY, UNUSED_HEADS
from vlastack.pretrained.lerobot.pi0 import Pi0Network, Pi0Spec
from vlastack.pretrained.lerobot.weights import check_state_dict


def expected_shapes(spec: Pi0Spec) -> dict[str, tuple[int, ...]]:
    """Every key LeRobot saves for this config, with its shape."""
    with torch.device("meta"):
        net = Pi0Network(spec)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    vocab = spec.pali.vocab
    shapes[UNUSED_HEADS[0]] = (vocab, spec.vlm.width)
    shapes[UNUSED_HEADS[1]] = (vocab, spec.expert.width)
    return shapes


def load_pi0_network(
    file: Path,
    spec: Pi0Spec,
    device: str | torch.device = "cpu",
    key_map: Callable[[str], str] | None = None,
    optional: tuple[str, ...] = (),
) -> Pi0Network:
    """``key_map``: file key -> LeRobot key (openpi's files lack the ``model.`` prefix);
    ``optional``: LeRobot keys a file may lack (openpi's expert lm_head)."""
    from safetensors import safe_open

    expected = expected_shapes(spec)
    rename = key_map or (lambda k: k)
    with safe_open(str(file), framework="pt") as f:
        names = {rename(k): k for k in f.keys()}  # noqa: SIM118
        found = {k: tuple(f.get_slice(n).get_shape()) for k, n in names.items()}
        for key in optional:
            if key not in found:
                expected.pop(key, None)
        if EMBED_KEY not in found and UNUSED_HEADS[0] in found:
            found[EMBED_KEY] = found[UNUSED_HEADS[0]]  # the lm_head copy, below
        try:
            check_state_dict(expected, found, str(file))
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (pi0: check paligemma_variant, action_expert_variant, image_resolution, "
                "max_state_dim and max_action_dim; pi0 and pi05 checkpoints differ in "
                "state_proj / time_mlp_* and the expert's adaRMS norms)"
            ) from None
        # cloned: the tensors safetensors hands out may sit at unaligned offsets of the file's
        # buffer, which changes which CPU kernels run (the last bits of pi0's chunk moved by
        # ~5e-7 without it); a fresh allocation is aligned as load_state_dict's copy would be
        weights = {k: f.get_tensor(n).clone() for k, n in names.items() if k not in UNUSED_HEADS}
        if EMBED_KEY not in weights:
            weights[EMBED_KEY] = f.get_tensor(names[UNUSED_HEADS[0]]).clone()
    with torch.device("meta"):
        net = Pi0Network(spec)
    net.load_state_dict(weights, strict=True, assign=True)
    net.model.paligemma_with_expert.fix_buffers()
    net.set_precision()
    return net.to(device).eval()


def unused_at_inference(spec: Pi0Spec) -> list[str]:
    """The saved keys that cannot change an action: both ``lm_head`` matrices and, of
    PaliGemma's language model, the last layer's query/output projections, MLP and
    post-attention norm and the final norm (only that layer's keys and values reach the
    expert; ``GemmaStack.prefill`` stops there). LeRobot's own perturbation probe lists the same
    nine for the fixtures (golden.json ``unused_at_inference``)."""
    last = (
        f"model.paligemma_with_expert.paligemma.model.language_model.layers.{spec.vlm.depth - 1}."
    )
    return [
        UNUSED_HEADS[0],
        last + "self_attn.q_proj.weight",
        last + "self_attn.o_proj.weight",
        last + "mlp.gate_proj.weight",
        last + "mlp.up_proj.weight",
        last + "mlp.down_proj.weight",
        last + "post_attention_layernorm.weight",
        "model.paligemma_with_expert.paligemma.model.language_model.norm.weight",
        UNUSED_HEADS[1],
    ]
