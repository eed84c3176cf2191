"""The model's first step: raw images in [0, 1] -> ``(x - mean) / std`` per channel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Normalize", "per_channel"]


def per_channel(values: Sequence[float], channels: int) -> list[float]:
    """One value per channel: a single value is repeated, C values are kept."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ValueError(f"need 1 or {channels} values, got {len(values)}")
    return values


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel on (B, C, H, W); the statistics are constant
    (1, C, 1, 1) buffers that are not part of the state dict (the spec holds them)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        channels = max(len(mean), len(std))
        mean_c, std_c = per_channel(mean, channels), per_channel(std, channels)
        self.register_buffer("mean", torch.tensor(mean_c).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_c).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_input(cls, spec_input: Any) -> Normalize:
        """From a spec's ``input`` section (``channels``, ``mean``, ``std``)."""
        c = spec_input.channels
        return cls(per_channel(spec_input.mean, c), per_channel(spec_input.std, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def export(self) -> Normalize:
        """The same normalisation (it is already plain)."""
        return Normalize(self.mean.flatten().tolist(), self.std.flatten().tolist())

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
