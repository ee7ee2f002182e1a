"""ONNX export of imported LeRobot policies (``lerobot_act`` / ``lerobot_diffusion`` folders here;
``lerobot_smolvla`` / ``lerobot_pi0`` / ``lerobot_pi05`` through ``export.onnx_vla``: a prefix
graph giving the VLM KV cache and a step graph giving the expert's velocity, the Euler loop
outside, or with ``parts=["sampler"]`` the loop unrolled; see that module).

``vlastack export onnx CKPT --out DIR`` calls ``export_any_onnx``, which sends a folder that
``policy_formats.detect_policy_format`` claims here and any other to the native
``export.onnx.export_onnx``. The graphs take the tensors LeRobot's
preprocessor gives the network (normalized, batched; LeRobot's keys as input names) and return
normalized outputs; ``manifest.json`` holds the stats to normalize inputs / unnormalize actions
(``normalization``, LeRobot's formulas in ``pretrained.lerobot.normalize``) and names the
source folder's processor files.

* ACT (``act_chunk``): one image per camera (B, 3, H, W) + state (B, S) [+ env state] ->
  normalized chunk (B, chunk_size, A). Inference is deterministic (zero VAE latent).
* Diffusion Policy: ``diffusion_encoder``: the ``n_obs_steps`` history of images
  (B, T, 3, H, W) per camera + state (B, T, S) [+ env state] -> global conditioning (B, G);
  ``diffusion_step``: noisy trajectory (B, horizon, A), timestep (B,) int64, conditioning ->
  predicted noise (B, horizon, A). The DDPM loop (fresh noise every step) runs outside: the
  manifest lists its timesteps and ``alphas_cumprod``; the normalized chunk is
  ``trajectory[:, n_obs_steps - 1 : n_obs_steps - 1 + n_action_steps]``.

Batch size is dynamic; image sizes and the history length are the checkpoint's. Parts map onto
the native names: ``prefix`` -> the Diffusion encoder, ``step`` -> the Diffusion step (and
ACT's single pass), ``sampler`` -> ACT's single pass (Diffusion: skipped, DDPM is stochastic).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.export.onnx import (
    DEFAULT_OPSET,
    EXPORT_PARTS,
    ExportedGraph,
    export_onnx,
    write_graphs,
)
from vlastack.export.onnx_vla import VLA_FORMATS, example_args, spec_json, vla_graphs

LEROBOT_FORMATS = ("lerobot_act", "lerobot_diffusion", *VLA_FORMATS)
VLA_DEFAULT_PARTS = ("prefix", "step")  # the unrolled sampler only when asked (slow to trace)
PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")


class ACTChunk(nn.Module):
    """Normalized images (one tensor per camera), state, env state -> normalized chunk."""

    def __init__(self, model: nn.Module, n_images: int, has_state: bool, has_env: bool) -> None:
        super().__init__()
        self.model = model
        self.n_images, self.has_state, self.has_env = n_images, has_state, has_env

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        images = list(inputs[: self.n_images])
        rest = list(inputs[self.n_images :])
        state = rest.pop(0) if self.has_state else None
        env = rest.pop(0) if self.has_env else None
        return self.model(images, state, env)


class DiffusionEncoder(nn.Module):
    """State history (B, T, S), image histories (B, T, 3, H, W) [, env (B, T, E)] -> (B, G)."""

    def __init__(self, model: Any, n_images: int, has_env: bool) -> None:
        super().__init__()
        self.model = model
        self.n_images, self.has_env = n_images, has_env

    def forward(self, state: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        images = list(inputs[: self.n_images])
        env = inputs[self.n_images] if self.has_env else None
        return self.model.global_condition(state, images, env)


class DiffusionStep(nn.Module):
    """x_t (B, horizon, A), t (B,) int64, global_cond (B, G) -> predicted noise."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, global_cond: torch.Tensor):
        return self.unet(x_t, t, global_cond)


def _batch_axes(names: Iterable[str]) -> dict[str, dict[int, str]]:
    return {n: {0: "batch"} for n in names}


