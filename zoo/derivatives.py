"""How partial derivatives transform under a linear map of the plane.

For a function f on the plane and an orthogonal 2x2 matrix A, the transformed function
is ``f'(p) = f(A^-1 p)``. Its gradient is ``grad f'(p) = A grad f(A^-1 p)``, i.e. the
operators transform as ``d'x = A00 dx + A01 dy`` and ``d'y = A10 dx + A11 dy``.

The order-k derivatives ``D_k f = (dx^(k-i) dy^i f)_{i=0..k}`` therefore satisfy

    D_k f'(p) = P_k(A) D_k f(A^-1 p),

where row i of the (k+1)x(k+1) matrix ``P_k(A)`` holds the coefficients of
``(A00 dx + A01 dy)^(k-i) (A10 dx + A11 dy)^i`` in the monomials ``dx^(k-j) dy^j``.
``P_k`` is a representation: ``P_k(AB) = P_k(A) P_k(B)``.

The operator ordering (k outer, i inner; 15 operators up to order 4) is the one of
:mod:`epdo.zoo.stencils`.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import polynomial as npoly


def _power(coeffs: np.ndarray, e: int) -> np.ndarray:
    """Coefficients (in dy, with dx implied homogeneous) of a linear form raised to e."""
    out = np.array([1.0])
    for _ in range(e):
        out = npoly.polymul(out, coeffs)
    return out


def derivative_matrix(A: np.ndarray, k: int) -> np.ndarray:
    """P_k(A): (k+1, k+1) float64 matrix with D_k(f o A^-1)(p) = P_k(A) D_k f(A^-1 p).

    A homogeneous polynomial of degree k in (dx, dy) is stored by its coefficients of
    ``dx^(k-j) dy^j``, j = 0..k, which is a polynomial in t = dy/dx.
    """
    A = np.asarray(A, dtype=np.float64)
    row_x = np.array([A[0, 0], A[0, 1]])  # d'x = A00 dx + A01 dy  ->  A00 + A01 t
    row_y = np.array([A[1, 0], A[1, 1]])
    P = np.zeros((k + 1, k + 1))
    for i in range(k + 1):
        poly = npoly.polymul(_power(row_x, k - i), _power(row_y, i))
        P[i, : len(poly)] = poly[: k + 1]
    return P


def derivative_rep(A: np.ndarray, order: int) -> np.ndarray:
    """Block diagonal ``diag(P_0(A), ..., P_order(A))``: (n_ops, n_ops) float64."""
    n = (order + 1) * (order + 2) // 2  # number of operators dx^(k-i) dy^i, k <= order
    out = np.zeros((n, n))
    start = 0
    for k in range(order + 1):
        out[start : start + k + 1, start : start + k + 1] = derivative_matrix(A, k)
        start += k + 1
    return out
