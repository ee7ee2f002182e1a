"""int8 copies of imported LeRobot ACT / Diffusion Policy / SmolVLA / pi0 / pi0.5 folders
(``vlastack export quantize LEROBOT_FOLDER --method int8``) and their loader, the
``lerobot_int8`` checkpoint format.

SmolVLA / pi0 / pi0.5: every ``nn.Linear`` of the network (VLM and vision tower, action expert,
projections; not ``lm_head``) is int8; the embedding tables, convolutions and norms stay
float32. They load through their own loaders (``load_lerobot_smolvla`` / ``load_lerobot_pi0``
with ``network=``), so tokenization, preprocessing and the sampler are the float policy's; the
tokenizer and SmolVLA's VLM config are found as for the source folder (relative names from the
new folder). A pi0 config with ``dtype`` bfloat16 is refused (quantize a float32 copy).
Accuracy: tests/test_export_int8_vla.py.

Which layers: those ``models.quantize.quantize_dynamic_int8`` swaps in a native model, i.e.
every exact ``nn.Linear`` (ACT: the encoder/decoder feed-forwards, the input projections, the
action head, the unused-at-inference VAE encoder's linears; ``nn.MultiheadAttention``'s packed
in-projection and its out_proj stay float, as natively. Diffusion Policy: the camera encoders'
output linears, the step encoder and every FiLM ``cond_encoder``). Convolutions (the ResNet
backbones, the U-Net's Conv1d) stay float32: the native path quantizes linears only.

Folder written: the source's config.json and processor JSON / stats files unchanged,
``model_int8.safetensors`` holding the state dict of the network with those linears as
weight-only ``Int8Linear`` (``<layer>.weight_int8`` int8 and ``<layer>.weight_scale`` float32
per output channel, ``int8_per_channel``; everything else as in the source), and
``quantization.json`` (method, layers, backend, source). There is no ``model.safetensors``, so
LeRobot's own loader and the ``lerobot_act`` / ``lerobot_diffusion`` formats do not claim it.

Loading (``load_lerobot_int8``, so ``Policy.from_checkpoint``, ``eval``, ``serve``, ``bench
latency``): the int8 grid is dequantized into the float network (``q * scale``, which
``int8_per_channel`` maps back to the same q and scale exactly) and ``quantize_dynamic_int8``
swaps the int8 kernels in: ``dynamic`` (torch.ao, int8 activations, CPU) where it works, else
``weight_only``. The policy is the same ACT / Diffusion policy class, so preprocessing, the
sampler, temporal ensembling and the n_obs_steps history are unchanged.

Accuracy on the fixtures' golden observations is measured and bounded in
tests/test_pretrained_lerobot_int8.py.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.models.quantize import Int8Linear, quantize_dynamic_int8, resolve_int8_backend
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.weights import check_state_dict

FORMAT_NAME = "lerobot_int8"
QUANT_FILE = lf.QUANT_FILE
WEIGHTS_INT8 = lf.WEIGHTS_INT8
is_lerobot_int8 = lf.is_int8_folder
TYPES = ("act", "diffusion", "smolvla", "pi0", "pi05")
VLA_TYPES = ("smolvla", "pi0", "pi05")


def _source_policy(src: Path) -> tuple[str, Any]:
    from vlastack.pretrained.lerobot.diffusion_policy import load_lerobot_diffusion
    from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0
    from vlastack.pretrained.lerobot.policy import load_lerobot_act
    from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla

    kind = lf.config_type(src)
    if kind not in TYPES or not lf.is_lerobot_folder(src, str(kind)):
        raise ConfigError(
            f"{src} is not a LeRobot ACT, Diffusion Policy, SmolVLA, pi0 or pi0.5 "
            "pretrained_model folder (config.json type one of "
            f"{', '.join(TYPES)}, model.safetensors, policy_preprocessor.json)"
        )
    if not (src / lf.PREPROCESSOR).is_file():
        raise ConfigError(
            f"{src} is a LeRobot < 0.4 folder (stats inside model.safetensors); int8 copies are "
            "written from >= 0.4 folders: convert it with LeRobot's migration script first"
        )
    if kind in ("pi0", "pi05") and lf.read_config(src, str(kind)).get("dtype") == "bfloat16":
        raise ConfigError(
            f"{src / lf.CONFIG}: 'dtype' is bfloat16; int8 copies are written from float32 "
            'networks: set "dtype": "float32" in a copy of the folder and quantize that'
        )
    if kind in VLA_TYPES:  # the network only: the tokenizer is the folder's, loaded at use
        vla: Any = load_lerobot_smolvla if kind == "smolvla" else load_lerobot_pi0
        return str(kind), vla(src, device="cpu", tokenizer=False)
    load: Any = load_lerobot_act if kind == "act" else load_lerobot_diffusion
    return str(kind), load(src, device="cpu")


def quantize_lerobot(
    src: str | Path, dst: str | Path, *, backend: str = "auto", overwrite: bool = False
) -> Path:
    """Write the int8 copy of the LeRobot folder ``src`` to ``dst`` (atomically)."""
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    resolved = resolve_int8_backend(backend)
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} already exists; pass another --out folder or --overwrite")
    kind, policy = _source_policy(src)
    qnet = quantize_dynamic_int8(copy.deepcopy(policy.network).cpu(), backend="weight_only")
    layers = sorted(n for n, m in qnet.named_modules() if isinstance(m, Int8Linear))
    if not layers:
        raise ConfigError(f"{src}: the network has no linear layer to quantize")
    weights = {k: v.detach().contiguous() for k, v in qnet.state_dict().items()}
    info = {
        "format": FORMAT_NAME,
        "format_version": 1,
        "method": "int8",
        "policy_type": kind,
        "backend": resolved,
        "parts": ["all linear layers"],  # the CLI's summary line; natively a list of VLA parts
        "num_layers": len(layers),
        "layers": layers,
        "source": str(src),
        "scheme": "symmetric per-output-channel int8 weights (q in [-127, 127], scale = "
        "max|w| / 127); convolutions, attention in-projections and norms stay float32",
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{dst.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for f in src.iterdir():
            if f.is_file() and f.name != lf.WEIGHTS:
                shutil.copyfile(f, tmp / f.name)
        save_file(weights, str(tmp / WEIGHTS_INT8), {"format": "pt"})
        (tmp / QUANT_FILE).write_text(json.dumps(info, indent=2))
        if dst.exists():
            old = dst.parent / f".old-{dst.name}-{os.getpid()}"
            dst.rename(old)
            tmp.rename(dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _float_weights(file: Path) -> dict[str, torch.Tensor]:
    """The file's tensors with each int8 layer dequantized back to ``<layer>.weight``."""
    from safetensors.torch import load_file

    raw = load_file(str(file))
    out: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if k.endswith(".weight_scale"):
            continue
        if k.endswith(".weight_int8"):
            base = k[: -len("_int8")]
            scale = raw.get(base + "_scale")
            if scale is None:
                raise ConfigError(f"{file}: {k} has no {base}_scale beside it; rewrite the folder")
            out[base] = v.float() * scale.float()[:, None]
        else:
            out[k] = v
    return out


