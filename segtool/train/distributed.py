"""Training under ``torchrun``: this process's place, joining the group, summing validation.

One process is a world of one, and every function here is then a no-op; under torchrun each
process trains on its share (DistributedDataParallel) and rank 0 alone prints, logs and saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from segtool.core.metrics import Counts


@dataclass
class Dist:
    """This process's place in a (possibly single-process) distributed run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 0  #: processes on this machine (0: all of them, one machine)

    @property
    def main(self) -> bool:
        """True on the process that prints, logs and saves (rank 0)."""
        return self.rank == 0

    @property
    def on_machine(self) -> int:
        """How many of the processes run on this machine (they share its RAM)."""
        return self.local_world or self.world

    @property
    def machines(self) -> int:
        """How many machines the processes run on (torchrun's nodes)."""
        return -(-self.world // self.on_machine)

    @classmethod
    def from_env(cls) -> Dist:
        """Read torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``
        (defaults: one process)."""
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("LOCAL_WORLD_SIZE", 0)),
        )


def start(device: str | None) -> Dist:
    """This process's place; under torchrun, also join the process group (NCCL with one GPU
    per process unless `device` asks for the CPU or MPS, else gloo)."""
    dist = Dist.from_env()
    if dist.world > 1 and not torch.distributed.is_initialized():
        use_cuda = torch.cuda.is_available() and device not in ("cpu", "mps")
        if use_cuda:
            torch.cuda.set_device(dist.local_rank)  # one GPU per process, before NCCL starts
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return dist


def barrier(dist: Dist) -> None:
    """Wait for every process (so none reads what rank 0 has not written yet)."""
    if dist.world > 1:
        torch.distributed.barrier()


def stop(dist: Dist) -> None:
    """Leave the process group, if one was joined."""
    if dist.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def sum_validation(
    counts: Counts, loss_sum: float, n: int, device: torch.device, dist: Dist
) -> tuple[Counts, float, int]:
    """Sum each process's validation counts, summed loss and image count over all processes."""
    if dist.world == 1:
        return counts, loss_sum, n
    packed = torch.tensor(
        np.concatenate([counts.tp, counts.fp, counts.fn, [loss_sum, n]]), dtype=torch.float64
    )
    if torch.distributed.get_backend() == "nccl":  # NCCL reduces GPU tensors only
        packed = packed.to(device)
    torch.distributed.all_reduce(packed)
    packed = packed.cpu()
    k = counts.num_classes
    counts = Counts(*(packed[i * k : (i + 1) * k].numpy().astype(np.int64) for i in range(3)))
    return counts, float(packed[-2]), int(packed[-1])
