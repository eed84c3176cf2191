"""Data-parallel training under ``torchrun``.

When ``WORLD_SIZE`` > 1 (set by ``torchrun``), every process joins the default process
group (NCCL on CUDA, Gloo on the CPU), wraps the model in ``DistributedDataParallel`` and
trains on its own shard of each epoch's permutation (see :mod:`.sampling`). The batch size
is per process: the effective batch is ``batch_size * WORLD_SIZE``. Only rank 0 prints and
writes files; metrics are summed over all processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "is_main_process"]


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: rank, number of processes, rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environ(cls) -> DistEnv:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (as set by ``torchrun``)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        """Join the default process group (no-op for a single process)."""
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def shutdown(self, barrier: bool = True) -> None:
        """Leave the process group. After a clean run all ranks meet at a barrier first, so
        that none tears gloo down while another still talks to it (that aborts the process
        at exit); after a failure there is no barrier (the launcher stops the other ranks)."""
        if self.enabled and dist.is_initialized():
            try:
                if barrier:
                    dist.barrier()
            finally:
                dist.destroy_process_group()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; returns the tensor."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def min_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (min) in place; returns the tensor."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return tensor

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def is_main_process() -> bool:
    """True outside ``torchrun`` and on its rank 0: the process that prints and writes."""
    return DistEnv.from_environ().is_main
