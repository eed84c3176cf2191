"""Randomness of a training run, derived from ``(seed, epoch)`` alone.

Every random choice of epoch ``e`` comes from its own stream, seeded by
:func:`derive_seed` ``(seed, e, stream, ...)``:

* ``"shuffle"`` — the order of the training images (a ``torch.Generator``);
* ``"augment"`` — rotation angles, flips and crop offsets, one draw per training image
  (a ``torch.Generator``), indexed by the image, so they do not depend on how the data is
  split between processes;
* ``"dropout"`` — the global torch RNG (dropout masks), reseeded at the start of each
  epoch with the process rank mixed in.

So an epoch is a pure function of the weights and optimizer state at its start, and a run
resumed at an epoch boundary continues exactly as if it had never stopped.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "epoch_generator", "seed_global"]


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed from the run seed and any labels (epoch, stream name, rank, ...)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def epoch_generator(seed: int, epoch: int, stream: str) -> torch.Generator:
    """A CPU generator for one stream of one epoch (0-based)."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, stream))


def seed_global(seed: int, *parts: int | str) -> None:
    """Seed torch's global RNG (CPU and every CUDA device) from a derived seed."""
    torch.manual_seed(derive_seed(seed, *parts))
