"""Seeded random rotations of whole image sets (the MNIST-rot construction).

:func:`rotate_unit_images` rotates every image by its own angle with
:func:`epdo.zoo.transforms.rotate_images` (counter-clockwise as displayed, row 0 at the top,
about the image centre, bilinear, zeros outside; exact multiples of 90° exactly).

Angles come from :func:`uniform_angles`: uniform in [0°, 360°), drawn by numpy's PCG64 from
``SeedSequence(seed, spawn_key=crc32 of each stream name)``, so every (seed, stream) pair —
e.g. ``("rotated-idx", "test", "angles")`` — is an independent, reproducible stream.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from ..transforms import rotate_images
from .errors import DataError

__all__ = ["rotate_images", "rotate_unit_images", "seeded_rng", "uniform_angles"]


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


def rotate_unit_images(images: torch.Tensor, degrees: np.ndarray) -> torch.Tensor:
    """:func:`rotate_images` for images in [0, 1] (uint8 images are scaled by 1/255 first);
    the result is float32 clamped to [0, 1] (bilinear weights keep it there up to rounding)."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    return rotate_images(images.float(), degrees).clamp_(0.0, 1.0)
