"""Rotation test-time augmentation (TTA): a model averaged over turned copies of its input.

For a model f (raw images (B, C, H, W) -> logits (B, K), or maps (B, K, H, W) of a
segmentation) and n rotations R_r by r·360°/n, r = 0..n-1 (counter-clockwise, about the
image centre, :func:`epdo.zoo.transforms.rotate_image`), optionally each also mirrored by
the flip F (x -> -x, i.e. the columns reversed), the views are g = R_r F^m (m = 0, or m = 0, 1
with ``flip``), V = n or 2n of them, and

    classifier:    p(x)    = 1/V Σ_g softmax(f(g·x))
    segmentation:  p(x)(u) = Σ_g [g⁻¹·softmax(f(g·x))](u) / Σ_g [g⁻¹·1](u)

where g⁻¹ = F^m R_r⁻¹ turns a map back (R_r⁻¹ first, then the mirror, so that view g's
prediction lies over the pixels of x it was made from). The module returns log p, so that
the cross-entropy of evaluation (``cross_entropy(log p, y)`` = -log p_y, since log p is
already log-normalised) and the argmax stay what they are for logits.

Exactness. The views form the group C_n (D_n with ``flip``), so replacing x by h·x for a view
h only permutes the terms of the sum: p(h·x) = p(x) for a classifier and p(h·x) = h·p(x) for a
segmentation, up to the round-off of summing in another order, *provided every view is exact
on the pixel grid*: quarter turns and flips (n = 1, 2, 4). Other turns (n = 8: 45°) resample
the input and the turned-back map (bilinear, zeros outside); the denominator Σ_g g⁻¹·1
(the share of each pixel that view g covers) keeps each pixel's average a distribution, but
the invariance is then only approximate, like any rotation off the grid.

Cost: V forward passes per image (views run one after another, so memory stays that of one
batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .transforms import rotate_image

__all__ = ["RotationTTA", "View", "tta_label", "tta_views"]


@dataclass(frozen=True)
class View:
    """One view g = R(degrees) F^flip: mirror first (columns reversed), then turn."""

    degrees: float
    flip: bool

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """g·x for images or maps (B, C, H, W)."""
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        return rotate_image(x, self.degrees) if self.degrees else x

    def undo(self, y: torch.Tensor) -> torch.Tensor:
        """g⁻¹·y for maps (B, C, H, W): turned back, then mirrored."""
        if self.degrees:
            y = rotate_image(y, -self.degrees)
        return torch.flip(y, dims=(-1,)) if self.flip else y

    @property
    def grid_exact(self) -> bool:
        """Whether g maps the pixel grid onto itself (a quarter turn, with or without F)."""
        return self.degrees % 90.0 == 0.0


def tta_views(n: int, flip: bool = False) -> list[View]:
    """The n rotations by r·360°/n (r = 0..n-1), each also mirrored with ``flip``: V = n or
    2n views, the identity first. ValueError unless n >= 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"TTA needs a whole number of rotations n >= 1, got {n!r}")
    turns = [360.0 * r / n for r in range(n)]
    return [View(t, m) for m in ((False, True) if flip else (False,)) for t in turns]


def tta_label(n: int, flip: bool = False, short: bool = False) -> str:
    """How a setting is named in legends: ``no TTA``, ``TTA x4``, ``TTA x4+flip``; ``short``
    (a table's TTA column): ``-``, ``x4``, ``x4+flip``."""
    if n == 1 and not flip:
        return "-" if short else "no TTA"
    return ("" if short else "TTA ") + f"x{n}" + ("+flip" if flip else "")


class RotationTTA(nn.Module):
    """``model`` averaged over the views of :func:`tta_views` (see the module docstring).

    Args:
        model: raw images (B, C, H, W) -> logits (B, K) or maps (B, K, H, W) on the same
            H x W grid as the input (a segmentation).
        n: rotations by multiples of 360°/n.
        flip: each rotation also mirrored (2n views).

    ``forward(x)`` returns log p: (B, K) or (B, K, H, W), in the dtype of the model's output
    (the probabilities are summed in float64). A view at an odd multiple of 90° needs
    square images (it swaps H and W).
    """

    def __init__(self, model: nn.Module, n: int, flip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.n = n
        self.flip = flip
        self.views = tta_views(n, flip)

    @property
    def exact(self) -> bool:
        """Whether every view is exact on the pixel grid (n divides 4), so that the average
        is exactly invariant (a map: equivariant) under the views."""
        return all(v.grid_exact for v in self.views)

    def extra_repr(self) -> str:
        return f"n={self.n}, flip={self.flip}, views={len(self.views)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"RotationTTA takes images (B, C, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height != width and any(v.degrees % 180.0 == 90.0 for v in self.views):
            raise ValueError(f"TTA over {self.n} rotations turns {height}x{width} images by "
                             "90°, which changes their shape; it needs square images")
        total: torch.Tensor | None = None
        cover: torch.Tensor | float = 0.0  # Σ_g g⁻¹·1: V, or per pixel when resampled
        dtype = x.dtype
        for view in self.views:
            out = self.model(view.apply(x))
            dtype = out.dtype
            probs = torch.softmax(out.to(torch.float64), dim=1)
            share: torch.Tensor | float = 1.0
            if out.ndim == 4:  # a map: turn the prediction back over the pixels it is for
                if tuple(out.shape[-2:]) != (height, width):
                    raise ValueError(f"RotationTTA of a map needs the input's {height}x{width} "
                                     f"grid, the model gives {tuple(out.shape[-2:])}")
                probs = view.undo(probs)
                if not view.grid_exact:  # resampled: the share of each pixel it covers
                    share = view.undo(torch.ones_like(probs[:, :1]))
            total = probs if total is None else total + probs
            cover = cover + share
        assert total is not None  # the identity view at least
        mean = total / cover
        return mean.clamp_min(torch.finfo(torch.float64).tiny).log().to(dtype)
