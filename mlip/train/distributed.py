"""Data-parallel training with ``torch.distributed`` (``torchrun`` sets the environment).

``torchrun --nproc_per_node=K -m mlip train CONFIG.yaml`` starts K processes; each reads
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, joins a process group (NCCL on GPUs, gloo on CPU)
and trains a :class:`~torch.nn.parallel.DistributedDataParallel` replica on its shard of every
global batch. Multi-node runs add ``--nnodes``, ``--node_rank`` and a rendezvous endpoint.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mlip import settings

__all__ = ["DistributedContext", "init_distributed"]


@dataclass
class DistributedContext:
    """This process's place in the job.

    Attributes:
        rank: global rank. world_size: number of processes. local_rank: rank on this node.
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over ranks (a copy; the input is unchanged)."""
        if not self.enabled:
            return tensor
        out = tensor.detach().clone().to(self.device)
        dist.all_reduce(out)
        return out.to(tensor.device)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            dist.barrier()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:local_rank`` when CUDA is available, else ``cpu`` (the one device rule
    of every verb: :func:`mlip.settings.resolve_device`, which refuses a device torch lacks)."""
    return settings.resolve_device(name, local_rank=local_rank)


def init_distributed(device_name: str) -> DistributedContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Ranks other than 0 log errors only (the ``mlip`` loggers), so a K-process run logs once.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if rank != 0:
        logging.getLogger("mlip").setLevel(logging.ERROR)
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size
        )
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=device
    )
