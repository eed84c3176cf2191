"""Group pooling, the D_N -> C_N restriction, and spatial pooling that keeps field types."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reps import FeatureType, FieldRep, PermutationRep
from .typed import TypedModule


class GroupPool(TypedModule):
    """Max or mean over each field's channels: F fields -> F trivial fields (invariant)."""

    def __init__(self, feature: FeatureType, kind: str = "max") -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"group pooling kind must be max or avg, got {kind!r}")
        self.kind = kind
        self.in_type = feature
        trivial = FieldRep((PermutationRep(feature.group, 0),))
        self.out_type = FeatureType(trivial, feature.count)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        B, C, H, W = x.shape
        d = self.in_type.field.dim
        v = x.reshape(B, C // d, d, H, W)
        return v.amax(2) if self.kind == "max" else v.mean(2)

    def export(self) -> FieldMaxMean:
        return FieldMaxMean(self.in_type.count, self.in_type.field.dim, self.kind)


class FieldMaxMean(torch.nn.Module):
    """Group pooling in plain ops: (B, F*d, H, W) -> (B, F, H, W), max or mean over each
    field's d channels (no type check: the inference form)."""

    def __init__(self, fields: int, dim: int, kind: str) -> None:
        super().__init__()
        self.fields, self.dim, self.kind = fields, dim, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.unflatten(1, (self.fields, self.dim))
        return v.amax(2) if self.kind == "max" else v.mean(2)


class Restrict(TypedModule):
    """Restriction D_N -> C_N: channels unchanged, each D_N field read as C_N fields.

    With the element order ``m*N + r`` a D_N regular field (2N channels) is two C_N regular
    fields as it stands, so this is the identity on tensors and changes only the type.
    """

    def __init__(self, feature: FeatureType) -> None:
        super().__init__()
        group = feature.group
        if not group.reflections:
            raise ValueError(f"restriction needs a group with reflections (D_N), got {group.name}")
        self.in_type = feature
        self.out_type = feature.restrict(group.rotation_subgroup())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x

    def export(self) -> None:
        """Identity on tensors: vanishes from the inference form."""
        return None


class SpatialPool(TypedModule):
    """k x k max or average pooling with stride k; field types unchanged.

    Exactly equivariant under the grid rotations when k divides the input size."""

    def __init__(self, feature: FeatureType, size: int = 2, kind: str = "max") -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"pooling kind must be max or avg, got {kind!r}")
        self.in_type = self.out_type = feature
        self.size, self.kind = size, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.kind == "max":
            return F.max_pool2d(x, self.size)
        return F.avg_pool2d(x, self.size)

    def export(self) -> torch.nn.Module:
        pool = torch.nn.MaxPool2d if self.kind == "max" else torch.nn.AvgPool2d
        return pool(self.size)

    def extra_repr(self) -> str:
        return f"{self.kind} {self.size}x{self.size}, {self.in_type.name}"
