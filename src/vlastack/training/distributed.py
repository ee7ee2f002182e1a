"""torchrun integration: DDP (gloo on CPU, nccl on GPU), FSDP2 or HSDP, and rank-aware helpers.

Launched by ``torchrun [--nnodes K] --nproc_per_node N -m vlastack.train ...``, every process
reads RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE from the environment; the same code runs
on one node or several. ``hsdp`` is FSDP2 on a 2-D mesh: parameters sharded over the ranks of a
node and replicated across nodes (gradients all-reduced between the replicas), so the parameter
all-gathers stay on the fast links inside a node; it is ``fsdp`` (``mode``) with ``replicas`` > 1. Only rank 0 writes checkpoints and logs; full
state dicts are gathered with ``torch.distributed.checkpoint.state_dict`` so DDP and FSDP save
the same plain weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vlastack.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "none"  # 'none' | 'ddp' | 'fsdp'
    device: torch.device = torch.device("cpu")
    replicas: int = 1  # fsdp only: >1 is HSDP, sharded within groups of world/replicas ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use --device=cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(mode: str, device_name: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if mode == "none" or (mode == "auto" and world == 1):
        if world > 1:
            raise ConfigError(
                f"launched with WORLD_SIZE={world} but distributed='none'; use ddp, fsdp or hsdp"
            )
        return DistInfo(device=device)
    replicas = 1
    if mode == "hsdp":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        if per_node < 1 or world % per_node:
            raise ConfigError(
                f"distributed='hsdp': WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE="
                f"{per_node}; start the same --nproc_per_node on every node"
            )
        replicas = world // per_node
    if world == 1 and not dist.is_initialized():
        # A single process asked for ddp/fsdp: run as a world of one (useful for testing).
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    mode_out = "fsdp" if mode in ("fsdp", "hsdp") else "ddp"
    return DistInfo(rank, world, local_rank, mode_out, device, replicas)


def wrap_model(module: nn.Module, info: DistInfo) -> nn.Module:
    if info.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [info.device.index] if info.device.type == "cuda" else None
        # find_unused_parameters: frozen towers and optional inputs leave some params unused.
        return DDP(module, device_ids=ids, find_unused_parameters=True)
    if info.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        if info.replicas > 1:
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(
                info.device.type,
                (info.replicas, info.world_size // info.replicas),
                mesh_dim_names=("replicate", "shard"),
            )
            fully_shard(module, mesh=mesh)
        else:
            fully_shard(module)
        return module
    return module


def full_model_state(wrapped: nn.Module, info: DistInfo) -> dict[str, torch.Tensor]:
    """Unsharded model weights on CPU (collective under FSDP: every rank must call it)."""
    if info.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        return get_model_state_dict(  # type: ignore[return-value]
            wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    inner: Any = wrapped.module if info.mode == "ddp" else wrapped
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def full_optimizer_state(
    wrapped: nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo
) -> dict[str, Any]:
    if info.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(
            wrapped, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return optimizer.state_dict()


def load_full_optimizer_state(
    wrapped: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], info: DistInfo
) -> None:
    if info.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            wrapped, optimizer, state, options=StateDictOptions(full_state_dict=True)
        )
    else:
        optimizer.load_state_dict(state)


def any_flag(flags: list[bool], info: DistInfo) -> list[bool]:
    """Logical OR of per-rank flags across ranks (so all ranks stop at the same step)."""
    if not info.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(x) for x in t.tolist()]


def mean_scalar(x: float, info: DistInfo) -> float:
    if not info.enabled:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def load_full_model_state(
    wrapped: nn.Module, inner: nn.Module, state: dict[str, torch.Tensor], info: DistInfo
) -> None:
    """Load unsharded weights (keys of ``inner``) into the possibly sharded model."""
    if info.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        set_model_state_dict(
            wrapped,
            {f"model.{k}": v for k, v in state.items()},
            options=StateDictOptions(full_state_dict=True),
        )
    else:
        inner.load_state_dict(state)
