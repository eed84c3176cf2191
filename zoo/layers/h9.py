"""The PDO-eConvs CIFAR kernels: the rotated 9-term family H(u, v).

The public PDO-eConvs code for CIFAR learns, for every (output field, input channel) pair, a
3 x 3 array W. Read through the nine 3 x 3 finite-difference stencils of the operators

    1, ∂x, ∂y, ∂x², ∂x∂y, ∂y², ∂x²∂y, ∂x∂y², ∂x²∂y²              (operator indices J below)

(the central 3 x 3 of epdo's narrow ``fd`` stencils, an invertible 9 x 9 matrix F3), W
gives the coefficients ``beta = vec(W) F3^-1`` of the polynomial

    H(u, v) = b1 + b2 u + b3 v + b4 u² + b5 uv + b6 v² + b7 u²v + b8 uv² + b9 u²v²,

a PDO in the rotated derivatives u = cos(t) ∂x + sin(t) ∂y, v = −sin(t) ∂x + cos(t) ∂y.
Expanded, H is a combination of the 15 derivatives up to order 4: ``c = beta T(t)`` with
T(t) (9 x 15) from :func:`h9_transform`. The code rotates H to every orientation
``t_k = 2 pi k / p + pi / 8`` and discretises with 5 x 5 stencils.

In epdo's terms, this is the regular-output closed form of :mod:`epdo.zoo.bases` with the
free row C[e] restricted to the 9-dimensional family: ``C[e, b] = vec(W_b) F3^-1 T(pi/8)``
and ``C[g, b] = C[e, p_g^-1(b)] P(g)^-1``: the kernel of orientation g is the orientation-e
kernel rotated by g (and, for D_N, reflected), on the input fields permuted by g. The
family is not rotation invariant (u²v² is not), so it depends on the offset pi/8, which is
kept. The spec's stencils (``discretization``) discretise the 15 derivatives; W is read
through the fd stencils F3 whatever they are.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..bases import RegularOutputBlock, inverse_derivative_reps, inverse_permutations
from ..reps import FeatureType
from ..stencils import n_operators, operator_index, stencils

#: (power of u, power of v) of the nine terms of H, in the code's order b1..b9.
H9_TERMS = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2), (2, 1), (1, 2), (2, 2))
#: Orientation of the unrotated family, as in the PDO-eConvs code (t_k = 2 pi k / p + pi/8).
H9_ANGLE = math.pi / 8


def h9_transform(angle: float) -> np.ndarray:
    """T(angle) (9, 15): row j holds the coefficients of term j of H, u^a v^b with
    u = cos(t) X + sin(t) Y and v = −sin(t) X + cos(t) Y, in the monomials X^(k−i) Y^i
    (X = ∂x, Y = ∂y) at operator index k(k+1)/2 + i."""
    c, s = math.cos(angle), math.sin(angle)
    u = np.array([[0.0, s], [c, 0.0]])  # poly[i, j] = coefficient of X^i Y^j
    v = np.array([[0.0, c], [-s, 0.0]])
    out = np.zeros((len(H9_TERMS), n_operators(4)))
    for row, (a, b) in enumerate(H9_TERMS):
        poly = np.ones((1, 1))
        for factor in (u,) * a + (v,) * b:
            poly = _poly_mul(poly, factor)
        for i in range(poly.shape[0]):
            for j in range(poly.shape[1]):
                if poly[i, j] != 0.0:
                    out[row, operator_index(i + j, j)] += poly[i, j]
    return out


def _poly_mul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Product of two bivariate polynomials given as coefficient grids [power X, power Y]."""
    out = np.zeros((p.shape[0] + q.shape[0] - 1, p.shape[1] + q.shape[1] - 1))
    for i, j in zip(*np.nonzero(p), strict=True):
        out[i : i + q.shape[0], j : j + q.shape[1]] += p[i, j] * q
    return out


def h9_operators() -> list[int]:
    """Operator indices J of the nine terms' derivatives (X^a Y^b of H9_TERMS)."""
    return [operator_index(a + b, b) for a, b in H9_TERMS]


def h9_readout() -> np.ndarray:
    """F3^-1 (9, 9): vec(W) F3^-1 = beta for a 3 x 3 array W (row-major), where row j of F3
    is the central 3 x 3 of the fd stencil of operator J[j]."""
    fd = stencils("fd", 4, 5)[h9_operators(), 1:4, 1:4].reshape(9, 9)
    return np.linalg.inv(fd)


class H9Expansion(nn.Module):
    """``in_type -> out_type`` kernels of the rotated 9-term family (see the module docstring).

    The output fields must be regular; the input fields trivial or regular. Parameters: one
    3 x 3 array per (output field, input field, input channel): ``weight`` of shape
    (Fo, Fi, di, 3, 3), initialised as TensorFlow's ``variance_scaling_initializer`` of the
    code (truncated normal, std sqrt(2.6 / fan_in), fan_in = 9 * Fi * di). Returns
    (C_out, C_in, P, P) from the spec's P x P stencils.
    """

    def __init__(self, in_type: FeatureType, out_type: FeatureType, stencil: np.ndarray) -> None:
        super().__init__()
        group = in_type.group
        if len(out_type.field.reps) != 1 or not out_type.field.reps[0].is_regular:
            raise ValueError("the 9-term family maps onto regular fields only")
        rep_in = in_type.field.reps[0]
        if len(in_type.field.reps) != 1 or not (rep_in.is_regular or rep_in.dim == 1):
            raise ValueError("the 9-term family reads trivial or regular fields only")
        if stencil.shape[0] != n_operators(4):
            raise ValueError("the 9-term family needs the 15 stencils up to order 4")
        self.in_type, self.out_type, self.order = in_type, out_type, 4
        self.size = stencil.shape[-1]
        flat = stencil.reshape(n_operators(4), -1)
        q = inverse_derivative_reps(group, 4) @ flat  # (|G|, 15, P*P)
        fold = h9_readout() @ h9_transform(H9_ANGLE)  # (9, 15): vec(W) -> coefficients
        self.register_buffer("q", torch.from_numpy(np.einsum("jn,gnq->gjq", fold, q).copy()),
                             persistent=False)
        gather = RegularOutputBlock(
            out_type.field.dim, rep_in.dim, inverse_permutations(rep_in)
        ).gather
        self.register_buffer("gather", torch.from_numpy(gather), persistent=False)
        self.weight = nn.Parameter(torch.empty(out_type.count, in_type.count, rep_in.dim, 3, 3))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        fan_in = 9 * self.in_type.channels
        std = math.sqrt(1.3 * 2.0 / fan_in)
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self) -> torch.Tensor:
        Fo, Fi, di = self.weight.shape[:3]
        w = self.weight.reshape(Fo, Fi, di, 9)[:, :, self.gather, :]  # (Fo, Fi, |G|, di, 9)
        k = torch.einsum("oigbj,gjq->ogibq", w, self.q.to(w.dtype))
        G = self.gather.shape[0]
        return k.reshape(Fo * G, Fi * di, self.size, self.size)
