"""Equivariant kernels expanded from free coefficients (see :mod:`epdo.zoo.bases`).

For feature types ``Fi x rho_in -> Fo x rho_out`` and stencils S (n_ops, P, P), the kernel is

    K[(o, a), (i, b), :, :] = sum_op C_{o,i}[a, b, op] S[op]

with every C_{o,i} in the equivariant space of (rho_out, rho_in). Blocks with a regular
side use the closed forms, with ``Q[h] = P(h)^-1 S`` precomputed (|G|, n_ops, P*P); other
blocks use an explicit basis already multiplied by S. Buffers are float64 and follow
``.to(dtype)``; parameters are created in float32 (default dtype) as usual.

Two parameterisations of the same space of kernels (``basis``):

- ``"normalized"`` (the papers' code): every parameter multiplies a kernel basis element
  of unit Frobenius norm. A regular-side block's element (a0, op) is the kernel
  ``[p_h^-1(a) = a0] Q[h, op]`` over all h, of squared norm ``sum_h |Q[h, op]|^2``, so row
  op of Q is divided by that norm; a generic block's folded elements are divided by their
  own norms. The weights start i.i.d. N(0, sigma^2) with ``sigma^2 = C_out / n_params``,
  so that the expected ``sum(K^2)`` per output channel is 1 (the code's Kaiming rule) and
  each derivative order holds its share of basis elements of the initial kernel energy.
- ``"raw"``: the parameters are the derivative coefficients C themselves (so a 4th-order
  stencil of norm ~17 dominates a 1st-order one of norm ~1); the weights are rescaled at
  initialisation so that the mean ``sum(K^2)`` per output channel is exactly 2.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..bases import (
    GenericBlock,
    RegularInputBlock,
    RegularOutputBlock,
    block_dimension,
    coefficient_block,
    inverse_derivative_reps,
)
from ..reps import FeatureType

BASES = ("normalized", "raw")


def element_norms(q: np.ndarray) -> np.ndarray:
    """Norms of the regular-side basis elements, one per operator: ``sqrt(sum_h |Q[h, op]|^2)``
    for ``q`` of shape (|G|, n_ops, P*P); returns (n_ops,)."""
    return np.sqrt((q**2).sum(axis=(0, 2)))


def _unit(vectors: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Divide by ``norms`` where they are non-zero (a zero element stays zero)."""
    safe = np.where(norms > 1e-12, norms, 1.0)
    return vectors / safe


class KernelExpansion(nn.Module):
    """Maps its parameters to an equivariant (C_out, C_in, P, P) kernel.

    Args:
        in_type, out_type: feature types of the same group.
        order: highest derivative order (0 for 1x1 intertwiners).
        stencils: (n_ops, P, P) float64 stencils of the operators dx^(k-i) dy^i, k <= order.
        basis: ``"normalized"`` (unit-norm kernel basis elements, the papers') or ``"raw"``.
    """

    def __init__(
        self,
        in_type: FeatureType,
        out_type: FeatureType,
        order: int,
        stencils: np.ndarray,
        basis: str = "normalized",
    ) -> None:
        super().__init__()
        if in_type.group != out_type.group:
            raise ValueError(f"groups differ: {in_type.group.name} vs {out_type.group.name}")
        group = in_type.group
        n_ops, P, P2 = stencils.shape
        if P != P2:
            raise ValueError(f"stencils must be square, got {stencils.shape}")
        if basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
        self.in_type, self.out_type, self.order, self.size = in_type, out_type, order, P
        self.basis = basis
        flat = stencils.reshape(n_ops, P * P)
        q = inverse_derivative_reps(group, order) @ flat  # (|G|, n_ops, P*P)
        if basis == "normalized":
            q = _unit(q, element_norms(q)[None, :, None])
        self.register_buffer("q", torch.from_numpy(q.copy()), persistent=False)
        Fo, Fi = out_type.count, in_type.count
        self.kinds: list[str] = []
        self.weights = nn.ParameterList()
        for rep_out in out_type.field.reps:
            for rep_in in in_type.field.reps:
                block = coefficient_block(rep_out, rep_in, order)
                j = len(self.kinds)
                if isinstance(block, RegularInputBlock):
                    self.kinds.append("regular_in")
                    shape: tuple[int, ...] = (Fo, Fi, block.out_dim, n_ops)
                    self.register_buffer(
                        f"gather{j}", torch.from_numpy(block.gather), persistent=False
                    )
                elif isinstance(block, RegularOutputBlock):
                    self.kinds.append("regular_out")
                    shape = (Fo, Fi, block.in_dim, n_ops)
                    self.register_buffer(
                        f"gather{j}", torch.from_numpy(block.gather), persistent=False
                    )
                else:
                    assert isinstance(block, GenericBlock)
                    self.kinds.append("generic")
                    shape = (Fo, Fi, block.basis.shape[0])
                    folded = np.einsum("nabk,kq->nabq", block.basis, flat)
                    if basis == "normalized":
                        norms = np.sqrt((folded**2).sum(axis=(1, 2, 3)))
                        folded = _unit(folded, norms[:, None, None, None])
                    self.register_buffer(
                        f"basis{j}", torch.from_numpy(folded.copy()), persistent=False
                    )
                    self.register_buffer(
                        f"zeros{j}", torch.zeros(Fo, block.out_dim, Fi, block.in_dim, P * P),
                        persistent=False,
                    )
                assert int(np.prod(shape[2:])) == block_dimension(block, n_ops)
                self.weights.append(nn.Parameter(torch.empty(shape)))
        self.n_in_reps = len(in_type.field.reps)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the weights (see the module docstring for the two rules)."""
        if self.basis == "normalized":
            n_params = sum(w.numel() for w in self.weights)
            std = (self.out_type.channels / max(n_params, 1)) ** 0.5
            for w in self.weights:
                nn.init.normal_(w, std=std)
            return
        gain = 2.0
        for w in self.weights:
            nn.init.normal_(w)
        kernel = self.forward()
        power = kernel.pow(2).flatten(1).sum(1).mean()
        if power > 0:
            scale = torch.sqrt(gain / power).to(self.weights[0].dtype)
            for w in self.weights:
                w.mul_(scale)

    def _block(self, j: int) -> torch.Tensor:
        """Kernel block j as (Fo, do, Fi, di, P*P)."""
        w, kind = self.weights[j], self.kinds[j]
        q = self.q.to(w.dtype)
        if kind == "regular_in":
            gather = getattr(self, f"gather{j}")  # (do, |G|)
            return torch.einsum("oiahn,hnq->oaihq", w[:, :, gather, :], q)
        if kind == "regular_out":
            gather = getattr(self, f"gather{j}")  # (|G|, di)
            return torch.einsum("oigbn,gnq->ogibq", w[:, :, gather, :], q)
        basis = getattr(self, f"basis{j}").to(w.dtype)
        if basis.shape[0] == 0:
            return getattr(self, f"zeros{j}").to(w.dtype)
        return torch.einsum("oin,nabq->oaibq", w, basis)

    def forward(self) -> torch.Tensor:
        rows = []
        for r in range(len(self.out_type.field.reps)):
            cols = [self._block(r * self.n_in_reps + c) for c in range(self.n_in_reps)]
            rows.append(torch.cat(cols, dim=3) if len(cols) > 1 else cols[0])
        k = torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]
        Fo, do, Fi, di, PP = k.shape
        return k.reshape(Fo * do, Fi * di, self.size, self.size)
