"""The PDO-eConvs CIFAR kernels (``coefficients: h9``) against that code's formulas.

The code (shenzy08/PDO-eConvs, cifar.py) learns a 3x3 array W per (output field, input
channel), reads beta = vec(W) F3^-1 through the central 3x3 of nine fd stencils, rotates
H(u, v) by t_k = 2 pi k / p + pi / 8 with its matrices ``tran_to_partial_coef`` and
discretises with its 15 ``partial_dict`` stencils (epdo's ``fd``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from epdo.zoo import stencils as st
from epdo.zoo.groups import parse_group
from epdo.zoo.layers.conv import PDOConv
from epdo.zoo.layers.h9 import H9_ANGLE, h9_operators, h9_readout, h9_transform
from epdo.zoo.reps import FeatureType, parse_field_type
from epdo.zoo.transforms import transform_features

# Entries of the code's tran_to_partial_coef at t = 2 pi / 8 + pi / 8 (p = 8, k = 1):
# row 6 (u²v) on ∂x³..∂y³, row 8 (u²v²) on the fourth order, row 4 (uv) on the second;
# and at t = 2 pi / 6 + pi / 8 (p = 6, k = 1): row 7 (uv²) on the third order.
REFERENCE_TRAN = [
    (2 * math.pi / 8 + math.pi / 8, 6, slice(6, 10),
     [-0.135299025037, -0.597238791292, -0.517982457402, 0.326640741219]),
    (2 * math.pi / 8 + math.pi / 8, 8, slice(10, 15), [0.125, 0.5, 0.25, -0.5, 0.125]),
    (2 * math.pi / 8 + math.pi / 8, 4, slice(3, 6),
     [-0.353553390593, -0.707106781187, 0.353553390593]),
    (2 * math.pi / 6 + math.pi / 8, 7, slice(6, 10),
     [0.128302406146, 0.940770864727, -0.254381026219, 0.016891332216]),
]


@pytest.mark.parametrize("angle, row, cols, values", REFERENCE_TRAN)
def test_rotation_matrices_match_the_code(angle, row, cols, values) -> None:
    np.testing.assert_allclose(h9_transform(angle)[row, cols], values, atol=1e-11)


def test_readout_uses_the_nine_3x3_fd_stencils() -> None:
    assert h9_operators() == [0, 1, 2, 3, 4, 5, 7, 8, 12]
    fd3 = st.stencils("fd", 4, 5)[h9_operators(), 1:4, 1:4].reshape(9, 9)
    np.testing.assert_allclose(h9_readout() @ fd3, np.eye(9), atol=1e-12)
    # the nine 3x3 operators hold the whole 5x5 stencil inside the centre
    outside = st.stencils("fd", 4, 5)[h9_operators()].copy()
    outside[:, 1:4, 1:4] = 0
    assert not outside.any()


def _layer(p: int, source: str, fields_in: int = 1, fields_out: int = 1) -> PDOConv:
    group = parse_group(f"C{p}")
    fin = FeatureType(parse_field_type(group, source), fields_in)
    fout = FeatureType(parse_field_type(group, "regular"), fields_out)
    return PDOConv(fin, fout, 4, "fd", coefficients="h9").double()


def _code_kernel(beta: np.ndarray, p: int, k: int) -> np.ndarray:
    """The code's orientation-k kernel of coefficients beta: (beta T(t_k)) partial_dict."""
    angle = 2 * math.pi * k / p + H9_ANGLE
    return (beta @ h9_transform(angle) @ st.stencil_matrix("fd", 4, 5)).reshape(5, 5)


@pytest.mark.parametrize("p", [6, 8])
def test_stem_kernels_are_the_codes_rotated_family(p: int) -> None:
    """open_conv2d: orientation k of the stem is H rotated to t_k (same channel order)."""
    torch.manual_seed(0)
    layer = _layer(p, "trivial")
    w = layer.expansion.weight.detach().numpy().reshape(9)
    beta = w @ h9_readout()
    kernel = layer.kernel().detach().numpy()[:, 0]
    for k in range(p):
        np.testing.assert_allclose(kernel[k], _code_kernel(beta, p, k), atol=1e-12)


def test_group_conv_kernels_follow_the_codes_roll() -> None:
    """g_conv2d: K[out k, in j] = (H_{(j - k) mod p} rotated to t_k)."""
    p = 8
    torch.manual_seed(1)
    layer = _layer(p, "regular")
    w = layer.expansion.weight.detach().numpy()[0, 0].reshape(p, 9)  # one 3x3 per input j
    kernel = layer.kernel().detach().numpy()
    for k in range(p):
        for j in range(p):
            beta = w[(j - k) % p] @ h9_readout()
            np.testing.assert_allclose(kernel[k, j], _code_kernel(beta, p, k), atol=1e-12)


def test_family_spans_exactly_the_rotated_h_and_nothing_more() -> None:
    """The orientation-e kernels of all W form a 9-dimensional space: the span of the nine
    terms of H rotated to pi/8, discretised."""
    layer = _layer(8, "trivial")
    kernels = []
    for i in range(9):
        with torch.no_grad():
            layer.expansion.weight.zero_()
            layer.expansion.weight.view(-1)[i] = 1.0
        kernels.append(layer.kernel().detach().numpy()[0, 0].reshape(-1))
    ours = np.stack(kernels)
    family = h9_transform(H9_ANGLE) @ st.stencil_matrix("fd", 4, 5)
    assert np.linalg.matrix_rank(ours) == 9
    assert np.linalg.matrix_rank(np.concatenate([ours, family])) == 9


def test_h9_layer_is_equivariant_under_90_degree_rotations() -> None:
    torch.manual_seed(2)
    layer = _layer(8, "regular", 2, 3)
    group = layer.in_type.group
    x = torch.randn(2, layer.in_type.channels, 11, 11, dtype=torch.float64)
    for g in group.grid_exact_elements[1:]:
        gx = transform_features(x, layer.in_type, g)
        expected = transform_features(layer(x), layer.out_type, g)
        torch.testing.assert_close(layer(gx), expected, atol=1e-10, rtol=0)


def test_init_is_the_codes_variance_scaling() -> None:
    torch.manual_seed(3)
    layer = _layer(8, "regular", 16, 16)
    w = layer.expansion.weight.detach()
    std = math.sqrt(2.6 / (9 * 16 * 8))
    assert w.abs().max() <= 2 * std + 1e-12  # truncated at two standard deviations
    assert float(w.std()) == pytest.approx(std * 0.8796, rel=0.05)  # truncation shrinks std
