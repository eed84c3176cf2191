"""The residual block: ``y = act(body(p) + shortcut)`` with ``p = pre(x)`` (a pre-activation
block's BN-ReLU, else x); the shortcut is x itself, or a 1x1 projection of p. All tensors
are ``(B, C, H, W)``; the body and the projection map the input's fields onto the same
output fields and size.
"""

from __future__ import annotations

import torch
from torch import nn

from .plain import export_module, export_sequence


class Residual(nn.Module):
    """``y = act(body(p) + shortcut)`` (see the module docstring); ``pre`` is None for a
    post-activation block (p = x)."""

    def __init__(
        self,
        body: nn.Module,
        shortcut: nn.Module | None,
        relu: bool = True,
        pre: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.projects = shortcut is not None
        self.relu = relu
        self.pre = pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pre(x) if self.pre is not None else x
        y = self.body(p) + (self.shortcut(p) if self.projects else x)
        return torch.relu(y) if self.relu else y

    def export(self) -> PlainResidual:
        """Inference form: body, projection and pre-activation with their BN folded."""
        body = export_module(self.body)
        shortcut = export_module(self.shortcut) if self.projects else None
        pre = nn.Identity() if self.pre is None else export_sequence(list(self.pre))
        return PlainResidual(body if body is not None else nn.Identity(), shortcut,
                             self.relu, pre)


class PlainResidual(nn.Module):
    """The residual block's inference form: ``act(body(p) + shortcut)``, p = pre(x); the
    shortcut is x (None) or a projection of p."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, relu: bool,
                 pre: nn.Module) -> None:
        super().__init__()
        self.body, self.shortcut, self.relu, self.pre = body, shortcut, relu, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pre(x)
        y = self.body(p) + (x if self.shortcut is None else self.shortcut(p))
        return torch.relu(y) if self.relu else y
