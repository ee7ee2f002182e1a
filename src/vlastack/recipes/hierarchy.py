"""The ``hierarchy`` recipe: System 2 / System 1 (RT-H generalized; π0.5's high-level/low-level
split), scaled to train on a CPU. The model is a ``VLA`` with ``hierarchy=True``
(``models/hierarchy.py``); the two rates are the runtime's and the server's
(``serving/hierarchy.py``: ``--high-level-hz`` beside ``--control-hz``).
"""

from __future__ import annotations

from vlastack.recipes.base import Recipe, recipe
from vlastack.recipes.presets import MEAN_STD, SMALL_HEAD, _tiny_lm, _train, _vlm_model


@recipe(
    "hierarchy",
    "System 2 / System 1: the VLM names a subtask (language motion) at a low rate, a fast flow "
    "policy acts on it every tick (RT-H generalized, π0.5's split)",
)
def hierarchy() -> Recipe:
    """System 2 / System 1 hierarchy: RT-H (Belkhale et al. 2024, arXiv 2403.01823) at two rates,
    as π0.5 (Physical Intelligence 2025, arXiv 2504.16054) splits high-level subtask prediction
    from low-level actions.

    Papers: RT-H queries PaLI-X for a language motion, then for actions given it; π0.5 decodes a
    text subtask with its VLM and then acts with a flow expert at a higher rate; GR00T N1 runs its
    VLM at 10 Hz and its action module at 120 Hz. Here: System 2 is the LM backbone over [image
    tokens, instruction, state] pooled into a classifier over RT-H's language-motion vocabulary
    (labels computed from each window's actions, so any dataset has them; the long-horizon
    chains re-issue the same instruction, so they give no subtask text to learn from); System 1
    is a flow-matching head over the pre-backbone tokens + a subtask embedding, run every tick.
    Real scale: ``backbone=PATH`` (a PaliGemma/SmolLM-class LM) for System 2 and the π0 expert
    sizes for System 1 (``head_kwargs={"width": 1024, "depth": 18, "num_heads": 8}``), System 2
    at 1-10 Hz and System 1 at the robot's rate (``serve --high-level-hz 1 --control-hz 20``).
    Scaled down: tiny SigLIP + 2-layer 64-wide Llama-class LM, a 2-layer 64-wide flow head, chunk
    10, one subtask token instead of decoded subtask text.
    """
    return Recipe(
        name="hierarchy",
        model=_vlm_model(
            action_horizon=10,
            state_dim=8,
            language_kwargs=_tiny_lm("llama"),
            hierarchy=True,
            motion_threshold=0.2,
            gripper_index=-1,
            head="flow_matching",
            head_kwargs={**SMALL_HEAD, "num_steps": 10},
        ),
        train=_train(2.5e-4, 32, 5000, betas=(0.9, 0.95), weight_decay=1e-10),
        normalization=MEAN_STD,
        paper="RT-H (arXiv 2403.01823) at two rates; π0.5 high/low-level split (arXiv 2504.16054)",
        scaled_down=(
            "PaLI-X / PaliGemma → tiny SigLIP + 2-layer LM; decoded subtask text → a language-"
            "motion classifier + one subtask token; π0 expert → 64-wide flow head"
        ),
        extra={"execute_horizon": 8},
    )
