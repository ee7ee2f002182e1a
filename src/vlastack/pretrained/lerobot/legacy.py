"""LeRobot checkpoints from before 0.4: normalization stats inside model.safetensors.

Before the processor pipelines (LeRobot 0.4), a policy normalized inside the model: its state dict
holds the dataset stats as buffers such as ``normalize_inputs.buffer_observation_state.mean``,
``normalize_targets.buffer_action.std`` and ``unnormalize_outputs.buffer_action.mean``, and the
folder has no ``policy_preprocessor.json`` / ``policy_postprocessor.json``. What LeRobot 0.6.1's
own converter (``lerobot/processor/migrate_policy_normalization.py``) does, and this module does
at load time instead of rewriting the folder:

* stats: a key starting with one of ``STAT_PREFIXES`` is ``<prefix><name>.<stat>``; ``name`` is the
  feature key with ``.`` written ``_`` (the old buffer names). The converter turns ``_`` back into
  ``.`` everywhere, which breaks feature names that contain ``_`` (``observation.environment_state``);
  here ``name`` is matched against config.json's features first and only then read that way.
* weights: those keys are dropped and ``._orig_mod`` (left by ``torch.compile``) is removed from
  the other keys' names, as the converter's ``remove_normalization_layers`` and
  ``clean_state_dict`` do; the rest loads strictly.
* processors (``policy.legacy_processors``): ``make_pre_post_processors(config,
  dataset_stats=stats)`` builds what 0.6.1 would save: a normalizer over ``{**input_features, **output_features}`` and an unnormalizer over
  ``output_features``, both with config.json's ``normalization_mapping`` and eps 1e-8, no rename.

Verified on folders derived from the ACT and Diffusion Policy fixtures (stats moved into buffers
under the old names, processor files deleted): the same actions as the 0.6.1 folders
(tests/test_pretrained_lerobot_legacy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# migrate_policy_normalization.extract_normalization_stats, in its order (first match wins)
STAT_PREFIXES = (
    "normalize_inputs.buffer_",
    "unnormalize_outputs.buffer_",
    "normalize_targets.buffer_",
    "normalize.",
    "unnormalize.",
    "input_normalizer.",
    "output_normalizer.",
    "normalalize_inputs.",  # sic, in LeRobot's list
    "unnormalize_outputs.",
    "normalize_targets.",
    "unnormalize_targets.",
)
COMPILED = "._orig_mod"
DEFAULT_EPS = 1e-8
MISSING_STATS = (
    "has no policy_preprocessor.json (LeRobot >= 0.4) and its model.safetensors holds no "
    "normalize_inputs.* / unnormalize_outputs.* stats buffers (LeRobot < 0.4): the dataset stats "
    "are missing. Copy the checkpoint's processor files next to it, or convert it with "
    "LeRobot's migrate_policy_normalization.py"
)


def stat_prefix(key: str) -> str | None:
    return next((p for p in STAT_PREFIXES if key.startswith(p)), None)


def weight_key(key: str) -> str | None:
    """The state-dict key ``key`` of a checkpoint file loads as; None: a stats buffer."""
    return None if stat_prefix(key) else key.replace(COMPILED, "")


def extract_stats(tensors: dict[str, Any], feature_keys: list[str]) -> dict[str, dict[str, Any]]:
    """``{feature: {stat: tensor}}`` from the stats buffers among ``tensors``."""
    by_buffer = {k.replace(".", "_"): k for k in feature_keys}
    stats: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        prefix = stat_prefix(key)
        if prefix is None:
            continue
        name, _, stat = key[len(prefix) :].rpartition(".")
        if not name:
            continue
        name = name.removeprefix("buffer_")
        feature = by_buffer.get(name, name.replace("_", "."))
        stats.setdefault(feature, {})[stat] = tensor
    return stats


def has_legacy_stats(weights: Path) -> bool:
    """True when the safetensors header of ``weights`` names a stats buffer (no tensor read, no
    torch import)."""
    import json
    import struct

    try:
        with open(weights, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return False
    return isinstance(header, dict) and any(stat_prefix(k) for k in header)
