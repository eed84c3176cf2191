"""The dense (per-pixel) head of a segmentation network.

DenseHead: ``(B, F·d, H, W)`` -> [field BatchNorm, ReLU when ``preact``] -> group pooling
(max or mean over each field's d channels: F invariant channels) -> [1×1 conv, BatchNorm,
ReLU, Dropout2d] per hidden width -> 1×1 conv -> ``(B, classes, H, W)`` logits.

Every step after the group pooling acts on each pixel alone and on invariant channels, so
for a grid-exact element g (a quarter turn, a flip) ``head(g·x) = g·head(x)``, where g moves
the pixels of the map and leaves each pixel's class scores as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from ..reps import FeatureType, parse_field_type
from .norms import FieldBatchNorm
from .plain import export_sequence
from .pooling import GroupPool

__all__ = ["DenseHead"]


class DenseHead(nn.Module):
    """Group pooling and a per-pixel MLP; see the module docstring for the shapes."""

    def __init__(
        self,
        feature: FeatureType,
        classes: int,
        hidden: tuple[int, ...] = (),
        group_pool: str = "max",
        dropout: float = 0.0,
        preact: bool = False,
    ) -> None:
        super().__init__()
        self.in_type = feature
        trivial = parse_field_type(feature.group, "trivial")
        self.pre = nn.Sequential(FieldBatchNorm(feature), nn.ReLU()) if preact else None
        self.group_pool = GroupPool(feature, group_pool)
        layers: list[nn.Module] = []
        width = feature.count
        for h in hidden:
            layers += [nn.Conv2d(width, h, 1), FieldBatchNorm(FeatureType(trivial, h)),
                       nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            width = h
        layers.append(nn.Conv2d(width, classes, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        return self.mlp(self.group_pool(x))

    def export(self) -> nn.Sequential:
        """Inference form: BN folded (the pre-activation's into a channel affine, the MLP's
        into its 1×1 convolutions), group pooling in plain ops."""
        pre = [] if self.pre is None else list(export_sequence(list(self.pre)))
        return nn.Sequential(*pre, self.group_pool.export(), *export_sequence(list(self.mlp)))
