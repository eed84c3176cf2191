"""Normalizations that act on whole fields (and so commute with the group action).

A field's channels are permuted by the group, so statistics and affine parameters must be
shared across them: one mean/variance and one (scale, shift) per field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..reps import FeatureType
from .typed import TypedModule


class FieldBatchNorm(TypedModule):
    """BatchNorm with one statistic and one affine pair per field.

    (B, F*d, H, W) is viewed as (B, F, d, H, W) and normalized by ``BatchNorm3d(F)``: the
    mean and variance of field f run over the batch, its d channels and space. A
    channels-last input is viewed as (B*H*W, F, d, 1, 1) instead (the same statistics, no
    copy) and the output stays channels-last.
    """

    def __init__(self, feature: FeatureType, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.in_type = self.out_type = feature
        self.bn = nn.BatchNorm3d(feature.count, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        B, C, H, W = x.shape
        d = self.in_type.field.dim
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            pixels = x.permute(0, 2, 3, 1).reshape(B * H * W, C // d, d, 1, 1)
            return self.bn(pixels).reshape(B, H, W, C).permute(0, 3, 1, 2)
        return self.bn(x.reshape(B, C // d, d, H, W)).reshape(B, C, H, W)


class FieldNorm(TypedModule):
    """Per-sample normalization of each field over its channels and space (GroupNorm with
    one group per field), with a per-field affine: the Neural ePDO generator's norm."""

    def __init__(self, feature: FeatureType, eps: float = 1e-5) -> None:
        super().__init__()
        self.in_type = self.out_type = feature
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(feature.count))
        self.bias = nn.Parameter(torch.zeros(feature.count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        d = self.in_type.field.dim
        return F.group_norm(
            x,
            self.in_type.count,
            self.weight.repeat_interleave(d),
            self.bias.repeat_interleave(d),
            self.eps,
        )
