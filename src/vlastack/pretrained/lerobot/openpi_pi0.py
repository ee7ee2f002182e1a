"""openpi's PyTorch pi0 / pi0.5 checkpoints (converted from JAX by openpi's
``examples/convert_jax_model_to_pytorch.py``) on the same modules as LeRobot's (``pi0``).

Layout, read from openpi's converter and ``src/openpi/models_pytorch/`` (commit 15a9616):

* ``model.safetensors``: ``safetensors.torch.save_model`` of openpi's ``PI0Pytorch``: LeRobot's
  keys without the ``model.`` prefix (LeRobot's PI0Pytorch is a port of it).
  ``save_model`` keeps one name of a tied pair, the first in sorted order, so PaliGemma's
  ``lm_head.weight`` stays and ``embed_tokens.weight`` is dropped: the embedding is taken from
  ``lm_head`` (as LeRobot's ``_fix_pytorch_state_dict_keys`` does). The expert's ``lm_head`` may
  or may not be there. pi0.5 is told apart by its keys (``time_mlp_in`` vs ``state_proj``).
* ``config.json``: ``action_dim`` (the padded width, 32), ``action_horizon``,
  ``paligemma_variant``, ``action_expert_variant``, ``precision``; no ``"type"``.
* ``assets/<asset_id>/norm_stats.json``: ``{"norm_stats": {"state": {mean, std, q01, q99},
  "actions": {...}}}`` (openpi ``shared/normalize.py``), for the real (unpadded) dims. pi0 uses
  mean/std, pi0.5 quantiles (openpi ``training/config.py``: ``use_quantile_norm = model_type !=
  PI0``), with openpi's own epsilon (``transforms.py``): ``(x - mean) / (std + 1e-6)`` and back
  ``x * (std + 1e-6) + mean``; ``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1`` and back.

Inputs are openpi's model inputs, i.e. what a robot's openpi input transform produces: the
cameras in openpi's slots ``base_0_rgb``, ``left_wrist_0_rgb``, ``right_wrist_0_rgb`` (a slot
left out is masked, as openpi does for a missing wrist camera), the state and the prompt. The
prompt is cleaned as openpi's ``PaligemmaTokenizer`` does (strip, ``_`` and newlines to spaces;
pi0 then ends with ``"\\n"``, pi0.5 gets the discretized-state prompt). Not reproduced: the
robot-specific transforms (camera renaming, delta actions, slicing the action to the robot's
dims: the chunk returned has the norm stats' action width), and openpi's ``ResizeImages`` data
transform, which resizes with PIL before the model; vlastack resizes a frame that is not
``image_size`` square with the model's own torch resize-with-pad instead (frames sent at
224x224 are not resized by either). Also: openpi's tokenizer encodes the pi0 ``"\\n"``
separately; here the whole prompt goes through one tokenizer call.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.paligemma import UNUSED_HEADS
from vlastack.pretrained.lerobot.pi0 import Pi0Spec
from vlastack.pretrained.lerobot.pi0_inputs import PALIGEMMA_TOKENIZER, load_tokenizer
from vlastack.pretrained.lerobot.pi0_policy import LeRobotPi0Policy, PiProcessors
from vlastack.pretrained.lerobot.pi0_weights import load_pi0_network
from vlastack.pretrained.lerobot.policy import default_device, no_embodiment

FORMAT_NAME = "openpi_pi0"
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi models/model.py
OPENPI_EPS = 1e-6
STATE, ACTION = "observation.state", "action"


class OpenpiNormalizer:
    """openpi's Normalize / Unnormalize of ``state`` and ``actions`` (module docstring)."""

    def __init__(self, stats: dict[str, dict[str, torch.Tensor]], quantile: bool) -> None:
        self.stats = stats  # keyed by LeRobot feature key
        self.quantile = quantile
        self.eps = OPENPI_EPS
        need = ("q01", "q99") if quantile else ("mean", "std")
        for key, per in stats.items():
            missing = [n for n in need if n not in per]
            if missing:
                raise ConfigError(
                    f"norm_stats.json {_OPENPI_NAME[key]!r} lacks {', '.join(missing)}, which "
                    f"openpi's {'quantile' if quantile else 'mean/std'} normalization needs"
                )

    def mode(self, key: str) -> str:
        if key not in self.stats:
            return "IDENTITY"
        return "OPENPI_QUANTILES" if self.quantile else "OPENPI_MEAN_STD"

    def _get(self, key: str, name: str, like: torch.Tensor) -> torch.Tensor:
        return self.stats[key][name].to(device=like.device, dtype=like.dtype)

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key not in self.stats:
            return x
        if self.quantile:
            q01, q99 = self._get(key, "q01", x), self._get(key, "q99", x)
            return (x - q01) / (q99 - q01 + self.eps) * 2.0 - 1.0
        return (x - self._get(key, "mean", x)) / (self._get(key, "std", x) + self.eps)

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key not in self.stats:
            return x
        if self.quantile:
            q01, q99 = self._get(key, "q01", x), self._get(key, "q99", x)
            return (x + 1.0) / 2.0 * (q99 - q01 + self.eps) + q01
        return x * (self._get(key, "std", x) + self.eps) + self._get(key, "mean", x)


