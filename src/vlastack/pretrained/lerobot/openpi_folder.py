"""Recognising an openpi PyTorch pi0 / pi0.5 checkpoint folder without torch (for the
``openpi_pi0`` checkpoint-format registration): ``config.json`` as openpi's
``convert_jax_model_to_pytorch.py`` writes it (``action_dim``, ``action_horizon``,
``paligemma_variant``, ``action_expert_variant``, and no LeRobot ``"type"``) beside
``model.safetensors``. The loader is ``openpi_pi0``."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_KEYS = ("action_dim", "action_horizon", "paligemma_variant", "action_expert_variant")


def is_openpi_folder(path: Path) -> bool:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(cfg, dict)
        and "type" not in cfg
        and all(k in cfg for k in CONFIG_KEYS)
        and (Path(path) / "model.safetensors").is_file()
    )
