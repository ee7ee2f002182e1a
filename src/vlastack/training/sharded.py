"""Sharded checkpoints: the training state (raw model weights + optimizer state) written by every
rank with ``torch.distributed.checkpoint`` (DCP), and read back on any number of ranks.

A sharded checkpoint is an ordinary checkpoint folder (``model.safetensors``, the JSON files,
``trainer_state.json``) whose ``optimizer.safetensors`` is replaced by ``dcp/``: one
``__<rank>_0.distcp`` file per rank and a ``.metadata`` file naming each tensor's global shape
and which byte ranges of which file hold which slice. DCP reads it into whatever layout the
loading ranks have (FSDP2 shards of another world size, DDP replicas, or one plain process): this
is what lets a run saved on 4 ranks resume on 2 or 1. The deployable weights are consolidated on
save: rank 0 still writes the whole ``model.safetensors`` (``distributed.full_model_state``), so
``vlastack eval`` / ``serve`` / ``export`` read a sharded run's checkpoint like any other.

Every rank writes into the same folder, so ``--out_dir`` must be on a filesystem all nodes share
(NFS, Lustre, a shared PVC); ``begin_checkpoint_folder`` checks that and says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.training import distributed
from vlastack.training.checkpoint import DCP_DIR, make_temp_folder


def use_sharded(fmt: str, info: distributed.DistInfo) -> bool:
    """Whether this run writes sharded checkpoints (``--checkpoint_format``)."""
    if fmt == "auto":
        return info.mode == "fsdp"
    return fmt == "sharded"


def begin_checkpoint_folder(root: Path, step: int, info: distributed.DistInfo) -> Path:
    """Rank 0 makes the temporary folder of step ``step``; every rank gets its path and checks
    it can see it (a collective: every rank must call it)."""
    name = [str(make_temp_folder(root, step))] if info.is_main else [""]
    if info.enabled:
        import torch.distributed as dist

        dist.broadcast_object_list(name, src=0)
    tmp = Path(name[0])
    (missing,) = distributed.any_flag([not tmp.is_dir()], info)
    if missing:
        raise ConfigError(
            f"out_dir {root.parent}: rank {info.rank} cannot see the checkpoint folder {tmp} "
            "that rank 0 created. Sharded checkpoints are written by every rank into one folder: "
            "put --out_dir on a filesystem every node mounts at the same path (NFS, Lustre, a "
            "shared volume), or pass --checkpoint_format=full"
        )
    return tmp


def _training_state(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(net, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def save_training_state(folder: Path, net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its part of the model and optimizer state to ``folder/dcp``."""
    import torch.distributed.checkpoint as dcp

    with _quiet_single_process():
        dcp.save(_training_state(net, optimizer), checkpoint_id=str(folder / DCP_DIR))


def load_training_state(folder: Path, net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read ``folder/dcp`` into this rank's (possibly sharded) model and optimizer, whatever the
    number of ranks that wrote it. Works without a process group (a single process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _training_state(net, optimizer)
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=str(folder / DCP_DIR))
    set_state_dict(net, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def is_sharded(folder: Path) -> bool:
    return (folder / DCP_DIR / ".metadata").is_file()


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    # Without a process group DCP warns that it assumes one process: that is the intent here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
