"""Equivariant x2 upsampling, for the decoder of an encoder-decoder (U-Net) network.

``y_c = U(x_c)`` for every channel c, where U doubles the height and width: ``nearest``
repeats each pixel into a 2x2 block, ``bilinear`` interpolates with half-pixel centres
(``align_corners=False``: output pixel i samples the input at ``(i + 0.5) / 2 - 0.5``). Both
sampling patterns are symmetric under the rotations by multiples of 90 degrees and the
reflections of the grid, and every channel is treated alike, so the layer commutes with
those elements acting on any field type (they permute or mix channels, never space
differently per channel): exactly equivariant, at every size. Shapes:
(B, C, H, W) -> (B, C, 2H, 2W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..reps import FeatureType
from .typed import TypedModule

__all__ = ["MODES", "PlainUpsample", "Upsample"]

MODES = ("nearest", "bilinear")


def upsample2(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``x`` (B, C, H, W) at (B, C, 2H, 2W), ``nearest`` or ``bilinear`` (half-pixel)."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class PlainUpsample(nn.Module):
    """The inference form: the same interpolation, no type check."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2(x, self.mode)


class Upsample(TypedModule):
    """x2 upsampling of every channel; field types unchanged."""

    def __init__(self, feature: FeatureType, mode: str = "nearest") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.in_type = self.out_type = feature
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return upsample2(x, self.mode)

    def export(self) -> PlainUpsample:
        """Inference form: the same interpolation in a plain module."""
        return PlainUpsample(self.mode)

    def extra_repr(self) -> str:
        return f"x2 {self.mode}, {self.in_type.name}"
