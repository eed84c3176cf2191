"""Exact equivariance of every layer type, in float64, for the grid-exact group elements.

For a layer L: in_type -> out_type and a grid-exact g, L(g . x) = g . L(x), where g acts on
a feature map by moving channel c to p_g(c) and transforming space (transforms module).
"""

from __future__ import annotations

import pytest
import torch

from epdo.zoo.groups import parse_group
from epdo.zoo.layers.conv import Conv1x1, PDOConv
from epdo.zoo.layers.head import ClassifierHead
from epdo.zoo.layers.neural_epdo import NeuralEPDO
from epdo.zoo.layers.norms import FieldBatchNorm, FieldNorm
from epdo.zoo.layers.pooling import GroupPool, Restrict, SpatialPool
from epdo.zoo.layers.typed import FieldTypeError
from epdo.zoo.reps import FeatureType, parse_field_type
from epdo.zoo.transforms import transform_features

TOL = 1e-9


def feat(group: str, field, count: int) -> FeatureType:
    return FeatureType(parse_field_type(parse_group(group), field), count)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


def assert_equivariant(layer, fin: FeatureType, fout: FeatureType, size: int = 11) -> None:
    torch.manual_seed(0)
    layer = layer.double()
    x = torch.randn(2, fin.channels, size, size, dtype=torch.float64)
    y = layer(x)
    assert y.std() > 1e-3, "vacuous: the layer output is (nearly) constant"
    elements = fin.group.grid_exact_elements
    assert len(elements) > 1
    for g in elements:
        err = rel_err(layer(transform_features(x, fin, g)), transform_features(y, fout, g))
        assert err < TOL, f"{type(layer).__name__} at {fin.group.describe(g)}: {err:.2e}"


def assert_not_equivariant_under_wrong_permutation(layer, fin, fout) -> None:
    """Sanity: the check above can fail (channel permutation omitted)."""
    layer = layer.double()
    x = torch.randn(2, fin.channels, 11, 11, dtype=torch.float64)
    g = fin.group.grid_exact_elements[1]
    from epdo.zoo.transforms import transform_grid_exact

    moved = layer(transform_grid_exact(x, fin.group, g))
    assert rel_err(moved, transform_features(layer(x), fout, g)) > 1e-3


CASES = [
    ("C16", "trivial", "regular"),
    ("C16", "regular", "regular"),
    ("C16", ["regular", "quotient4"], ["regular", "quotient4"]),
    ("C16", "regular", "trivial"),
    ("D16", "regular", "regular"),
    ("D8", "trivial", "quotient2"),
    ("C8", "quotient4", "quotient2"),
]


@pytest.mark.parametrize("method", ["fd", "gauss", "rbffd"])
@pytest.mark.parametrize("group,tin,tout", CASES, ids=str)
def test_pdo_conv_equivariant(method, group, tin, tout) -> None:
    fin, fout = feat(group, tin, 2), feat(group, tout, 3)
    assert_equivariant(PDOConv(fin, fout, order=4, discretization=method), fin, fout)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_pdo_conv_lower_orders(order) -> None:
    fin, fout = feat("D8", "regular", 2), feat("D8", "regular", 2)
    assert_equivariant(PDOConv(fin, fout, order=order, discretization="gauss"), fin, fout)


def test_pdo_conv_stride_on_odd_size() -> None:
    fin, fout = feat("C8", "regular", 2), feat("C8", "regular", 2)
    layer = PDOConv(fin, fout, 4, "fd", stride=2, bias=True)
    assert_equivariant(layer, fin, fout, size=13)
    assert layer(torch.randn(1, fin.channels, 13, 13).double()).shape[-1] == 7


@pytest.mark.parametrize("group,tin,tout", CASES, ids=str)
def test_conv1x1_equivariant(group, tin, tout) -> None:
    fin, fout = feat(group, tin, 3), feat(group, tout, 2)
    assert_equivariant(Conv1x1(fin, fout, bias=True), fin, fout)


@pytest.mark.parametrize(
    "group,field,g,s,reduction",
    [
        ("C16", "regular", 4, 4, 1),
        ("C16", ["regular", "quotient4"], 2, 1, 2),
        ("D16", "regular", 2, 1, 1),
        ("C4", "trivial", 2, 1, 1),
    ],
    ids=str,
)
@pytest.mark.parametrize("method", ["fd", "gauss"])
def test_neural_epdo_equivariant(group, field, g, s, reduction, method) -> None:
    fin = feat(group, field, 4)
    fout = feat(group, field, 3)
    layer = NeuralEPDO(fin, fout, 4, g, s, reduction, method, bias=True)
    assert_equivariant(layer, fin, fout, size=9)


