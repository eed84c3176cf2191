"""Which images each process sees, batch by batch.

Training: epoch ``e`` shuffles all N images with its own generator (the same permutation
on every process), pads the permutation by wrapping around to a multiple of the number of
processes (as ``DistributedSampler`` does), gives process ``r`` every ``world``-th entry
from ``r`` on, and cuts that shard into batches of ``batch_size``. A last batch of a single
image is dropped (BatchNorm cannot train on it). Every process gets the same number of
batches, so collective operations stay in step.

Evaluation: process ``r`` takes images ``r, r + world, ...`` in order, without padding, so
the summed counts are exact.

The batches are index tensors; :class:`IndexedBatches` turns them into
``(images, labels, index)`` through a ``DataLoader`` (worker processes, pinned memory).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["IndexedBatches", "eval_batches", "train_batches"]


def train_batches(
    n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1
) -> list[torch.Tensor]:
    """The training batches (index tensors) of process ``rank`` for one epoch."""
    order = torch.randperm(n, generator=generator)
    total = math.ceil(n / world) * world
    if total > n:
        order = torch.cat([order, order[: total - n]])
    batches = list(order[rank::world].split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def eval_batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """The evaluation batches of process ``rank``: its share of ``0..n-1``, in order."""
    return list(torch.arange(rank, n, world).split(batch_size))


class _Fetch(Dataset):
    """Rows of in-memory tensors, fetched a whole batch (an index tensor) at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index], index


class IndexedBatches:
    """Iterate ``(images, labels, index)`` for a list of index batches.

    ``workers`` > 0 gathers batches in worker processes; ``pin`` puts them in pinned memory
    (for non-blocking copies to a GPU).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batches: list[torch.Tensor],
        *,
        workers: int = 0,
        pin: bool = False,
    ) -> None:
        self.batches = batches
        self.loader = DataLoader(
            _Fetch(images, labels),
            sampler=batches,  # type: ignore[arg-type]
            batch_size=None,
            num_workers=workers,
            pin_memory=pin,
            # its own generator: creating an iterator draws a worker seed, and drawing it
            # from the global RNG would shift the dropout stream of a resumed epoch
            generator=torch.Generator().manual_seed(0),
        )

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.loader)
