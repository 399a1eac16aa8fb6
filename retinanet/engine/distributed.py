"""torch.distributed's process group, as torchrun sets it up: no home-made distribution.

Run `torchrun --nproc_per_node N -m retinanet train ...`: every process trains its share of the
global batch inside DistributedDataParallel (retinanet/engine/trainer.py).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initializes the default
    process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return rank, world, local_rank


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialized process group, (0, 1) without one."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main() -> bool:
    """True on the process that writes files and prints: rank 0 of the process group, or the
    RANK torchrun gave this process when the group is not initialized yet (so that a command
    prints its config once, before training starts the group)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto": this process's GPU when there is one, else the CPU; "cuda" under torchrun: the
    local rank's GPU; anything else as torch.device reads it."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(f"cuda:{local_rank}" if name == "cuda" and dist.is_initialized() else name)
    except RuntimeError as e:  # "gpu", "cuda:x", ...
        raise DeviceError(f"device {name!r}: {str(e).splitlines()[0]}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {name!r}: no CUDA GPU is available here; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    return device


class DeviceError(ValueError):
    """A device that this machine does not have; the message says which ones it has."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


__all__ = ["DeviceError", "init_distributed", "is_main", "rank_and_world", "resolve_device", "unwrap"]
