"""The skip join of an encoder-decoder (U-Net): the current map and an earlier one, of the
same height and width, made into one.

``concat``: ``y = [x ; t]`` along the channels, shapes (B, C_x, H, W) and (B, C_t, H, W)
-> (B, C_x + C_t, H, W); the fields of x then those of t. A group element g acts on a
feature map by a channel permutation P(g) with a spatial transform; on the join it acts by
``diag(P_x(g), P_t(g))`` on each part on its own, so if x and t transform by g then so does
``[x ; t]``: exactly equivariant. ``add``: ``y = x + t`` for two maps of the same fields,
(B, C, H, W) twice -> (B, C, H, W), equivariant by linearity.
"""

from __future__ import annotations

import torch
from torch import nn

from ..reps import FeatureType
from .typed import FieldTypeError, TypedModule

__all__ = ["MODES", "PlainSkip", "Skip", "join"]

MODES = ("concat", "add")


def join(x: torch.Tensor, tapped: torch.Tensor, mode: str) -> torch.Tensor:
    """``[x ; tapped]`` along the channels (``concat``) or ``x + tapped`` (``add``)."""
    if mode == "concat":
        return torch.cat((x, tapped), dim=1)
    return x + tapped


class PlainSkip(nn.Module):
    """The inference form: the same join of ``(x, tapped)``, no type check."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, tapped: torch.Tensor) -> torch.Tensor:
        return join(x, tapped, self.mode)


class Skip(TypedModule):
    """``x`` (``feature`` fields) joined with ``tapped`` (``tapped`` fields): concatenated
    (out: the fields of both) or added (out: the same fields)."""

    def __init__(self, feature: FeatureType, tapped: FeatureType, mode: str = "concat") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "add" and tapped != feature:
            raise ValueError(f"add needs the same fields, got {feature.name} and {tapped.name}")
        if mode == "concat" and tapped.field != feature.field:
            raise ValueError(
                f"concat needs one field type, got {feature.field.name} and {tapped.field.name}"
            )
        self.in_type, self.tapped_type, self.mode = feature, tapped, mode
        count = feature.count + (tapped.count if mode == "concat" else 0)
        self.out_type = FeatureType(feature.field, count)

    def forward(self, x: torch.Tensor, tapped: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        want = (x.shape[0], self.tapped_type.channels, x.shape[2], x.shape[3])
        if tuple(tapped.shape) != want:
            raise FieldTypeError(
                f"Skip expects the tapped map as {self.tapped_type.name} fields of shape "
                f"{want}, got {tuple(tapped.shape)}"
            )
        return join(x, tapped, self.mode)

    def export(self) -> PlainSkip:
        """Inference form: the same join in a plain module."""
        return PlainSkip(self.mode)

    def extra_repr(self) -> str:
        return f"{self.mode} {self.in_type.name} + {self.tapped_type.name} -> {self.out_type.name}"
