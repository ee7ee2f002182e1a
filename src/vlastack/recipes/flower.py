"""The ``flower`` recipe: FLOWER (Reuss et al. 2025, arXiv 2509.04996), scaled to train on a CPU.

Its two ideas are two switches of existing parts: intermediate-layer fusion is the language
backbone's ``layer_fraction=0.5`` (the upper half of the LM's layers deleted at build time, so
they are neither computed nor stored), and the action head is ``flower`` (a rectified-flow
transformer with one global AdaLN controller, 4 Euler steps; ``models/action_heads/flower.py``).
"""

from __future__ import annotations

from vlastack.recipes.base import Recipe, recipe
from vlastack.recipes.presets import QUANTILE, SMALL_HEAD, _tiny_lm, _train, _vlm_model

# FLOWER's released CALVIN/LIBERO configuration (conf/model/flower.yaml of
# intuitive-robots/flower_vla_calvin, and the paper): what `get_recipe("flower", **REAL_SCALE)`
# plus a real backbone would build. Not trainable on a CPU; documented, not tested at this size.
REAL_SCALE = {
    "action_horizon": 10,  # act_window_size
    "head_kwargs": {
        "width": 1024,  # dit_dim
        "depth": 18,  # n_layers
        "num_heads": 16,
        "num_steps": 4,  # num_sampling_steps
        "lora_dim": 256,  # per-block low-rank AdaLN on top of the global controller
    },
    "lr": 2e-5,
    "betas": (0.9, 0.95),
    "weight_decay": 0.05,
}


@recipe(
    "flower",
    "FLOWER: VLM with its upper half of LM layers dropped + rectified-flow transformer, "
    "global AdaLN, 4 Euler steps",
)
def flower() -> Recipe:
    """FLOWER (Reuss et al. 2025, arXiv 2509.04996; CoRL 2025).

    Paper: Florence-2-L with its language decoder removed (intermediate-modality fusion: prune
    30-50 % of the VLM's final layers and condition the policy on the intermediate tokens), an
    18-layer 1024-wide Flow Transformer cross-attending to the VLM tokens, action-space Global
    AdaLN (one shared modulation network, ~20 % fewer parameters), rectified flow with uniform
    training times and 4 Euler steps, chunk 10, outputs clipped to [-1, 1]; 950M parameters,
    ~200 H100-hours of pretraining; CALVIN ABC→D 4.53, LIBERO average 96.9.
    Scaled down: a tiny SigLIP + a 4-layer 64-wide Llama-class LM of which the lower 2 layers are
    kept (``layer_fraction=0.5``: ``backbone=PATH`` keeps the lower half of a real LM too), a
    2-layer 64-wide flower head without the per-block low-rank AdaLN, no per-action-space
    encoders, lr 2e-4 for the tiny model. ``REAL_SCALE`` in this module holds the paper's sizes.
    """
    lm = _tiny_lm("llama", num_hidden_layers=4)
    lm["layer_fraction"] = 0.5
    return Recipe(
        name="flower",
        model=_vlm_model(
            action_horizon=10,
            state_dim=8,
            language_kwargs=lm,
            head="flower",
            head_kwargs={**SMALL_HEAD, "num_steps": 4},
        ),
        train=_train(2e-4, 32, 5000, betas=(0.9, 0.95), weight_decay=0.05, ema_decay=0.999),
        normalization=QUANTILE,
        paper="FLOWER, Reuss et al. 2025 (arXiv 2509.04996)",
        scaled_down=(
            "Florence-2-L (half its layers) + 18×1024 flow transformer → tiny SigLIP + 2 of 4 "
            "LM layers + 2×64 flower head"
        ),
        extra={"execute_horizon": 8},
    )
