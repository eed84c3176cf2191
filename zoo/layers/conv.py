"""Linear equivariant convolutions: the PDO-eConv (5x5) and the 1x1 intertwiner.

Both compute ``y = conv2d(x, K, stride, padding=P//2) (+ b)`` with the kernel K expanded
from an equivariant coefficient space (:class:`KernelExpansion`); the bias, when present,
is one scalar per output field and summand (the invariant vectors of a transitive
permutation representation are the constants). In eval mode without autograd the kernel
is expanded once and reused until a parameter changes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..reps import FeatureType
from ..stencils import stencils as derivative_stencils
from .expansion import KernelExpansion
from .h9 import H9Expansion
from .plain import plain_conv
from .typed import TypedModule


def summand_index(feature: FeatureType) -> np.ndarray:
    """For each channel, the flat index ``field * n_summands + summand`` (int64)."""
    per_field = np.concatenate(
        [np.full(r.dim, s, dtype=np.int64) for s, r in enumerate(feature.field.reps)]
    )
    n = len(feature.field.reps)
    return (np.arange(feature.count)[:, None] * n + per_field[None, :]).reshape(-1)


class FieldBias(nn.Module):
    """A learnable constant per (field, summand), broadcast over its channels."""

    def __init__(self, feature: FeatureType) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(feature.count * len(feature.field.reps)))
        self.register_buffer(
            "index", torch.from_numpy(summand_index(feature)), persistent=False
        )

    def forward(self) -> torch.Tensor:
        return self.bias[self.index]


class EquivariantConv(TypedModule):
    """``in_type -> out_type`` convolution with an equivariant P x P kernel.

    Input (B, in_type.channels, H, W); output (B, out_type.channels, H', W') with
    ``H' = (H - 1) // stride + 1`` (padding P // 2).
    """

    def __init__(
        self,
        in_type: FeatureType,
        out_type: FeatureType,
        order: int,
        stencils: np.ndarray,
        stride: int = 1,
        bias: bool = False,
        basis: str = "normalized",
        expansion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.in_type, self.out_type, self.stride = in_type, out_type, stride
        if expansion is None:
            expansion = KernelExpansion(in_type, out_type, order, stencils, basis)
        self.expansion = expansion
        self.padding = stencils.shape[-1] // 2
        self.bias = FieldBias(out_type) if bias else None
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def _versions(self) -> tuple:
        params = tuple(self.parameters())
        return tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)

    def kernel(self) -> torch.Tensor:
        """The expanded kernel (C_out, C_in, P, P); cached in eval mode without autograd."""
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.expansion()
        key = self._versions()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.expansion())
        return self._cache[1]

    def train(self, mode: bool = True) -> EquivariantConv:
        self._cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b = self.bias() if self.bias is not None else None
        y = F.conv2d(x, self.kernel(), b, stride=self.stride, padding=self.padding)
        if x.is_contiguous(memory_format=torch.channels_last):
            # keep the layout (a one-channel input is both, and the convolution picks NCHW)
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    def export(self) -> nn.Conv2d:
        """Inference form: the kernel expanded once from the basis, as a plain Conv2d whose
        output is channels-last, as this layer keeps it."""
        with torch.no_grad():
            weight = self.expansion()
            bias = self.bias() if self.bias is not None else None
        return plain_conv(weight, bias, self.stride, self.padding, channels_last=True)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", order={self.expansion.order}, stride={self.stride}"


class PDOConv(EquivariantConv):
    """Linear ePDO layer (PDO-eConv): K = sum_{k<=order, i} C_(k,i) (x) stencil(dx^(k-i) dy^i).

    ``coefficients="full"``: every equivariant C (parameterised by ``basis``);
    ``"h9"``: the PDO-eConvs CIFAR family (:mod:`.h9`, order 4, regular output).
    """

    def __init__(
        self,
        in_type: FeatureType,
        out_type: FeatureType,
        order: int = 4,
        discretization: str = "gauss",
        stride: int = 1,
        bias: bool = False,
        basis: str = "normalized",
        coefficients: str = "full",
    ) -> None:
        stencil = derivative_stencils(discretization, order)
        expansion = None
        if coefficients == "h9":
            if order != 4:
                raise ValueError(f"the 9-term family needs order 4, got {order}")
            expansion = H9Expansion(in_type, out_type, stencil)
        elif coefficients != "full":
            raise ValueError(f"coefficients must be full or h9, got {coefficients!r}")
        super().__init__(in_type, out_type, order, stencil, stride, bias, basis, expansion)
        self.discretization, self.coefficients = discretization, coefficients


class Conv1x1(EquivariantConv):
    """Equivariant 1x1 convolution: a G-intertwiner applied at every pixel."""

    def __init__(
        self,
        in_type: FeatureType,
        out_type: FeatureType,
        stride: int = 1,
        bias: bool = False,
        basis: str = "normalized",
    ) -> None:
        super().__init__(in_type, out_type, 0, np.ones((1, 1, 1)), stride, bias, basis)
