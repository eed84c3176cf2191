"""The classifier head.

Head: ``(B, F*d, H, W)`` -> [field BatchNorm, ReLU when ``preact``] -> group pooling
(max/mean over each field's channels, invariant; or ``none``: every channel kept) -> global
spatial pooling -> ``(B, F)`` (``(B, F*d)`` without group pooling) -> [Linear, BatchNorm1d,
ReLU, Dropout] per hidden width -> Linear -> ``(B, classes)`` logits.
"""

from __future__ import annotations

import torch
from torch import nn

from ..reps import FeatureType
from .norms import FieldBatchNorm, SeededBatchNorm1d
from .plain import export_sequence
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
        preact: bool = False,
    ) -> None:
        super().__init__()
        if spatial_pool not in ("max", "avg"):
            raise ValueError(f"spatial pooling must be max or avg, got {spatial_pool!r}")
        self.in_type = feature
        self.pre = nn.Sequential(FieldBatchNorm(feature), nn.ReLU()) if preact else None
        self.group_pool = GroupPool(feature, group_pool) if group_pool != "none" else None
        self.spatial_pool = spatial_pool
        layers: list[nn.Module] = []
        width = feature.count if self.group_pool is not None else feature.channels
        for h in hidden:
            layers += [nn.Linear(width, h), SeededBatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, classes))
        self.mlp = nn.Sequential(*layers)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The feature vector fed to the MLP: (B, F), invariant; (B, F*d) without group
        pooling."""
        if self.pre is not None:
            x = self.pre(x)
        v = self.group_pool(x) if self.group_pool is not None else x
        return v.amax(dim=(2, 3)) if self.spatial_pool == "max" else v.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pooled(x))

    def export(self) -> PlainHead:
        """Inference form: BN folded (the pre-activation's into a channel affine, the MLP's
        into its Linear layers), group pooling in plain ops."""
        pre = nn.Identity() if self.pre is None else export_sequence(list(self.pre))
        pooling = nn.Identity() if self.group_pool is None else self.group_pool.export()
        return PlainHead(pre, pooling, self.spatial_pool, export_sequence(list(self.mlp)))


class PlainHead(nn.Module):
    """The head's inference form: ``mlp(spatial_pool(group_pool(pre(x))))``."""

    def __init__(self, pre: nn.Module, group_pool: nn.Module, spatial: str,
                 mlp: nn.Sequential) -> None:
        super().__init__()
        self.pre, self.group_pool, self.spatial, self.mlp = pre, group_pool, spatial, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.group_pool(self.pre(x))
        v = v.amax(dim=(2, 3)) if self.spatial == "max" else v.mean(dim=(2, 3))
        return self.mlp(v)
