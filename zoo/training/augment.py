"""Batched, per-image augmentation on the device.

Training images go through, in this order (each only when the spec's ``augment`` asks):

1. ``rotate``: a counter-clockwise rotation (x right, y up;
   :func:`epdo.zoo.transforms.rotate_images`) by an angle uniform in [0°, 360°), bilinear,
   zeros outside;
2. ``flip``: a horizontal flip with probability 1/2;
3. ``crop_padding = p``: zero padding by p on every side, then a random crop back to H×W.

The random draws for a whole epoch are made at its start from one generator (one angle,
flip and offset per training image, see :mod:`.seeding`) and looked up by image index, so
they do not depend on batch order or on how many processes share the data.

Augmentation works on raw images in [0, 1] (padded and rotated-in zeros are black); the
model normalises them itself (its first step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..spec import AugmentSpec
from ..transforms import rotate_images

__all__ = ["AugmentDraws", "crop_batch", "flip_batch"]


def flip_batch(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the images ``b`` of (B, C, H, W) where ``flip[b]`` is true."""
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def crop_batch(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad (B, C, H, W) by ``padding`` and crop H×W at ``offsets[b] = (row, col)``,
    each in ``[0, 2 * padding]``; offsets ``(padding, padding)`` give back the image."""
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = offsets.to(x.device)
    rows = offsets[:, 0, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(W, device=x.device)  # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None]
    # advanced indexing around the channel slice puts the channels last: (B, H, W, C)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass
class AugmentDraws:
    """The random choices of one epoch, one per training image (None: not augmented)."""

    angles: torch.Tensor | None = None  # (N,) degrees in [0, 360)
    flips: torch.Tensor | None = None  # (N,) bool
    offsets: torch.Tensor | None = None  # (N, 2) crop offsets in [0, 2p]
    padding: int = 0

    @classmethod
    def draw(cls, spec: AugmentSpec, n: int, generator: torch.Generator) -> AugmentDraws:
        """Draw, in this order, angles, flips and crop offsets for ``n`` images."""
        draws = cls(padding=spec.crop_padding)
        if spec.rotate:
            draws.angles = torch.rand(n, generator=generator, dtype=torch.float64) * 360.0
        if spec.flip:
            draws.flips = torch.rand(n, generator=generator) < 0.5
        if spec.crop_padding:
            high = 2 * spec.crop_padding + 1
            draws.offsets = torch.randint(0, high, (n, 2), generator=generator)
        return draws

    @property
    def active(self) -> bool:
        return self.angles is not None or self.flips is not None or self.offsets is not None

    def to(self, device: torch.device) -> AugmentDraws:
        """The same draws on ``device`` (looked up there by the batch's indices)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return AugmentDraws(move(self.angles), move(self.flips), move(self.offsets), self.padding)

    def apply(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Augment the batch ``x`` whose rows are the training images ``index``."""
        if self.angles is not None:
            x = rotate_images(x, self.angles[index])
        if self.flips is not None:
            x = flip_batch(x, self.flips[index])
        if self.offsets is not None:
            x = crop_batch(x, self.padding, self.offsets[index])
        return x
