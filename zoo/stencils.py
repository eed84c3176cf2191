r"""Square derivative stencils for the monomial operators ∂x^(k−i) ∂y^i, orders 0..4.

Operators. For ``order`` K the operators are ∂x^(k−i) ∂y^i for k = 0..K (outer) and
i = 0..k (inner); operator (k, i) has index k(k+1)/2 + i, so K = 4 gives 15 operators
``1, ∂x, ∂y, ∂x², ∂x∂y, ∂y², ...``.

Coordinates. x points right, y points UP. A stencil ``S`` of shape (size, size) has
centre c = size // 2, and its entry S[a, b] (row a, column b) sits at the offset

    o(a, b) = (x, y) = (b − c, −(a − c)),

so row 0 is the top (largest y). Stencils are applied as a correlation, exactly like
``torch.nn.functional.conv2d``:

    (S ⋆ f)(p) = Σ_{a,b} S[a, b] · f(pixel p + (a − c, b − c)),

and a stencil for ∂x^α ∂y^β satisfies Σ_{a,b} S[a, b] f(p + o(a, b)) ≈ ∂x^α ∂y^β f(p) for
f viewed as a function of the physical position. With this convention ``np.rot90(S)``
rotates the stencil counter-clockwise by 90° and ``np.flipud(S)`` reflects y → −y.

Methods (all return float64 arrays of shape (n_operators(order), size, size)):

* ``"fd"``: the papers' finite differences: tensor products of the *narrowest* 1-D
  central differences, [1] for order 0, [−½, 0, ½] and [1, −2, 1] on 3 points for orders 1
  and 2, [−½, 1, 0, −1, ½] and [1, −4, 6, −4, 1] on 5 points for orders 3 and 4 (so ∂x∂y is
  the 3×3 four-corner stencil), zero-padded to size × size:
  S[a, b] = n_α(b − c)·n_β(−(a − c)). These are the stencils of both papers' public code.
* ``"fd_wide"``: tensor products of the 1-D central differences on *all* offsets −c..c,
  exact for polynomials of degree ≤ size − 1 (Lagrange interpolation derivatives, solved
  exactly in rational arithmetic): more accurate, wider (e.g. ∂x is [1, −8, 0, 8, −1]/12).
* ``"gauss"``: derivatives of the Gaussian φ(x, y) = exp(−(ε r)²), ε = GAUSS_EPS,
  sampled at the offsets. The stencil of ∂x^α∂y^β (k = α + β) is
  S(o) = (−1)^k ∂x^α∂y^β φ(o): the derivative of the smoothed image φ ∗ f is
  (∂φ) ∗ f, and a convolution with ψ is a correlation with ψ(−o) = (−1)^k ∂φ(o)
  (derivatives of order k of a radial φ have parity (−1)^k).
* ``"rbffd"``: RBF-FD weights at the centre from all size × size nodes, with the
  polyharmonic spline RBFFD_PHI (ε⁶ r⁶ log(ε r), ε = RBFFD_EPS = 0.5) augmented by the
  monomials of degree ≤ k for an operator of order k (the ``rbf`` package's default), the
  settings of the Neural ePDO code.

The gauss and rbffd derivations call sympy through the ``rbf`` package (about 10 s per
method): :func:`stencils` caches them on disk (:mod:`epdo.zoo.cache`) and in process;
:func:`derive_stencils` always derives afresh.
"""

from __future__ import annotations

import functools
import importlib.metadata
from fractions import Fraction
from math import factorial

import numpy as np

from . import cache

__all__ = [
    "GAUSS_EPS",
    "MAX_ORDER",
    "METHODS",
    "RBFFD_EPS",
    "RBFFD_PHI",
    "STENCIL_VERSION",
    "clear_memory_cache",
    "derive_stencils",
    "fd_weights_1d",
    "narrow_fd_weights_1d",
    "n_operators",
    "operator_index",
    "operator_list",
    "operator_name",
    "stencil_matrix",
    "stencil_offsets",
    "stencils",
]

