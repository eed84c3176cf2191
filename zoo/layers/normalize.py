"""The model's first step: raw images in [0, 1] -> ``(x - mean) / std`` per channel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Normalize"]


class Normalize(nn.Module):
    """``(x - mean) / std`` on (B, C, H, W) with one value per channel (or one for all); the
    statistics are constant (1, C, 1, 1) buffers that are not part of the state dict (the
    spec holds them)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1)
        std_t = torch.tensor([float(v) for v in std]).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    @classmethod
    def from_input(cls, spec_input: Any) -> Normalize:
        """From a spec's ``input`` section (its ``mean`` and ``std``, one per channel;
        ``auto`` not yet computed reads as mean 0, std 1)."""
        return cls(*spec_input.normalization())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def export(self) -> Normalize:
        """The same normalisation (it is already plain)."""
        return Normalize(self.mean.flatten().tolist(), self.std.flatten().tolist())

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
