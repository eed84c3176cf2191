"""Seeded random rotations of whole image sets (the MNIST-rot construction).

:func:`rotate_images` is the batched form of :func:`epdo.zoo.transforms.rotate_image`: every
image gets its own angle, counter-clockwise as displayed (row 0 at the top), about the image
centre, bilinear, zeros outside; exact multiples of 90° are done exactly with
``torch.rot90``. For a single angle it gives the same numbers as ``rotate_image``.

Angles come from :func:`uniform_angles`: uniform in [0°, 360°), drawn by numpy's PCG64 from
``SeedSequence(seed, spawn_key=crc32 of each stream name)``, so every (seed, stream) pair —
e.g. ``("rotated-idx", "test", "angles")`` — is an independent, reproducible stream.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError

__all__ = ["rotate_images", "rotate_unit_images", "seeded_rng", "uniform_angles"]

_BATCH = 4096


def seeded_rng(seed: int, *stream: str) -> np.random.Generator:
    """A generator for the named ``stream`` of ``seed`` (a non-negative integer)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    keys = tuple(zlib.crc32(part.encode("utf-8")) for part in stream)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=keys))


def uniform_angles(count: int, seed: int, *stream: str) -> np.ndarray:
    """``(count,)`` float64 angles in degrees, uniform in [0, 360), from stream ``stream``."""
    angles = seeded_rng(seed, *stream).uniform(0.0, 360.0, size=count)
    return np.where(angles >= 360.0, 0.0, angles)  # guard the half-open interval


def rotate_images(x: torch.Tensor, degrees: torch.Tensor | np.ndarray | Sequence[float],
                  batch_size: int = _BATCH) -> torch.Tensor:
    """Rotate each image of ``x`` counter-clockwise by its own angle.

    Args:
        x: ``(B, C, H, W)`` floating point.
        degrees: ``(B,)`` angles in degrees.
        batch_size: images resampled at once (bounds the memory of the sampling grid).

    Returns:
        ``(B, C, H, W)``, same dtype and device as ``x``.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (B, C, H, W) tensor, got {x.dtype} "
                         f"{tuple(x.shape)}")
    deg = torch.as_tensor(np.asarray(degrees, dtype=np.float64)).reshape(-1)
    if deg.numel() != x.shape[0]:
        raise ValueError(f"{deg.numel()} angles for {x.shape[0]} images")
    out = torch.empty_like(x)
    quarter = deg / 90.0
    turns = torch.round(quarter)
    exact = (quarter - turns).abs() < 1e-12
    turns = turns.remainder(4).long()
    for k in range(4):
        chosen = torch.nonzero(exact & (turns == k)).flatten().to(x.device)
        if chosen.numel():
            out[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    rest = torch.nonzero(~exact).flatten()
    H, W = x.shape[-2:]
    for start in range(0, rest.numel(), batch_size):
        chosen = rest[start:start + batch_size]
        theta = torch.deg2rad(deg[chosen])
        c, s = torch.cos(theta), torch.sin(theta)
        # the matrix of epdo.zoo.transforms.rotate_image, one per image (computed in float64)
        mat = torch.zeros(chosen.numel(), 2, 3, dtype=torch.float64)
        mat[:, 0, 0], mat[:, 0, 1] = c, -s * H / W
        mat[:, 1, 0], mat[:, 1, 1] = s * W / H, c
        mat = mat.to(dtype=x.dtype, device=x.device)
        index = chosen.to(x.device)
        batch = x[index]
        grid = F.affine_grid(mat, list(batch.shape), align_corners=False)
        out[index] = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)
    return out


def rotate_unit_images(images: torch.Tensor, degrees: np.ndarray) -> torch.Tensor:
    """:func:`rotate_images` for images in [0, 1] (uint8 images are scaled by 1/255 first);
    the result is float32 clamped to [0, 1] (bilinear weights keep it there up to rounding)."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    return rotate_images(images.float(), degrees).clamp_(0.0, 1.0)
