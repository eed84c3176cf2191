"""Batched, per-image augmentation on the device, and input normalization.

Training images go through, in this order (each only when the spec's ``augment`` asks):

1. ``rotate``: a counter-clockwise rotation (x right, y up, the convention of
   :func:`epdo.zoo.transforms.rotate_image`) by an angle uniform in [0°, 360°), bilinear,
   zeros outside;
2. ``flip``: a horizontal flip with probability 1/2;
3. ``crop_padding = p``: zero padding by p on every side, then a random crop back to H×W.

The random draws for a whole epoch are made at its start from one generator (one angle,
flip and offset per training image, see :mod:`.seeding`) and looked up by image index, so
they do not depend on batch order or on how many processes share the data.

Normalization ``(x - mean) / std`` with the spec's per-channel ``input.mean``/``input.std``
comes after augmentation (so padded/rotated-in zeros are zeros of the raw image), and is
applied to test images too: the model itself expects normalized input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..spec import AugmentSpec, InputSpec

__all__ = ["AugmentDraws", "Normalizer", "crop_batch", "flip_batch", "rotate_batch"]


def rotate_batch(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of (B, C, H, W) counter-clockwise by its own angle ``degrees[b]``.

    Bilinear, zeros outside; ``rotate_batch(x, full(B, a))`` equals ``rotate_image(x, a)``.
    """
    theta = torch.deg2rad(degrees.to(device=x.device, dtype=torch.float64))
    c, s = torch.cos(theta), torch.sin(theta)
    H, W = x.shape[-2:]
    mat = torch.zeros(x.shape[0], 2, 3, dtype=torch.float64, device=x.device)
    # affine_grid maps output coordinates (y down) to input ones: sample the input at R^-1 p
    mat[:, 0, 0], mat[:, 0, 1] = c, -s * H / W
    mat[:, 1, 0], mat[:, 1, 1] = s * W / H, c
    grid = F.affine_grid(mat.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
            x = rotate_batch(x, self.angles[index])
        if self.flips is not None:
            x = flip_batch(x, self.flips[index])
        if self.offsets is not None:
            x = crop_batch(x, self.padding, self.offsets[index])
        return x


class Normalizer:
    """``(x - mean) / std`` per channel, with the spec's input statistics."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.identity = all(m == 0.0 for m in mean) and all(s == 1.0 for s in std)

    @classmethod
    def from_spec(cls, spec: InputSpec) -> Normalizer:
        return cls(spec.mean, spec.std)

    def to(self, device: torch.device) -> Normalizer:
        out = Normalizer.__new__(Normalizer)
        out.mean, out.std = self.mean.to(device), self.std.to(device)
        out.identity = self.identity
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        return (x - self.mean.to(x.device)) / self.std.to(x.device)
