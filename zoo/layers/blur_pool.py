"""Anti-aliased downsampling (Zhang 2019, "Making convolutional networks shift-invariant
again"): a fixed binomial low-pass filter, then subsampling by ``stride``.

``y_c = (B * x_c)[stride * i, stride * j]`` for every channel c, with the 3x3 binomial
``B = [1, 2, 1]^T [1, 2, 1] / 16``, zero padding 1, so an (H, W) map becomes
``((H - 1) // stride + 1, (W - 1) // stride + 1)``. B is invariant under the rotations by
multiples of 90 degrees and the reflections, and every channel is filtered alike, so the
layer commutes with any field type's channel permutation; on odd sizes the sample grid
``{0, stride, ..., H - 1}`` is symmetric too (when ``stride`` divides H - 1), and the layer is
exactly equivariant under the grid-exact elements. Shapes: (B, C, H, W) -> (B, C, H', W').
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..reps import FeatureType
from .plain import plain_conv
from .typed import TypedModule

__all__ = ["BlurPool", "binomial_filter"]


def binomial_filter() -> torch.Tensor:
    """The 3x3 binomial low-pass filter ``[1, 2, 1]^T [1, 2, 1] / 16`` (sums to 1)."""
    row = torch.tensor([1.0, 2.0, 1.0])
    return torch.outer(row, row) / 16.0


class BlurPool(TypedModule):
    """Binomial blur then subsampling by ``stride``; field types unchanged."""

    def __init__(self, feature: FeatureType, stride: int = 2) -> None:
        super().__init__()
        self.in_type = self.out_type = feature
        self.stride = stride
        weight = binomial_filter().expand(feature.channels, 1, 3, 3).contiguous()
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.conv2d(x, self.weight, stride=self.stride, padding=1, groups=x.shape[1])

    def export(self) -> nn.Conv2d:
        """Inference form: the same depthwise convolution as a plain Conv2d."""
        return plain_conv(self.weight, None, self.stride, 1, groups=self.in_type.channels)

    def extra_repr(self) -> str:
        return f"binomial 3x3, stride {self.stride}, {self.in_type.name}"
