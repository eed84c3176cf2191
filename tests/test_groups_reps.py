"""Groups, permutation representations, derivative representations and bases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from epdo.zoo.bases import (
    GenericBlock,
    RegularInputBlock,
    RegularOutputBlock,
    coefficient_block,
    solve_generic,
)
from epdo.zoo.derivatives import derivative_matrix, derivative_rep
from epdo.zoo.groups import Group, parse_group
from epdo.zoo.reps import FeatureType, parse_field_type, parse_rep

GROUPS = [Group(1), Group(4), Group(16), Group(3, True), Group(8, True)]


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_group_axioms_and_plane_action(group: Group) -> None:
    els = group.elements
    assert len(els) == group.order
    for a, b in itertools.product(els, els):
        ab = group.compose(a, b)
        assert np.allclose(group.plane_matrix(ab), group.plane_matrix(a) @ group.plane_matrix(b))
    for a in els:
        assert group.compose(a, group.inverse(a)) == group.identity


def test_parse_group() -> None:
    assert parse_group("D16") == Group(16, True)
    assert parse_group("C8").order == 8
    for bad in ["E4", "C0", "D", "c4x"]:
        with pytest.raises(ValueError, match="C<N> or D<N>"):
            parse_group(bad)


def test_grid_exact_elements() -> None:
    assert Group(16).grid_exact_elements == [(0, 0), (4, 0), (8, 0), (12, 0)]
    assert len(Group(8, True).grid_exact_elements) == 8
    assert Group(6).grid_exact_elements == [(0, 0), (3, 0)]


@pytest.mark.parametrize("group", GROUPS, ids=str)
@pytest.mark.parametrize("name", ["trivial", "regular", "quotient1"])
def test_permutation_reps_are_homomorphisms(group: Group, name: str) -> None:
    rep = parse_rep(group, name)
    for a, b in itertools.product(group.elements, group.elements):
        assert np.array_equal(rep.matrix(group.compose(a, b)), rep.matrix(a) @ rep.matrix(b))


def test_quotient_dims_and_errors() -> None:
    assert parse_rep(Group(16), "quotient4").dim == 4
    assert parse_rep(Group(16, True), "quotient4").dim == 8
    assert parse_field_type(Group(16), ["regular", "quotient4"]).dim == 20
    with pytest.raises(ValueError, match="M dividing 16"):
        parse_rep(Group(16), "quotient3")
    with pytest.raises(ValueError, match="unknown representation"):
        parse_rep(Group(16), "irrep1")
    q = parse_rep(Group(12, True), "quotient3")
    for a, b in itertools.product(q.group.elements, q.group.elements):
        assert np.array_equal(q.matrix(q.group.compose(a, b)), q.matrix(a) @ q.matrix(b))


def test_restriction_of_d_n_regular_is_two_c_n_regular() -> None:
    D = Group(8, True)
    feat = FeatureType(parse_field_type(D, "regular"), 3)
    res = feat.restrict(D.rotation_subgroup())
    assert res.count == 6 and res.field.name == "regular" and res.channels == feat.channels
    for g in res.group.elements:  # channel permutations agree on the rotations
        assert np.array_equal(feat.permutation(g), res.permutation(g))


@pytest.mark.parametrize("k", range(5))
def test_derivative_matrix_transforms_derivatives_of_polynomials(k: int) -> None:
    """D_k (f o A^-1)(p) = P_k(A) D_k f(A^-1 p), checked on random cubic-quartic polys."""
    rng = np.random.default_rng(k)
    coeffs = rng.normal(size=(5, 5)) * (np.add.outer(np.arange(5), np.arange(5)) <= 4)
    theta = 0.7
    A = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag(
        [1, -1]
    )
    Ainv = A.T

    def deriv(c: np.ndarray, a: int, b: int, x: float, y: float) -> float:
        return float(
            np.polynomial.polynomial.polyval2d(
                x, y, np.polynomial.polynomial.polyder(
                    np.polynomial.polynomial.polyder(c, a, axis=0), b, axis=1
                )
            )
        )

    # f'(p) = f(A^-1 p) is again a polynomial; get its coefficients by a least-squares fit.
    pts = rng.normal(size=(60, 2))
    src = pts @ Ainv.T
    vals = np.polynomial.polynomial.polyval2d(src[:, 0], src[:, 1], coeffs)
    V = np.polynomial.polynomial.polyvander2d(pts[:, 0], pts[:, 1], [4, 4])
    mask = (np.add.outer(np.arange(5), np.arange(5)) <= 4).reshape(-1)
    sol = np.linalg.lstsq(V[:, mask], vals, rcond=None)[0]
    coeffs2 = np.zeros(25)
    coeffs2[mask] = sol
    coeffs2 = coeffs2.reshape(5, 5)
    p = np.array([0.3, -0.4])
    q = Ainv @ p
    lhs = [deriv(coeffs2, k - i, i, *p) for i in range(k + 1)]
    rhs = derivative_matrix(A, k) @ [deriv(coeffs, k - i, i, *q) for i in range(k + 1)]
    assert np.allclose(lhs, rhs, atol=1e-8)


def _full_coefficients(block, rep_out, rep_in, order, rng) -> np.ndarray:
    """A random element of the block's space as C[a, b, op] (do, di, n_ops)."""
    group = rep_in.group
    n_ops = derivative_rep(np.eye(2), order).shape[0]
    Pinv = [derivative_rep(group.plane_matrix(group.inverse(h)), order) for h in group.elements]
    if isinstance(block, RegularInputBlock):
        ce = rng.normal(size=(rep_out.dim, n_ops))
        C = np.stack([ce[block.gather[:, h]] @ Pinv[h] for h in range(group.order)], axis=1)
        return C
    if isinstance(block, RegularOutputBlock):
        row = rng.normal(size=(rep_in.dim, n_ops))
        return np.stack([row[block.gather[g]] @ Pinv[g] for g in range(group.order)], axis=0)
    return np.einsum("n,nabk->abk", rng.normal(size=block.basis.shape[0]), block.basis)