def test_neural_epdo_rbffd_and_type_change() -> None:
    fin, fout = feat("C8", "regular", 4), feat("C8", "quotient2", 5)
    assert_equivariant(NeuralEPDO(fin, fout, 3, 2, 2, 1, "rbffd"), fin, fout, size=9)


def test_equivariance_check_can_fail() -> None:
    fin, fout = feat("C4", "regular", 2), feat("C4", "regular", 2)
    assert_not_equivariant_under_wrong_permutation(Conv1x1(fin, fout), fin, fout)


def test_norms_pooling_restriction_equivariant() -> None:
    fin = feat("D8", ["regular", "quotient2"], 3)
    bn = FieldBatchNorm(fin).double()
    with torch.no_grad():
        bn.bn.running_mean.normal_()
        bn.bn.running_var.uniform_(0.5, 2.0)
        bn.bn.weight.normal_()
        bn.bn.bias.normal_()
    bn.eval()
    assert_equivariant(bn, fin, fin)
    fn = FieldNorm(fin)
    with torch.no_grad():
        fn.weight.normal_()
        fn.bias.normal_()
    assert_equivariant(fn, fin, fin)
    assert_equivariant(SpatialPool(fin, 2, "max"), fin, fin, size=12)
    assert_equivariant(SpatialPool(fin, 2, "avg"), fin, fin, size=12)
    gp = GroupPool(fin, "max")
    assert_equivariant(gp, fin, gp.out_type)
    reg = feat("D8", "regular", 3)
    res = Restrict(reg)
    assert res.out_type.count == 6
    # the restricted map is C_N-equivariant with the C_N types on both sides
    c_in = FeatureType(res.out_type.field, 6)
    conv = Conv1x1(c_in, feat("C8", "regular", 2))
    model = torch.nn.Sequential(res, conv).double()
    x = torch.randn(2, reg.channels, 8, 8, dtype=torch.float64)
    for g in res.out_type.group.grid_exact_elements:
        err = rel_err(
            model(transform_features(x, reg, g)), transform_features(model(x), conv.out_type, g)
        )
        assert err < TOL


def test_head_is_invariant() -> None:
    fin = feat("D4", "regular", 5)
    head = ClassifierHead(fin, 10, (8,), "max", "max").double().eval()
    x = torch.randn(3, fin.channels, 7, 7, dtype=torch.float64)
    y = head(x)
    for g in fin.group.grid_exact_elements:
        assert rel_err(head(transform_features(x, fin, g)), y) < TOL


def test_layers_check_their_input_type() -> None:
    fin, fout = feat("C16", "regular", 2), feat("C16", "regular", 2)
    layer = PDOConv(fin, fout, 4, "fd")
    with pytest.raises(FieldTypeError, match="expects 2xregular fields of C16 = 32 channels"):
        layer(torch.randn(1, 16, 9, 9))
    with pytest.raises(FieldTypeError):
        NeuralEPDO(fin, fout, 4, 2, 1, 1, "fd")(torch.randn(1, 33, 9, 9))


def test_kernel_cache_in_eval_follows_parameter_updates() -> None:
    fin, fout = feat("C4", "regular", 2), feat("C4", "regular", 2)
    layer = PDOConv(fin, fout, 2, "fd").eval()
    x = torch.randn(1, fin.channels, 7, 7)
    with torch.no_grad():
        y1 = layer(x)
        layer.expansion.weights[0].mul_(2.0)
        y2 = layer(x)
    assert torch.allclose(y2, 2 * y1, atol=1e-5)
    layer.train()
    y3 = layer(x)
    y3.sum().backward()
    assert layer.expansion.weights[0].grad is not None


def test_parameter_counts_match_theory() -> None:
    """C16 regular -> regular at order 4: |G| * 15 coefficients per pair of fields;
    trivial -> regular: 15 per pair (one steerable PDO per input field)."""
    reg = PDOConv(feat("C16", "regular", 3), feat("C16", "regular", 2), 4, "fd")
    assert sum(p.numel() for p in reg.parameters()) == 3 * 2 * 16 * 15
    triv = PDOConv(feat("C16", "trivial", 1), feat("C16", "regular", 16), 4, "fd")
    assert sum(p.numel() for p in triv.parameters()) == 16 * 15