M = TypeVar("M", bound=nn.Module)


def _load_network(build: Callable[[], M], file: Path, backend: str) -> M:
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    weights = _float_weights(file)
    check_state_dict(shapes, {k: tuple(v.shape) for k, v in weights.items()}, str(file))
    net = build()
    net.load_state_dict(weights, strict=True)
    quantize_dynamic_int8(net.eval(), backend=backend)  # in place
    return net


def load_lerobot_int8(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    backend: str | None = None,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
    seed: int = 0,
    tokenizer: Any = None,
) -> Any:
    """Load a ``lerobot_int8`` folder as the ACT / Diffusion policy it came from, int8 kernels
    in. ``backend`` overrides the one recorded (``dynamic`` runs on CPU only: on another device
    the weight-only kernels are used)."""
    from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec
    from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec
    from vlastack.pretrained.lerobot.diffusion_policy import LeRobotDiffusionPolicy
    from vlastack.pretrained.lerobot.policy import (
        LeRobotACTPolicy,
        folder_embodiment,
        no_embodiment,
        read_processors,
    )

    del expect_embodiment
    path = Path(path)
    no_embodiment(path, embodiment)
    info = json.loads((path / QUANT_FILE).read_text())
    kind = info.get("policy_type")
    if kind not in TYPES:
        raise ConfigError(f"{path / QUANT_FILE}: policy_type {kind!r} is not one of {TYPES}")
    cfg = lf.read_config(path, kind)
    dev = torch.device(device or "cpu")
    chosen = resolve_int8_backend(backend or str(info.get("backend", "auto")))
    if dev.type != "cpu":
        chosen = "weight_only"
    if kind in VLA_TYPES:
        vla = _load_vla_int8(path, str(kind), chosen, dev, seed, tokenizer, embodiment)
        vla.quantization = {**info, "backend": chosen}  # in metadata; ``write`` refuses it
        return vla
    procs = read_processors(path, cfg)
    common: dict[str, Any] = {
        "checkpoint": str(path),
        "embodiment": folder_embodiment(path, cfg, kind),
    }
    quant = {**info, "backend": chosen}
    policy: Any
    if kind == "act":
        spec = ACTSpec.from_config(cfg)
        anet = _load_network(lambda: ACTNetwork(spec), path / WEIGHTS_INT8, chosen).to(dev)
        policy = LeRobotACTPolicy(
            anet,
            spec,
            normalizer=procs.normalizer,
            unnormalizer=procs.unnormalizer,
            rename_map=procs.rename_map,
            **common,
        )
    else:
        dspec = DiffusionSpec.from_config(cfg)
        dnet = _load_network(lambda: DiffusionNetwork(dspec), path / WEIGHTS_INT8, chosen).to(dev)
        policy = LeRobotDiffusionPolicy(dnet, dspec, procs, seed=seed, **common)
    policy.quantization = quant  # in metadata; ``write`` refuses a quantized policy
    return policy


def _load_vla_int8(
    path: Path,
    kind: str,
    backend: str,
    device: torch.device,
    seed: int,
    tokenizer: Any,
    embodiment: str | None,
) -> Any:
    """SmolVLA / pi0 / pi0.5 through their own loaders, the network built from the int8 file."""
    file = path / WEIGHTS_INT8
    if kind == "smolvla":
        from vlastack.pretrained.lerobot.smolvla import SmolVLANetwork
        from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla

        def smolvla(spec: Any, vcfg: Any) -> nn.Module:
            return _load_network(lambda: SmolVLANetwork(spec, vcfg), file, backend)

        return load_lerobot_smolvla(
            path,
            device=device,
            seed=seed,
            tokenizer=tokenizer,
            embodiment=embodiment,
            network=smolvla,
        )
    from vlastack.pretrained.lerobot.pi0 import Pi0Network
    from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

    def pi0(spec: Any) -> nn.Module:
        return _load_network(lambda: Pi0Network(spec), file, backend)

    return load_lerobot_pi0(
        path,
        device=device,
        seed=seed,
        tokenizer=tokenizer,
        policy_type=kind,
        embodiment=embodiment,
        network=pi0,
    )