@pytest.mark.parametrize(
    "group,out_name,in_name",
    [
        (Group(4), "regular", "regular"),
        (Group(4), "trivial", "regular"),
        (Group(4), "regular", "trivial"),
        (Group(8), "quotient2", "quotient4"),
        (Group(3, True), "regular", "regular"),
        (Group(4, True), "quotient2", "trivial"),
        (Group(4, True), "trivial", "regular"),
    ],
    ids=str,
)
@pytest.mark.parametrize("order", [0, 2, 4])
def test_closed_form_blocks_solve_the_constraint_completely(group, out_name, in_name, order):
    """Every block element satisfies rho_out(g) C = C (rho_in(g) x P(g)) for ALL g, and the
    closed forms have exactly the dimension of the SVD solution space."""
    rep_out, rep_in = parse_rep(group, out_name), parse_rep(group, in_name)
    block = coefficient_block(rep_out, rep_in, order)
    rng = np.random.default_rng(0)
    C = _full_coefficients(block, rep_out, rep_in, order, rng)
    do, di, n_ops = C.shape
    Cm = C.reshape(do, di * n_ops)
    for g in group.elements:
        M = np.kron(rep_in.matrix(g), derivative_rep(group.plane_matrix(g), order))
        assert np.allclose(rep_out.matrix(g) @ Cm, Cm @ M, atol=1e-10)
    generic = solve_generic(group, rep_out, rep_in, order)
    if isinstance(block, GenericBlock):
        assert generic.shape == block.basis.shape
    elif isinstance(block, RegularInputBlock):
        assert generic.shape[0] == rep_out.dim * n_ops
    else:
        assert generic.shape[0] == rep_in.dim * n_ops


def test_generic_basis_is_canonical() -> None:
    """The basis depends on the solution space only, not on the SVD's rotation of it."""
    from epdo.zoo.bases import canonical_basis

    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(12, 4)))
    mix, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert np.allclose(canonical_basis(q), canonical_basis(q @ mix), atol=1e-10)
