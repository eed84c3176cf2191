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

from collections.abc import Sequence

import numpy as np
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


_ROTATE_CHUNK = 4096


def rotate_images(x: torch.Tensor, degrees: torch.Tensor | np.ndarray | Sequence[float],
                  chunk: int = _ROTATE_CHUNK, *, mode: str = "bilinear") -> torch.Tensor:
    """Rotate each image of (B, C, H, W) counter-clockwise (x right, y up) by its own angle
    ``degrees[b]`` about the centre: multiples of 90 degrees exactly with ``torch.rot90``,
    other angles resampled with zeros outside, ``chunk`` images at a time (bounds the
    sampling grid's memory). ``mode`` is the resampling: ``bilinear`` for images,
    ``nearest`` for maps of labels (every output value is an input value or 0; both modes
    sample at the same points). Same dtype and device as ``x``; the one rotation of epdo
    (augmentation, rotated evaluation, rotated datasets)."""
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (B, C, H, W) tensor, got {x.dtype} "
                         f"{tuple(x.shape)}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be bilinear or nearest, got {mode!r}")
    deg = torch.as_tensor(degrees, dtype=torch.float64).reshape(-1)
    if deg.numel() != x.shape[0]:
        raise ValueError(f"{deg.numel()} angles for {x.shape[0]} images")
    if deg.numel() == 0:
        return x.clone()
    quarter = deg / 90.0
    turns = torch.round(quarter)
    exact = (quarter - turns).abs() < 1e-12
    if bool(exact.all()) and bool((turns == turns[:1]).all()):
        return torch.rot90(x, int(turns[0].item()) % 4, dims=(-2, -1))
    out = torch.empty_like(x)
    turns = turns.remainder(4).long()
    for k in range(4):
        chosen = torch.nonzero(exact & (turns == k)).flatten().to(x.device)
        if chosen.numel():
            out[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    rest = torch.nonzero(~exact).flatten()
    H, W = x.shape[-2:]
    for start in range(0, rest.numel(), chunk):
        chosen = rest[start:start + chunk]
        theta = torch.deg2rad(deg[chosen])
        c, s = torch.cos(theta), torch.sin(theta)
        # affine_grid maps output coords (x right, y down in normalized units) to input
        # coords; a counter-clockwise rotation with y up samples the input at R^-1 p
        mat = torch.zeros(chosen.numel(), 2, 3, dtype=torch.float64, device=deg.device)
        mat[:, 0, 0], mat[:, 0, 1] = c, -s * H / W
        mat[:, 1, 0], mat[:, 1, 1] = s * W / H, c
        index = chosen.to(x.device)
        batch = x[index]
        grid = F.affine_grid(mat.to(dtype=x.dtype, device=x.device), list(batch.shape),
                             align_corners=False)
        out[index] = F.grid_sample(batch, grid, mode=mode, padding_mode="zeros",
                                   align_corners=False)
    return out


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Raw pixels as float in [0, 1]: uint8 ``x / 255`` (a folder dataset's images, converted
    on the device they are copied to), float tensors as they are."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x


def rotate_image(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Every image of (B, C, H, W) rotated by the same ``degrees`` (:func:`rotate_images`)."""
    return rotate_images(x, torch.full((x.shape[0],), float(degrees), dtype=torch.float64))


def rotate_masks(masks: torch.Tensor, degrees: torch.Tensor | Sequence[float] | float,
                 outside: int = 255) -> torch.Tensor:
    """Label maps (B, H, W) of any integer dtype (values below 2**24) rotated like their
    images (:func:`rotate_images` at the same sampling points), nearest: every pixel keeps
    a label that was there, and the pixels brought in from outside the canvas get
    ``outside`` (the ignore label). ``degrees``: one angle, or one per map."""
    if masks.ndim != 3 or masks.is_floating_point():
        raise ValueError(f"masks must be an integer (B, H, W) tensor, got {masks.dtype} "
                         f"{tuple(masks.shape)}")
    if isinstance(degrees, int | float):
        degrees = torch.full((masks.shape[0],), float(degrees), dtype=torch.float64)
    # shifted by one, so that the zeros rotated in from outside mark the new pixels
    m = rotate_images(masks.unsqueeze(1).to(torch.float32) + 1.0, degrees, mode="nearest")
    m = torch.where(m == 0.0, float(outside), m - 1.0)
    return m.round().to(masks.dtype).squeeze(1)


def disk_mask(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1 inside the inscribed disk, 0 outside: (H, W). Rotations keep it (nearly) fixed."""
    ys = torch.arange(height, dtype=dtype) - (height - 1) / 2
    xs = torch.arange(width, dtype=dtype) - (width - 1) / 2
    r = min(height, width) / 2
    return ((ys[:, None] ** 2 + xs[None, :] ** 2) <= r * r).to(dtype)