def _example_batch(policy: Any, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Preprocessed (normalized) tensors of ``batch_size`` random observations."""
    obs = [policy.example_observation(seed + i) for i in range(batch_size)]
    with torch.no_grad():
        return policy.preprocess(obs)


def act_graphs(policy: Any, pre: dict[str, torch.Tensor]) -> list[ExportedGraph]:
    """The one ACT graph for the preprocessed batch ``pre`` (keys: LeRobot's)."""
    s = policy.spec
    names = [*s.image_keys, *(k for k in (s.state_key, s.env_state_key) if k)]
    module = ACTChunk(
        policy.network.model, len(s.image_keys), bool(s.state_key), bool(s.env_state_key)
    ).eval()  # torch.onnx.export restores the wrapper's mode, and with it the network's
    return [
        ExportedGraph(
            "act_chunk",
            module,
            tuple(pre[k] for k in names),
            names,
            ["action_chunk_normalized"],
            _batch_axes([*names, "action_chunk_normalized"]),
        )
    ]


def diffusion_graphs(
    policy: Any, policy_input: dict[str, torch.Tensor], parts: list[str], seed: int = 0
) -> list[ExportedGraph]:
    """Encoder (``prefix``) and denoiser step (``step``) for the stacked batch ``policy_input``
    (``{key: (B, n_obs_steps, ...)}``)."""
    s = policy.spec
    model = policy.network.diffusion
    names = [s.state_key, *s.image_keys, *([s.env_state_key] if s.env_state_key else [])]
    encoder = DiffusionEncoder(model, len(s.image_keys), bool(s.env_state_key)).eval()
    enc_inputs = tuple(policy_input[k] for k in names)
    out: list[ExportedGraph] = []
    if "prefix" in parts:
        out.append(
            ExportedGraph(
                "diffusion_encoder",
                encoder,
                enc_inputs,
                names,
                ["global_cond"],
                _batch_axes([*names, "global_cond"]),
            )
        )
    if "step" in parts:
        b = enc_inputs[0].shape[0]
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            cond = encoder(*enc_inputs)
        x_t = torch.randn(b, s.horizon, s.action_dim, generator=g)
        t = torch.randint(0, int(s.num_train_timesteps), (b,), generator=g)
        out.append(
            ExportedGraph(
                "diffusion_step",
                DiffusionStep(model.unet).eval(),
                (x_t, t, cond),
                ["x_t", "t", "global_cond"],
                ["eps"],
                _batch_axes(["x_t", "t", "global_cond", "eps"]),
            )
        )
    return out


def _graphs(
    fmt: str, policy: Any, parts: list[str], batch_size: int, seed: int
) -> list[ExportedGraph]:
    if fmt in VLA_FORMATS:
        args, noise = example_args(policy, fmt, batch_size, seed)
        return vla_graphs(fmt, policy.network.model, args, noise, parts)
    pre = _example_batch(policy, batch_size, seed)
    if fmt == "lerobot_act":
        return act_graphs(policy, pre) if {"step", "sampler"} & set(parts) else []
    return diffusion_graphs(policy, policy.repeated(pre), parts, seed)


def _normalizer_json(norm: Any) -> dict[str, Any] | None:
    """A ``FeatureNormalizer`` as JSON: eps and, per feature, type, mode and the stats it uses."""
    if norm is None:
        return None
    feats: dict[str, Any] = {}
    for key, kind in norm.features.items():
        stats = norm.stats.get(key, {})
        feats[key] = {
            "type": kind,
            "mode": norm.mode(key),
            "stats": {n: t.reshape(-1).tolist() for n, t in stats.items()},
        }
    return {"eps": norm.eps, "features": feats}


def _normalization(fmt: str, policy: Any) -> dict[str, Any]:
    if fmt == "lerobot_act":
        norm, unnorm = policy.normalizer, policy.unnormalizer
    else:
        norm, unnorm = policy.processors.normalizer, policy.processors.unnormalizer
    return {
        "formulas": "vlastack.pretrained.lerobot.normalize (LeRobot 0.6.1): MEAN_STD "
        "(x - mean) / (std + eps), inverse x * std + mean; MIN_MAX 2 (x - min) / (max - min) - 1, "
        "inverse (x + 1) / 2 (max - min) + min; visual stats per channel",
        "normalizer": _normalizer_json(norm),
        "unnormalizer": _normalizer_json(unnorm),
    }


def _spec_json(fmt: str, policy: Any) -> dict[str, Any]:
    if fmt in VLA_FORMATS:
        return spec_json(policy, fmt)
    s = policy.spec
    out: dict[str, Any] = {
        "action_key": s.action_key,
        "action_dim": int(s.action_dim),
        "image_keys": list(s.image_keys),
        "state_key": s.state_key,
        "env_state_key": s.env_state_key,
    }
    if fmt == "lerobot_act":
        out.update(chunk_size=int(s.chunk_size), n_action_steps=int(s.n_action_steps))
        return out
    sampler = policy.network.diffusion.sampler
    out.update(
        horizon=int(s.horizon),
        n_obs_steps=int(s.n_obs_steps),
        n_action_steps=int(s.n_action_steps),
        chunk_start=int(s.n_obs_steps) - 1,
        ddpm={
            "num_train_timesteps": int(sampler.num_train),
            "timesteps": [int(t) for t in sampler.timesteps],
            "alphas_cumprod": sampler.alphas_cumprod.tolist(),
            "clip_sample_range": sampler.clip,
            "scheduler": sampler.kind,
            "prediction": sampler.prediction,
            "variance": "fixed_small" if sampler.stochastic else "none (DDIM, eta 0)",
            "reference": "vlastack.pretrained.lerobot.schedulers.DiffusionSampler.step",
        },
    )
    return out


def export_lerobot_onnx(
    folder: str | Path,
    out_dir: str | Path,
    fmt: str,
    parts: Iterable[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export the LeRobot folder ``folder`` (checkpoint format ``fmt``) to ``out_dir``; with
    ``check``, each graph is compared with PyTorch in onnxruntime on a batch of 1 and of 3.
    ``parts`` None: every part, except SmolVLA / pi0 / pi0.5's unrolled ``sampler`` (its trace
    takes minutes: ask for it by name; ``onnx_vla``). Their tokenizer is not loaded (the
    graphs take token ids; the manifest names the tokenizer)."""
    from vlastack.policy_formats import POLICY_FORMATS

    if fmt not in LEROBOT_FORMATS:
        raise ConfigError(
            f"{folder} is a {fmt!r} checkpoint; ONNX export covers native vlastack checkpoints "
            f"and the imported formats {', '.join(LEROBOT_FORMATS)}"
        )
    if parts is None:
        parts = VLA_DEFAULT_PARTS if fmt in VLA_FORMATS else EXPORT_PARTS
    parts = list(parts)
    bad = [p for p in parts if p not in EXPORT_PARTS]
    if bad:
        raise ConfigError(f"ONNX export parts {bad} unknown; choose from {list(EXPORT_PARTS)}")
    folder = Path(folder)
    kw: dict[str, Any] = {"tokenizer": False} if fmt in VLA_FORMATS else {}
    policy = POLICY_FORMATS.get(fmt).load(folder, device="cpu", **kw)
    policy.network.eval()
    graphs = _graphs(fmt, policy, parts, 1, 0)
    if not graphs:
        raise ConfigError(f"parts {parts} select no graph of a {fmt} checkpoint")
    graphs3 = {g.name: g for g in _graphs(fmt, policy, parts, 3, 1)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": fmt,
        "checkpoint": str(folder),
        "processor_files": [f for f in PROCESSOR_FILES if (folder / f).is_file()],
        "policy": _spec_json(fmt, policy),
        "normalization": _normalization(fmt, policy),
        "opset": opset,
        "torch": torch.__version__,
        "graphs": {},
    }
    if fmt == "lerobot_diffusion" and "sampler" in parts:
        manifest["skipped"] = {
            "diffusion_sampler": "DDPM draws fresh noise every step; run 'diffusion_step' in a "
            "loop (manifest policy.ddpm)"
        }
    return write_graphs(graphs, graphs3, out, manifest, opset=opset, check=check, atol=atol)


def export_any_onnx(
    checkpoint: str | Path,
    out_dir: str | Path,
    parts: Iterable[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """``vlastack export onnx``: an imported policy folder (a registered checkpoint format) via
    ``export_lerobot_onnx``, anything else as a native checkpoint (``export.onnx.export_onnx``)."""
    from vlastack.policy_formats import detect_policy_format

    fmt = detect_policy_format(checkpoint)
    kw: dict[str, Any] = {"opset": opset, "check": check, "atol": atol}
    if fmt is None:
        return export_onnx(checkpoint, out_dir, EXPORT_PARTS if parts is None else parts, **kw)
    return export_lerobot_onnx(checkpoint, out_dir, fmt.name, parts, **kw)


__all__ = [
    "ACTChunk",
    "DiffusionEncoder",
    "DiffusionStep",
    "LEROBOT_FORMATS",
    "act_graphs",
    "diffusion_graphs",
    "export_any_onnx",
    "export_lerobot_onnx",
]
