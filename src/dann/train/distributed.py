"""Multi-process training with torch.distributed, as started by ``torchrun``.

Every process runs the same code; ranks differ only in which shard of each global batch they
take and in that rank 0 alone writes files. Without torchrun there is one process of rank 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env() -> ProcessGroup:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    if not dist.is_initialized():
        if torch.cuda.is_available():  # one GPU per process: NCCL needs each rank on its own device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size())


def current() -> ProcessGroup:
    """The process group in force (one process when torch.distributed is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup(dist.get_rank(), dist.get_world_size())
    return ProcessGroup()


def wrap(module: nn.Module, group: ProcessGroup) -> nn.Module:
    """DistributedDataParallel around ``module`` when there are several processes, else ``module``.

    ``find_unused_parameters``: a stage or mode may leave parts unused (source_only never calls
    the domain classifier), which plain DDP would treat as an error.
    """
    if not group.distributed:
        return module
    return nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)


def broadcast(value: Any, group: ProcessGroup) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the output directory it chose)."""
    if not group.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish(group: ProcessGroup, *, completed: bool) -> None:
    """Leave the process group; after a completed run every rank first waits for the others.

    A rank that tore its group down while rank 0 was still writing the summary could abort in
    gloo's shutdown. After a failure there is no barrier: the other ranks may never arrive.
    """
    if not (group.distributed and dist.is_initialized()):
        return
    if completed:
        dist.barrier()
    dist.destroy_process_group()
