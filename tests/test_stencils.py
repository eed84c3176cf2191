"""Tests for epdo.zoo.stencils: operator indexing, exactness, orientation and caching.

Convention under test: entry S[a, b] sits at the physical offset (x, y) = (b − c, −(a − c))
(y up) and Σ S[a, b] f(p + offset) ≈ ∂x^α ∂y^β f(p).
"""

from __future__ import annotations

from math import factorial

import numpy as np
import pytest
from numpy.polynomial import hermite

from epdo.zoo import stencils as st

SIZE = 5
ORDER = 4
CENTRE = (0.3, -0.7)  # non-zero and asymmetric, to catch sign/orientation bugs


@pytest.fixture(scope="module")
def fresh() -> dict[str, np.ndarray]:
    """One fresh derivation per method (gauss and rbffd take ~10 s each)."""
    return {m: st.derive_stencils(m, ORDER, SIZE) for m in st.METHODS}


def monomial_derivative(p: int, q: int, alpha: int, beta: int, x0: float, y0: float) -> float:
    """∂x^α ∂y^β (x^p y^q) evaluated at (x0, y0)."""
    if alpha > p or beta > q:
        return 0.0
    cx = factorial(p) // factorial(p - alpha)
    cy = factorial(q) // factorial(q - beta)
    return cx * x0 ** (p - alpha) * cy * y0 ** (q - beta)


def poly_exactness_errors(stencil_set: np.ndarray, degree: int | None = None) -> np.ndarray:
    """|stencil applied to x^p y^q − exact derivative| over operators and p + q ≤ degree
    (4 when None; the operator's own order k when ``degree == -1``)."""
    x, y = st.stencil_offsets(SIZE)
    x0, y0 = CENTRE
    errors = []
    for k, i in st.operator_list(ORDER):
        s = stencil_set[st.operator_index(k, i)]
        top = 4 if degree is None else (k if degree == -1 else degree)
        for p in range(top + 1):
            for q in range(top + 1 - p):
                samples = (x0 + x) ** p * (y0 + y) ** q
                exact = monomial_derivative(p, q, k - i, i, x0, y0)
                errors.append(abs(np.sum(s * samples) - exact))
    return np.array(errors)


# --------------------------------------------------------------------------- operators


def test_operator_indexing() -> None:
    assert [st.n_operators(k) for k in range(5)] == [1, 3, 6, 10, 15]
    ops = st.operator_list(4)
    assert len(ops) == 15
    assert ops[:6] == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert [st.operator_index(k, i) for k, i in ops] == list(range(15))
    names = [st.operator_name(k, i) for k, i in ops]
    assert names[:6] == ["1", "∂x", "∂y", "∂x²", "∂x∂y", "∂y²"]
    assert names[7] == "∂x²∂y" and names[14] == "∂y⁴"
    assert len(set(names)) == 15
    with pytest.raises(ValueError):
        st.operator_index(1, 2)


def test_offsets_convention() -> None:
    x, y = st.stencil_offsets(5)
    assert (x[0, 0], y[0, 0]) == (-2.0, 2.0)  # top-left is up-left
    assert (x[4, 3], y[4, 3]) == (1.0, -2.0)
    assert (x[2, 2], y[2, 2]) == (0.0, 0.0)


@pytest.mark.parametrize(
    "args",
    [
        ("nope", 4, 5),
        ("FD", 4, 5),
        ("fd", 5, 5),
        ("fd", -1, 5),
        ("fd", 4, 4),
        ("fd", 4, 3),
        ("gauss", 4, 6),
        ("gauss", 2.0, 5),
        ("rbffd", 2, 3),
    ],
)
def test_invalid_arguments(args: tuple) -> None:
    with pytest.raises(ValueError):
        st.stencils(*args)
    with pytest.raises(ValueError):
        st.derive_stencils(*args)


# --------------------------------------------------------------------------- fd


def test_fd_1d_weights() -> None:
    np.testing.assert_array_equal(st.fd_weights_1d(1, 5) * 12, [1, -8, 0, 8, -1])
    np.testing.assert_array_equal(st.fd_weights_1d(2, 5) * 12, [-1, 16, -30, 16, -1])
    np.testing.assert_array_equal(st.fd_weights_1d(4, 5), [1, -4, 6, -4, 1])
    np.testing.assert_array_equal(st.fd_weights_1d(0, 5), [0, 0, 1, 0, 0])


