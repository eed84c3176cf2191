"""Field-typed modules: every equivariant layer knows the feature types it maps between."""

from __future__ import annotations

import torch
from torch import nn

from ..reps import FeatureType


class FieldTypeError(ValueError):
    """A tensor does not carry the feature type a layer expects."""


class TypedModule(nn.Module):
    """Base class: ``in_type`` -> ``out_type`` on tensors of shape (B, channels, H, W)."""

    in_type: FeatureType
    out_type: FeatureType

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`FieldTypeError` unless ``x`` is (B, in_type.channels, H, W)."""
        expected = self.in_type.channels
        if x.dim() != 4 or x.shape[1] != expected:
            raise FieldTypeError(
                f"{type(self).__name__} expects {self.in_type.name} fields of "
                f"{self.in_type.group.name} = {expected} channels as (B, {expected}, H, W), "
                f"got a tensor of shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"{self.in_type.name} -> {self.out_type.name} ({self.in_type.group.name})"
