"""Process-group setup for torchrun: DDP over NCCL on GPUs, gloo on CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """A process's place in the run, and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the one process that logs and writes files."""
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world_size == 1:
        return DistContext(0, 1, torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    return DistContext(dist.get_rank(), world_size, device)


def gather_objects(value: Any, context: DistContext) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` when running alone."""
    if context.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def shutdown_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module, context: DistContext) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every rank.

    DDP syncs buffers at the start of each forward, so after the last step each rank still
    holds statistics of its own last batch.
    """
    if context.world_size == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