_OPENPI_NAME = {STATE: "state", ACTION: "actions"}


def read_norm_stats(path: Path, asset_id: str | None) -> tuple[Path, dict[str, dict[str, Any]]]:
    found = sorted(Path(path).glob("assets/*/norm_stats.json"))
    if asset_id is not None:
        found = [f for f in found if f.parent.name == asset_id]
    if len(found) != 1:
        have = ", ".join(f.parent.name for f in sorted(Path(path).glob("assets/*/norm_stats.json")))
        raise ConfigError(
            f"{path}: {'no' if not found else 'several'} assets/<asset_id>/norm_stats.json "
            f"{'for asset_id ' + repr(asset_id) if asset_id else ''} (found: {have or 'none'}); "
            "openpi keeps the normalization stats there: copy the training run's assets folder "
            "next to model.safetensors, or pass asset_id=<name> to pick one"
        )
    data = json.loads(found[0].read_text())
    stats = data.get("norm_stats") if isinstance(data, dict) else None
    if not isinstance(stats, dict) or "state" not in stats or "actions" not in stats:
        raise ConfigError(f"{found[0]} has no 'norm_stats' with 'state' and 'actions'")
    return found[0], stats


def openpi_spec_config(path: Path, keys: list[str], pos_embed: tuple[int, ...]) -> dict[str, Any]:
    """A LeRobot-style config dict for ``Pi0Spec`` from openpi's config.json and the keys."""
    cfg = lf.read_json(Path(path) / lf.CONFIG)
    pi05 = "time_mlp_in.weight" in keys
    if not pi05 and "state_proj.weight" not in keys:
        raise ConfigError(
            f"{path / lf.WEIGHTS} has neither time_mlp_in (pi0.5) nor state_proj (pi0): not an "
            "openpi pi0 / pi0.5 checkpoint"
        )
    precision = cfg.get("precision", "float32")
    if precision not in ("float32", "bfloat16"):
        raise ConfigError(
            f"{path / lf.CONFIG}: 'precision' {precision!r}; vlastack loads float32 or bfloat16"
        )
    side = math.isqrt(pos_embed[0]) if pos_embed else 16
    return {
        "type": "pi05" if pi05 else "pi0",
        "paligemma_variant": cfg["paligemma_variant"],
        "action_expert_variant": cfg["action_expert_variant"],
        "chunk_size": cfg["action_horizon"],
        "n_action_steps": cfg["action_horizon"],
        "max_state_dim": cfg["action_dim"],
        "max_action_dim": cfg["action_dim"],
        "image_resolution": [side * 14, side * 14],  # from SigLIP's position table (224 -> 256)
        "dtype": precision,
        "tokenizer_max_length": 200 if pi05 else 48,
        "num_inference_steps": 10,  # openpi sample_actions' default
    }


