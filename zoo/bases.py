"""Bases of equivariant PDO coefficients (and 1x1 intertwiners), computed once.

A PDO from a field of type rho_in (dim di) to one of type rho_out (dim do) is a coefficient
tensor C[a, b, op] (do x di x n_ops); it is equivariant iff for every generator g

    rho_out(g) C = C (rho_in(g) (x) P(g)),                                   (*)

with C read as a do x (di*n_ops) matrix, column index (b, op), and P = diag(P_0..P_order)
the derivative representation of :mod:`epdo.zoo.derivatives`. The 1x1 intertwiners are the
order-0 case (P = [1]).

All representations here are permutation representations (``p_g[x] = g.x``), which gives
closed forms whenever one side is regular:

- regular input: the block C_h of input channel h is ``C_h = rho_out(h) C_e P(h)^-1`` and
  C_e (do x n_ops) is free, so ``C_h[a] = C_e[p_h^-1(a)] P(h)^-1``;
- regular output: row g is ``C[g] = C[e] (rho_in(g) (x) P(g))^-1``, i.e.
  ``C[g, b] = C[e, p_g^-1(b)] P(g)^-1``, and the row C[e] (di x n_ops) is free.

Other pairs (trivial, quotient) are small; their solution space of (*) is found by SVD and
made canonical (independent of the SVD's choice of basis) by pivoted Gram-Schmidt on the
orthogonal projector onto it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .derivatives import derivative_rep
from .groups import Group
from .reps import FieldRep, PermutationRep


@cache
def inverse_derivative_reps(group: Group, order: int) -> np.ndarray:
    """``P(h)^-1 = P(h^-1)`` for every element h: (|G|, n_ops, n_ops) float64."""
    return np.stack(
        [derivative_rep(group.plane_matrix(group.inverse(h)), order) for h in group.elements]
    )


def inverse_permutations(rep: PermutationRep | FieldRep) -> np.ndarray:
    """``q[h, x] = p_h^-1(x)`` (the point sent to x by h): (|G|, dim) int64."""
    perms = np.stack([rep.permutation(h) for h in rep.group.elements])
    inv = np.empty_like(perms)
    rows = np.arange(perms.shape[0])[:, None]
    inv[rows, perms] = np.arange(perms.shape[1])[None, :]
    return inv


@dataclass(frozen=True)
class RegularInputBlock:
    """Regular input: free C_e (do x n_ops); ``C[a, h] = C_e[gather[a, h]] P(h)^-1``."""

    out_dim: int
    in_dim: int
    gather: np.ndarray  # (do, |G|) int64: p_h^-1(a)


@dataclass(frozen=True)
class RegularOutputBlock:
    """Regular output: free row C[e] (di x n_ops); ``C[g, b] = C[e, gather[g, b]] P(g)^-1``."""

    out_dim: int
    in_dim: int
    gather: np.ndarray  # (|G|, di) int64: p_g^-1(b)


@dataclass(frozen=True)
class GenericBlock:
    """Explicit basis: ``basis`` is (n_basis, do, di, n_ops) float64 (n_basis may be 0)."""

    out_dim: int
    in_dim: int
    basis: np.ndarray


Block = RegularInputBlock | RegularOutputBlock | GenericBlock


def canonical_basis(null: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """A basis of span(null) that depends on the subspace only.

    ``null`` is (U, n) with orthonormal columns. Pivoted Gram-Schmidt runs over the columns
    of the projector Q Q^T (unique for the subspace), taking at each step the column of
    largest remaining norm, ties going to the lowest index. Returns (n, U), unit rows.
    """
    if null.shape[1] == 0:
        return np.zeros((0, null.shape[0]))
    proj = null @ null.T
    chosen: list[np.ndarray] = []
    residual = proj.copy()
    for _ in range(null.shape[1]):
        norms = np.linalg.norm(residual, axis=0)
        best = norms.max()
        j = int(np.flatnonzero(norms >= best * (1 - 1e-8))[0])
        v = residual[:, j] / norms[j]
        chosen.append(v)
        residual = residual - np.outer(v, v @ residual)
    out = np.stack(chosen)
    out[np.abs(out) < tol] = 0.0
    # fix the sign: first non-zero entry positive
    for row in out:
        nz = np.flatnonzero(row)
        if nz.size and row[nz[0]] < 0:
            row *= -1
    return out


def solve_generic(
    group: Group, rep_out: PermutationRep, rep_in: PermutationRep, order: int
) -> np.ndarray:
    """Solutions of (*) for all generators by SVD: (n_basis, do, di, n_ops) float64."""
    do, di = rep_out.dim, rep_in.dim
    n_ops = derivative_rep(np.eye(2), order).shape[0]
    n = di * n_ops
    rows = []
    for g in group.generators:
        M = np.kron(rep_in.matrix(g), derivative_rep(group.plane_matrix(g), order))
        # vec_row(rho_out C - C M) = (rho_out (x) I_n - I_do (x) M^T) vec_row(C)
        rows.append(np.kron(rep_out.matrix(g), np.eye(n)) - np.kron(np.eye(do), M.T))
    system = np.concatenate(rows, axis=0)
    _, sing, vt = np.linalg.svd(system)
    rank = int((sing > 1e-9 * max(1.0, sing.max(initial=0.0))).sum())
    null = vt[rank:].T
    basis = canonical_basis(null)
    return basis.reshape(-1, do, di, n_ops)


@cache
def coefficient_block(rep_out: PermutationRep, rep_in: PermutationRep, order: int) -> Block:
    """The equivariant coefficient space between two summands, in its cheapest form."""
    group = rep_in.group
    if rep_in.group != rep_out.group:
        raise ValueError(f"groups differ: {rep_out.group.name} vs {rep_in.group.name}")
    if rep_in.is_regular:
        return RegularInputBlock(rep_out.dim, rep_in.dim, inverse_permutations(rep_out).T.copy())
    if rep_out.is_regular:
        return RegularOutputBlock(rep_out.dim, rep_in.dim, inverse_permutations(rep_in))
    return GenericBlock(rep_out.dim, rep_in.dim, solve_generic(group, rep_out, rep_in, order))


def block_dimension(block: Block, n_ops: int) -> int:
    """Number of free parameters of one block (per pair of fields)."""
    if isinstance(block, RegularInputBlock):
        return block.out_dim * n_ops
    if isinstance(block, RegularOutputBlock):
        return block.in_dim * n_ops
    return block.basis.shape[0]


def clear_memory_cache() -> None:
    """Forget the in-process derivative representations and coefficient blocks."""
    inverse_derivative_reps.cache_clear()
    coefficient_block.cache_clear()