#: Shape parameter ε of the Gaussian exp(−(ε r)²) used by the "gauss" method.
GAUSS_EPS = 0.99
#: RBF used by the "rbffd" method (rbf.basis name): phs6 = (ε r)⁶ log(ε r).
RBFFD_PHI = "phs6"
#: Shape parameter of the phs6 RBF, as in the Neural ePDO code.
RBFFD_EPS = 0.5
#: Bump when the derivation changes, to invalidate disk-cached stencils.
STENCIL_VERSION = 2
#: Highest derivative order supported.
MAX_ORDER = 4
#: Valid ``method`` names.
METHODS = ("fd", "fd_wide", "gauss", "rbffd")

_SUPERSCRIPTS = {2: "²", 3: "³", 4: "⁴"}


# --------------------------------------------------------------------------- operators


def n_operators(order: int) -> int:
    """Number of operators ∂x^(k−i)∂y^i with k ≤ order: (order + 1)(order + 2) / 2."""
    order = _check_order(order)
    return (order + 1) * (order + 2) // 2


def operator_index(k: int, i: int) -> int:
    """Index k(k+1)/2 + i of ∂x^(k−i) ∂y^i (0 ≤ i ≤ k)."""
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (k, i))
    if not (ints and 0 <= i <= k):
        raise ValueError(f"need integers 0 <= i <= k, got k={k!r}, i={i!r}")
    return int(k) * (int(k) + 1) // 2 + int(i)


def operator_list(order: int) -> list[tuple[int, int]]:
    """The (k, i) pairs of all operators up to ``order``, in index order."""
    order = _check_order(order)
    return [(k, i) for k in range(order + 1) for i in range(k + 1)]


def _power(symbol: str, n: int) -> str:
    if n == 0:
        return ""
    return symbol + _SUPERSCRIPTS.get(n, "" if n == 1 else f"^{n}")


def operator_name(k: int, i: int) -> str:
    """Readable name of ∂x^(k−i) ∂y^i, e.g. ``"1"``, ``"∂x"``, ``"∂x²∂y"``, ``"∂y⁴"``."""
    operator_index(k, i)  # validates
    return (_power("∂x", k - i) + _power("∂y", i)) or "1"


# --------------------------------------------------------------------------- validation


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"order must be an integer in 0..{MAX_ORDER}, got {order!r}")
    if not 0 <= order <= MAX_ORDER:
        raise ValueError(f"order must be in 0..{MAX_ORDER}, got {order}")
    return int(order)


def _check_args(method: str, order: int, size: int) -> tuple[str, int, int]:
    """Validate (method, order, size) and return them normalised to builtins."""
    if method not in METHODS:
        raise ValueError(f"unknown stencil method {method!r}; expected one of {METHODS}")
    order = _check_order(order)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an odd integer, got {size!r}")
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if method in ("fd", "fd_wide") and size <= order:
        raise ValueError(f"{method} stencils of order {order} need size >= {order + 1}, got {size}")
    if method == "rbffd" and size * size < n_operators(MAX_ORDER):
        raise ValueError(
            f"rbffd stencils are derived up to order {MAX_ORDER}, whose polynomial part has "
            f"{n_operators(MAX_ORDER)} monomials: this needs size >= 5, got size {size}"
        )
    return method, order, size


# --------------------------------------------------------------------------- geometry