def load_openpi_pi0(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    tokenizer: Any = None,
    asset_id: str | None = None,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
) -> LeRobotPi0Policy:
    """Load an openpi PyTorch pi0 / pi0.5 checkpoint folder (see the module docstring)."""
    from safetensors import safe_open

    del expect_embodiment
    path = Path(path)
    no_embodiment(path, embodiment)
    with safe_open(str(path / lf.WEIGHTS), framework="pt") as f:
        keys = list(f.keys())
        pos_key = (
            "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings."
            "position_embedding.weight"
        )
        pos = tuple(f.get_slice(pos_key).get_shape()) if pos_key in keys else ()
    cfg = openpi_spec_config(path, keys, pos)
    spec = Pi0Spec.from_config(cfg)
    stats_file, raw = read_norm_stats(path, asset_id)
    stats = {
        feat: {
            n: torch.tensor(v, dtype=torch.float32)
            for n, v in raw[name].items()
            if isinstance(v, list)
        }
        for feat, name in ((STATE, "state"), (ACTION, "actions"))
    }
    state_dim, action_dim = (
        int(stats[k]["q01" if spec.pi05 else "mean"].shape[0]) for k in (STATE, ACTION)
    )
    size = [3, spec.image_size, spec.image_size]
    cfg["input_features"] = {
        **{f"observation.images.{c}": {"type": "VISUAL", "shape": size} for c in CAMERAS},
        STATE: {"type": "STATE", "shape": [state_dim]},
    }
    cfg["output_features"] = {ACTION: {"type": "ACTION", "shape": [action_dim]}}
    norm = OpenpiNormalizer(stats, quantile=spec.pi05)
    procs = PiProcessors(
        {},
        norm,
        norm,
        PALIGEMMA_TOKENIZER,
        spec.tokenizer_max_length,
        new_line=True,
        clean_prompt=True,
    )
    tok = load_tokenizer(tokenizer, PALIGEMMA_TOKENIZER, path)
    device = default_device(device)
    network = load_pi0_network(
        path / lf.WEIGHTS, spec, device, key_map=lambda k: f"model.{k}", optional=UNUSED_HEADS[1:]
    )
    return LeRobotPi0Policy(
        network,
        cfg,
        procs,
        tok,
        checkpoint=str(path),
        seed=seed,
        optional_images=tuple(f"observation.images.{c}" for c in CAMERAS),
        format_name=FORMAT_NAME,
    )


def describe_openpi(path: str | Path) -> tuple[dict[str, Any], str]:
    """What ``vlastack inspect`` says about an openpi folder: config.json, the norm stats and
    the safetensors header only (no network built, no weight read)."""
    from safetensors import safe_open

    p = Path(path)
    with safe_open(str(p / lf.WEIGHTS), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    pos_key = next((k for k in shapes if k.endswith("position_embedding.weight")), None)
    cfg = openpi_spec_config(p, list(shapes), shapes[pos_key] if pos_key else ())
    stats_file, raw = read_norm_stats(p, None)
    pi05 = cfg["type"] == "pi05"
    used = ("q01", "q99") if pi05 else ("mean", "std")
    dims = {name: len(raw[name][used[0]]) for name in ("state", "actions")}
    size = cfg["image_resolution"][0]
    info = {
        "path": str(p),
        "format": FORMAT_NAME,
        "policy_type": cfg["type"],
        "config": {
            k: cfg[k]
            for k in (
                "paligemma_variant",
                "action_expert_variant",
                "dtype",
                "image_resolution",
                "max_action_dim",
                "tokenizer_max_length",
            )
        },
        "chunk_length": cfg["chunk_size"],
        "cameras": [f"observation.images.{c}" for c in CAMERAS],
        "state_dim": dims["state"],
        "action_dim": dims["actions"],
        "normalization": "quantiles q01/q99 (openpi, +1e-6)"
        if pi05
        else "mean/std (openpi, std + 1e-6)",
        "norm_stats": str(stats_file),
        "parameters": sum(math.prod(s) for s in shapes.values()),
    }
    text = "\n".join(
        [
            f"checkpoint {p}",
            f"  format {FORMAT_NAME} (openpi PyTorch {cfg['type']} checkpoint)",
            "  config: " + ", ".join(f"{k} {v}" for k, v in info["config"].items()),
            f"  chunk length {info['chunk_length']} (actions per infer), parameters "
            f"{info['parameters']:,} ({len(shapes)} tensors)",
            "  INPUTS (openpi model inputs: what the robot's openpi input transform produces)",
            *(
                f"    {c}: image, any size (resized with centred padding to {size}x{size}); "
                "a slot left out is masked"
                for c in info["cameras"]
            ),
            f"    observation.state: float ({dims['state']},), normalized {info['normalization']}",
            "    task (or prompt): str, cleaned as openpi's tokenizer does",
            "  OUTPUTS",
            f"    actions: float32 ({info['chunk_length']}, {dims['actions']}), un-normalized with "
            f"{stats_file}; the robot's openpi output transform (deltas, slicing) is not applied",
        ]
    )
    return info, text