# The papers' 1-D central differences, as listed in both public codes (orders 0..4).
NARROW = {
    0: [0, 0, 1, 0, 0],
    1: [0, -0.5, 0, 0.5, 0],
    2: [0, 1, -2, 1, 0],
    3: [-0.5, 1, 0, -1, 0.5],
    4: [1, -4, 6, -4, 1],
}


def test_fd_is_the_papers_narrow_central_differences() -> None:
    """fd: S(∂x^α∂y^β)[a, b] = n_α(x = b − c) n_β(y = c − a) with the narrowest stencils."""
    s = st.stencils("fd", ORDER, SIZE)
    for k, i in st.operator_list(ORDER):
        expected = np.outer(np.array(NARROW[i])[::-1], NARROW[k - i])
        np.testing.assert_array_equal(s[st.operator_index(k, i)], expected)
    # the four-corner ∂x∂y on 3x3, and ∂x on three points
    dxy = s[st.operator_index(2, 1)]
    np.testing.assert_array_equal(dxy[1:4, 1:4], [[-0.25, 0, 0.25], [0, 0, 0], [0.25, 0, -0.25]])
    assert np.count_nonzero(s[st.operator_index(1, 0)]) == 2
    for deriv in range(5):
        np.testing.assert_array_equal(
            np.pad(st.narrow_fd_weights_1d(deriv), (5 - 2 * ((deriv + 1) // 2) - 1) // 2),
            NARROW[deriv],
        )


def test_fd_exact_on_polynomials_of_the_operators_order(fresh: dict[str, np.ndarray]) -> None:
    s = st.stencils("fd", ORDER, SIZE)
    np.testing.assert_array_equal(s, fresh["fd"])
    assert poly_exactness_errors(s, degree=-1).max() < 1e-12


def test_fd_wide_exact_on_polynomials(fresh: dict[str, np.ndarray]) -> None:
    s = st.stencils("fd_wide", ORDER, SIZE)
    assert s.shape == (15, 5, 5) and s.dtype == np.float64
    np.testing.assert_array_equal(s, fresh["fd_wide"])
    assert poly_exactness_errors(s).max() < 1e-12


def test_fd_dy_orientation() -> None:
    """∂y weighs the top row (y = +2) as −1/12 in fd_wide and the row above (y = +1) as +½
    in fd."""
    wide = st.stencils("fd_wide")[st.operator_index(1, 1)]
    np.testing.assert_allclose(wide[:, 2] * 12, [-1, 8, 0, -8, 1], atol=1e-15)
    np.testing.assert_array_equal(np.delete(wide, 2, axis=1), 0)
    narrow = st.stencils("fd")[st.operator_index(1, 1)]
    np.testing.assert_array_equal(narrow[:, 2], [0, 0.5, 0, -0.5, 0])
    np.testing.assert_array_equal(np.delete(narrow, 2, axis=1), 0)


@pytest.mark.parametrize("method", ["fd", "fd_wide"])
def test_fd_lower_order_is_prefix(method: str) -> None:
    full = st.stencils(method, 4, 5)
    for order in range(4):
        got = st.stencils(method, order, 5)
        np.testing.assert_array_equal(got, full[: st.n_operators(order)])


# --------------------------------------------------------------------------- gauss


def gaussian_derivative_1d(n: int, t: np.ndarray, eps: float) -> np.ndarray:
    """d^n/dt^n exp(−ε²t²) = (−ε)^n H_n(εt) exp(−ε²t²), physicists' Hermite H_n."""
    coeffs = np.zeros(n + 1)
    coeffs[n] = 1.0
    return (-eps) ** n * hermite.hermval(eps * t, coeffs) * np.exp(-((eps * t) ** 2))


def test_gauss_matches_hermite_formula(fresh: dict[str, np.ndarray]) -> None:
    x, y = st.stencil_offsets(SIZE)
    eps = st.GAUSS_EPS
    assert eps == 0.99
    for k, i in st.operator_list(ORDER):
        alpha, beta = k - i, i
        phi_deriv = gaussian_derivative_1d(alpha, x, eps) * gaussian_derivative_1d(beta, y, eps)
        expected = (-1.0) ** k * phi_deriv
        np.testing.assert_allclose(
            fresh["gauss"][st.operator_index(k, i)], expected, rtol=0, atol=1e-12
        )


def test_gauss_dx_points_right(fresh: dict[str, np.ndarray]) -> None:
    """With the (−1)^k sign, ∂x weighs the right side positively, ∂y the top side."""
    dx = fresh["gauss"][st.operator_index(1, 0)]
    dy = fresh["gauss"][st.operator_index(1, 1)]
    assert dx[2, 3] > 0 > dx[2, 1]
    assert dy[1, 2] > 0 > dy[3, 2]
    # applied to f = x − 2y the smoothed derivatives are proportional to (1, −2)
    x, y = st.stencil_offsets(SIZE)
    f = x - 2 * y
    gx, gy = np.sum(dx * f), np.sum(dy * f)
    assert gx > 0 and gy == pytest.approx(-2 * gx, rel=1e-12)


# --------------------------------------------------------------------------- rbffd


def phs6(r: np.ndarray, eps: float) -> np.ndarray:
    """(εr)⁶ log(εr) with the limit 0 at r = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        er = eps * r
        return np.where(r > 0, er**6 * np.log(np.where(r > 0, er, 1.0)), 0.0)


def independent_rbffd(alpha: int, beta: int) -> np.ndarray:
    """Solve [[Φ, P], [Pᵀ, 0]] [w; λ] = [Lφ; Lp] with numpy, φ = (εr)⁶ log(εr), ε = 0.5, and
    P the monomials of degree ≤ α + β (the operator's order)."""
    from rbf.basis import get_rbf

    eps = st.RBFFD_EPS
    x, y = st.stencil_offsets(SIZE)
    xs, ys = x.ravel(), y.ravel()
    n = xs.size
    r = np.hypot(xs[:, None] - xs[None, :], ys[:, None] - ys[None, :])
    big_phi = phs6(r, eps)
    powers = [(d - q, q) for d in range(alpha + beta + 1) for q in range(d + 1)]
    big_p = np.stack([xs**p * ys**q for p, q in powers], axis=1)
    m = len(powers)
    lhs = np.block([[big_phi, big_p], [big_p.T, np.zeros((m, m))]])
    # L applied to φ(· − s_j) at the centre 0
    nodes = np.stack([xs, ys], axis=1)
    l_phi = get_rbf("phs6")(np.zeros((1, 2)), nodes, eps=eps, diff=(alpha, beta))[0]
    l_p = np.array(
        [factorial(p) * factorial(q) if (p, q) == (alpha, beta) else 0.0 for p, q in powers]
    )
    sol = np.linalg.solve(lhs, np.concatenate([l_phi, l_p]))
    return sol[:n].reshape(SIZE, SIZE)


def test_rbffd_exact_on_polynomials_of_the_operators_order(
    fresh: dict[str, np.ndarray],
) -> None:
    assert poly_exactness_errors(fresh["rbffd"], degree=-1).max() < 1e-9


def test_rbffd_matches_independent_solve(fresh: dict[str, np.ndarray]) -> None:
    assert st.RBFFD_EPS == 0.5 and st.RBFFD_PHI == "phs6"
    for k, i in st.operator_list(ORDER):
        expected = independent_rbffd(k - i, i)
        np.testing.assert_allclose(
            fresh["rbffd"][st.operator_index(k, i)], expected, rtol=0, atol=1e-9
        )


# Frobenius norms of the 15 stencils of the Neural ePDO code (huzh1peng/Neural-ePDOs-reproduce,
# bases.make_rbffd / make_gauss, run with rbf 2024.x and reordered to ∂x^(k−i)∂y^i), which
# computes them in float32. Both sets equal epdo's entry by entry to 5e-7 (gauss up to the
# sign (−1)^k of odd orders, which that code leaves out and which the coefficients absorb).
REFERENCE_NORMS = {
    "rbffd": [1.0, 1.123652, 1.123652, 4.351655, 1.447394, 4.351655, 3.128942, 5.167632,
              5.167632, 3.128942, 34.424273, 4.108239, 24.300501, 4.108239, 34.424273],
    "gauss": [1.282447, 1.184665, 1.184665, 2.52759, 1.094339, 2.52759, 2.67621, 2.334871,
              2.334871, 2.67621, 17.4345, 2.472159, 4.981658, 2.472159, 17.4345],
}


@pytest.mark.parametrize("method", ["rbffd", "gauss"])
def test_stencil_norms_match_the_reference_code(method: str) -> None:
    norms = np.linalg.norm(st.stencils(method).reshape(15, -1), axis=1)
    np.testing.assert_allclose(norms, REFERENCE_NORMS[method], rtol=2e-6)


def test_rbffd_and_fd_agree_on_first_derivative_signs(fresh: dict[str, np.ndarray]) -> None:
    """Same orientation as fd: applied to f = x − 2y both give (∂x, ∂y) = (1, −2)."""
    x, y = st.stencil_offsets(SIZE)
    f = x - 2 * y
    for method in ("fd", "rbffd"):
        s = fresh[method]
        assert np.sum(s[1] * f) == pytest.approx(1.0, abs=1e-10)
        assert np.sum(s[2] * f) == pytest.approx(-2.0, abs=1e-10)


# --------------------------------------------------------------------------- symmetry


def test_rot90_is_counter_clockwise() -> None:
    """np.rot90 maps S to S∘R⁻¹ with R the +90° rotation (x, y) → (−y, x), y up."""
    x, y = st.stencil_offsets(SIZE)
    rng = np.random.default_rng(0)
    s = rng.normal(size=(SIZE, SIZE))
    rotated = np.rot90(s)
    points = zip(x.ravel(), y.ravel(), s.ravel(), strict=True)
    lookup = {(float(xv), float(yv)): v for xv, yv, v in points}
    for a in range(SIZE):
        for b in range(SIZE):
            ox, oy = x[a, b], y[a, b]
            assert rotated[a, b] == lookup[(oy, -ox)]  # S(R⁻¹ o), R⁻¹(x, y) = (y, −x)


@pytest.mark.parametrize("method", st.METHODS)
def test_rotation_by_90_degrees(method: str, fresh: dict[str, np.ndarray]) -> None:
    """Rotating the ∂x^α∂y^β stencil by +90° gives (R e_x·∇)^α (R e_y·∇)^β = ∂y^α (−∂x)^β.

    So rot90(S_(α,β)) = (−1)^β S_(β,α); in particular rot90(S_∂x) = S_∂y and
    rot90(S_∂x²) = S_∂y².
    """
    s = fresh[method]
    scale = np.abs(s).max()
    dx, dy = s[st.operator_index(1, 0)], s[st.operator_index(1, 1)]
    np.testing.assert_allclose(np.rot90(dx), dy, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(np.rot90(dy), -dx, rtol=0, atol=1e-12 * scale)
    dxx, dyy = s[st.operator_index(2, 0)], s[st.operator_index(2, 2)]
    np.testing.assert_allclose(np.rot90(dxx), dyy, rtol=0, atol=1e-12 * scale)
    for k, i in st.operator_list(ORDER):
        alpha, beta = k - i, i
        rotated = np.rot90(s[st.operator_index(k, i)])
        target = (-1.0) ** beta * s[st.operator_index(k, alpha)]  # (k, alpha) ↔ ∂x^β ∂y^α
        np.testing.assert_allclose(rotated, target, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("method", st.METHODS)
def test_reflections(method: str, fresh: dict[str, np.ndarray]) -> None:
    """y → −y (np.flipud) multiplies ∂x^α∂y^β by (−1)^β; x → −x (np.fliplr) by (−1)^α."""
    s = fresh[method]
    scale = np.abs(s).max()
    for k, i in st.operator_list(ORDER):
        alpha, beta = k - i, i
        op = s[st.operator_index(k, i)]
        np.testing.assert_allclose(np.flipud(op), (-1.0) ** beta * op, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(np.fliplr(op), (-1.0) ** alpha * op, rtol=0, atol=1e-12 * scale)


# --------------------------------------------------------------------------- caching


@pytest.mark.parametrize("method", ["gauss", "rbffd"])
def test_cache_equals_fresh_and_hits_disk(
    method: str, fresh: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    st.clear_memory_cache()
    cached = st.stencils(method, ORDER, SIZE)
    assert cached.shape == (15, 5, 5) and cached.dtype == np.float64
    np.testing.assert_allclose(cached, fresh[method], rtol=0, atol=1e-12)

    def no_derivation(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("derivation should not run: the disk cache must hit")

    monkeypatch.setattr(st, "derive_stencils", no_derivation)
    st.clear_memory_cache()
    again = st.stencils(method, ORDER, SIZE)
    np.testing.assert_array_equal(again, cached)
    matrix = st.stencil_matrix(method, ORDER, SIZE)
    assert matrix.shape == (15, 25)
    np.testing.assert_array_equal(matrix, cached.reshape(15, 25))


def test_memory_cache_returns_copies() -> None:
    a = st.stencils("fd")
    a[:] = 0.0
    b = st.stencils("fd")
    assert np.abs(b).max() > 0