def stencil_offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Physical offsets (x, y) of the stencil entries, each of shape (size, size).

    x[a, b] = b − c and y[a, b] = −(a − c) with c = size // 2 (y up, rows run down).
    """
    c = size // 2
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (cols - c).astype(np.float64), (c - rows).astype(np.float64)


def _nodes(size: int) -> np.ndarray:
    """Stencil offsets as points, shape (size*size, 2), in row-major (a, b) order."""
    x, y = stencil_offsets(size)
    return np.stack([x.ravel(), y.ravel()], axis=-1)


# --------------------------------------------------------------------------- fd


def _solve_exact(matrix: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction]:
    """Solve a non-singular square system exactly by Gauss–Jordan elimination."""
    n = len(rhs)
    aug = [row[:] + [b] for row, b in zip(matrix, rhs, strict=True)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        piv = aug[col][col]
        aug[col] = [v / piv for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                factor = aug[r][col]
                aug[r] = [v - factor * p for v, p in zip(aug[r], aug[col], strict=True)]
    return [aug[r][n] for r in range(n)]


@functools.cache
def _fd_weights_exact(deriv: int, size: int) -> tuple[Fraction, ...]:
    c = size // 2
    offsets = [Fraction(t) for t in range(-c, c + 1)]
    # Row m: Σ_j w_j t_j^m = d^deriv/dt^deriv t^m at 0 = deriv! δ_{m, deriv}.
    vandermonde = [[t**m for t in offsets] for m in range(size)]
    rhs = [Fraction(factorial(deriv) if m == deriv else 0) for m in range(size)]
    return tuple(_solve_exact(vandermonde, rhs))


def fd_weights_1d(deriv: int, size: int) -> np.ndarray:
    """1-D central finite-difference weights, shape (size,), for offsets t = −c..c.

    Σ_j w_j f(t_j) = f^(deriv)(0) exactly for polynomials f of degree ≤ size − 1,
    e.g. ``fd_weights_1d(1, 5) == [1, −8, 0, 8, −1] / 12``.
    """
    if not 0 <= deriv < size:
        raise ValueError(f"need 0 <= deriv < size, got deriv={deriv}, size={size}")
    return np.array([float(w) for w in _fd_weights_exact(deriv, size)], dtype=np.float64)


def narrow_fd_weights_1d(deriv: int) -> np.ndarray:
    """The narrowest 1-D central difference for ``deriv``, on 2⌊(deriv+1)/2⌋ + 1 points.

    ``[1]``, ``[−½, 0, ½]``, ``[1, −2, 1]``, ``[−½, 1, 0, −1, ½]``, ``[1, −4, 6, −4, 1]`` for
    deriv = 0..4: the stencils of the papers' code (exact for polynomials of degree ≤ width − 1).
    """
    width = 2 * ((deriv + 1) // 2) + 1
    return fd_weights_1d(deriv, width)


def _padded(weights: np.ndarray, size: int) -> np.ndarray:
    """Centre 1-D weights on offsets −c..c (c = size // 2), zeros elsewhere."""
    out = np.zeros(size)
    pad = (size - weights.size) // 2
    out[pad : pad + weights.size] = weights
    return out


def _tensor_stencils(order: int, size: int, weights_1d) -> np.ndarray:
    """S[a, b] = w_α(x = b − c) · w_β(y = −(a − c)) for every operator ∂x^α ∂y^β."""
    out = np.empty((n_operators(order), size, size), dtype=np.float64)
    for k, i in operator_list(order):
        wx = _padded(weights_1d(k - i), size)  # indexed by column b ↔ x = b − c
        wy = _padded(weights_1d(i), size)[::-1]  # row a ↔ y = −(a − c): reverse the offsets
        out[operator_index(k, i)] = np.outer(wy, wx)
    return out


def _derive_fd(order: int, size: int) -> np.ndarray:
    return _tensor_stencils(order, size, narrow_fd_weights_1d)


def _derive_fd_wide(order: int, size: int) -> np.ndarray:
    return _tensor_stencils(order, size, lambda deriv: fd_weights_1d(deriv, size))


# --------------------------------------------------------------------------- rbf methods


def _rbf_version() -> str:
    try:
        return importlib.metadata.version("treverhines-rbf")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - odd installs
        import rbf

        return str(getattr(rbf, "__version__", "unknown"))


def _derive_gauss(order: int, size: int) -> np.ndarray:
    from rbf.basis import get_rbf

    phi = get_rbf("ga")
    nodes = _nodes(size)
    centre = np.zeros((1, 2))
    out = np.empty((n_operators(order), size, size), dtype=np.float64)
    for k, i in operator_list(order):
        # phi(x, c, diff) = ∂^diff/∂x^diff φ(x − c): the derivative at the offsets.
        values = phi(nodes, centre, eps=GAUSS_EPS, diff=(k - i, i))[:, 0]
        out[operator_index(k, i)] = (-1.0) ** k * values.reshape(size, size)
    return out


def _derive_rbffd(order: int, size: int) -> np.ndarray:
    from rbf.pde.fd import weights

    nodes = _nodes(size)
    out = np.empty((n_operators(order), size, size), dtype=np.float64)
    for k, i in operator_list(order):
        # diffs = (order in the first coordinate = x, order in the second = y); the
        # appended polynomial has degree k (``order=k``, the package's default for diffs).
        w = weights(
            x=np.zeros(2), s=nodes, diffs=(k - i, i), phi=RBFFD_PHI, order=k, eps=RBFFD_EPS
        )
        out[operator_index(k, i)] = np.asarray(w, dtype=np.float64).reshape(size, size)
    return out


_DERIVE = {
    "fd": _derive_fd,
    "fd_wide": _derive_fd_wide,
    "gauss": _derive_gauss,
    "rbffd": _derive_rbffd,
}


def _cache_key(method: str, order: int, size: int) -> dict[str, object]:
    """Everything that determines the numbers of a disk-cached stencil set."""
    key: dict[str, object] = {
        "method": method,
        "order": order,
        "size": size,
        "stencil_version": STENCIL_VERSION,
        "rbf_version": _rbf_version(),
    }
    if method == "gauss":
        key.update(rbf="ga", eps=GAUSS_EPS, sign="(-1)^k")
    elif method == "rbffd":
        key.update(phi=RBFFD_PHI, eps=RBFFD_EPS, poly_degree="k")
    return key


# --------------------------------------------------------------------------- public API


def derive_stencils(method: str, order: int = 4, size: int = 5) -> np.ndarray:
    """Derive the stencils afresh (no cache). Shape (n_operators(order), size, size)."""
    method, order, size = _check_args(method, order, size)
    return _DERIVE[method](order, size)


def stencil_problem(stencils: np.ndarray, order: int, size: int) -> str | None:
    """Why ``stencils`` cannot be derivative stencils of this order and size, or None.

    Checks what every discretization satisfies exactly: shape (n_operators(order), size,
    size), finite, no stencil all zero, and the parity of each operator
    ``dx^(k-i) dy^i``: mirrored left-right it changes by (-1)^(k-i), upside down by (-1)^i.
    """
    expected = (n_operators(order), size, size)
    if stencils.shape != expected:
        return f"shape {stencils.shape}, not {expected}"
    if not np.all(np.isfinite(stencils)):
        return "values that are not finite"
    j = 0
    for k in range(order + 1):
        for i in range(k + 1):
            w = stencils[j]
            scale = float(np.abs(w).max())
            if scale == 0.0:
                return f"the stencil of operator {j} is all zero"
            tol = 1e-9 * max(scale, 1.0)
            if (np.abs(w[:, ::-1] - (-1) ** (k - i) * w).max() > tol
                    or np.abs(w[::-1, :] - (-1) ** i * w).max() > tol):
                return f"the stencil of operator {j} lacks the symmetry of its derivative"
            j += 1
    return None


@functools.cache
def _stencils_cached(method: str, order: int, size: int) -> np.ndarray:
    if method in ("fd", "fd_wide"):
        result = _DERIVE[method](order, size)
    else:
        arrays = cache.cached_arrays(
            "stencils",
            _cache_key(method, order, size),
            lambda: {"stencils": derive_stencils(method, order, size)},
            check=lambda a: stencil_problem(np.asarray(a.get("stencils")), order, size)
            if "stencils" in a else "no stencils array",
        )
        result = np.asarray(arrays["stencils"], dtype=np.float64)
    result.setflags(write=False)
    return result


def stencils(method: str, order: int = 4, size: int = 5) -> np.ndarray:
    """Stencils of all operators up to ``order``, shape (n_operators(order), size, size).

    ``method`` is "fd", "fd_wide", "gauss" or "rbffd" (see the module docstring for the math and
    the orientation convention). gauss and rbffd are cached on disk and in process; the
    returned array is a fresh writable copy.
    """
    method, order, size = _check_args(method, order, size)
    if method in ("fd", "fd_wide"):
        return _stencils_cached(method, order, size).copy()
    # lower orders are the leading rows of the order-4 set: derive (and cache) that once
    return _stencils_cached(method, MAX_ORDER, size)[: n_operators(order)].copy()


def stencil_matrix(method: str, order: int = 4, size: int = 5) -> np.ndarray:
    """:func:`stencils` flattened to shape (n_operators(order), size*size), row-major."""
    out = stencils(method, order, size)
    return out.reshape(out.shape[0], size * size)


def clear_memory_cache() -> None:
    """Forget the in-process stencil cache (the disk cache is left alone)."""
    _stencils_cached.cache_clear()
