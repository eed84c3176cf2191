"""Classifier head and residual block.

Head: ``(B, F*d, H, W)`` -> group pooling (max/mean over each field's channels, invariant)
-> global spatial pooling -> ``(B, F)`` -> [Linear, BatchNorm1d, ReLU, Dropout] per hidden
width -> Linear -> ``(B, classes)`` logits.
"""

from __future__ import annotations

import torch
from torch import nn

from ..reps import FeatureType
from .pooling import GroupPool


class ClassifierHead(nn.Module):
    """Invariant pooling followed by an MLP; see the module docstring for the shapes."""

    def __init__(
        self,
        feature: FeatureType,
        classes: int,
        hidden: tuple[int, ...] = (),
        group_pool: str = "max",
        spatial_pool: str = "max",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_pool not in ("max", "avg"):
            raise ValueError(f"spatial pooling must be max or avg, got {spatial_pool!r}")
        self.in_type = feature
        self.group_pool = GroupPool(feature, group_pool)
        self.spatial_pool = spatial_pool
        layers: list[nn.Module] = []
        width = feature.count
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, classes))
        self.mlp = nn.Sequential(*layers)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The invariant feature vector (B, F) fed to the MLP."""
        v = self.group_pool(x)
        return v.amax(dim=(2, 3)) if self.spatial_pool == "max" else v.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pooled(x))


class Residual(nn.Module):
    """``y = act(body(x) + shortcut(x))`` with an identity or a 1x1 equivariant shortcut."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, relu: bool = True) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x) + self.shortcut(x)
        return torch.relu(y) if self.relu else y
