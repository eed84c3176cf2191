"""The group action on images and feature maps.

An element g = (r, m) acts on the plane by A = R(2*pi*r/N) F^m (x right, y up, F: y -> -y),
and on a feature map of type ``Fi x rho`` by

    (g . f)(p) = rho(g) f(A^-1 p),

i.e. channel c moves to channel p_g(c) and every channel is transformed in space. On the
pixel grid this is exact for the grid-exact elements: rows are flipped for F, and
``torch.rot90`` turns the image counter-clockwise (as displayed, row 0 at the top, i.e.
y up) by quarter turns. Other rotations are resampled (bilinear) by :func:`rotate_image`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .groups import Element, Group
from .reps import FeatureType


def transform_grid_exact(x: torch.Tensor, group: Group, g: Element) -> torch.Tensor:
    """Spatial part only: ``x(A^-1 p)`` for a grid-exact g; x is (..., H, W)."""
    if g[1]:
        x = torch.flip(x, dims=(-2,))
    turns = group.quarter_turns(g)
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def transform_features(x: torch.Tensor, feature: FeatureType, g: Element) -> torch.Tensor:
    """``(g . x)`` for a grid-exact g on (B, channels, H, W) of the given type."""
    y = transform_grid_exact(x, feature.group, g)
    perm = torch.as_tensor(feature.permutation(g), device=x.device)
    out = torch.empty_like(y)
    out[:, perm] = y
    return out


def rotate_image(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (B, C, H, W) counter-clockwise by ``degrees`` about the centre (bilinear,
    zeros outside). Multiples of 90 degrees are done exactly with ``torch.rot90``."""
    quarter = degrees / 90.0
    if abs(quarter - round(quarter)) < 1e-12:
        return torch.rot90(x, int(round(quarter)) % 4, dims=(-2, -1))
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    B = x.shape[0]
    H, W = x.shape[-2:]
    # affine_grid maps output coords (x right, y down in normalized units) to input coords;
    # a counter-clockwise rotation with y up samples the input at R^-1 p.
    mat = torch.tensor([[c, -s * H / W, 0.0], [s * W / H, c, 0.0]], dtype=x.dtype, device=x.device)
    mat = mat.unsqueeze(0).expand(B, 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def disk_mask(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1 inside the inscribed disk, 0 outside: (H, W). Rotations keep it (nearly) fixed."""
    ys = torch.arange(height, dtype=dtype) - (height - 1) / 2
    xs = torch.arange(width, dtype=dtype) - (width - 1) / 2
    r = min(height, width) / 2
    return ((ys[:, None] ** 2 + xs[None, :] ** 2) <= r * r).to(dtype)
