"""Stage inference: field types, sizes, Neural ePDO widths and residual shortcuts."""

from __future__ import annotations

from typing import Any

import pytest

from epdo.zoo.plan import ModelPlan, Stage, plan_model
from epdo.zoo.spec import SpecError, load_spec


def plan_of(layers: list[dict[str, Any]], group: str = "C4", size: Any = 16) -> ModelPlan:
    spec = load_spec({"group": group, "input": {"channels": 1, "size": size}, "layers": layers})
    return plan_model(spec)


def summary(stage: Stage) -> tuple[str, str | None, int, int]:
    feature = None if stage.feature is None else stage.feature.name
    return stage.group.name, feature, stage.height, stage.width


def test_regular_gauss_stages() -> None:
    plan = plan_model(load_spec("mnist_regular_gauss"))
    assert summary(plan.input) == ("C16", "1xtrivial", 28, 28)
    head = plan.layers[-1]
    assert head.op == "head"
    assert summary(head.inp) == ("C16", "64xregular", 7, 7)
    assert head.inp.feature is not None and head.inp.feature.channels == 64 * 16
    assert summary(plan.output) == ("C16", None, 1, 1)
    assert plan.num_classes == 10
    sizes = [lp.out.height for lp in plan.layers[:-1]]
    assert sizes == [28, 14, 14, 7, 7, 7]
    assert [lp.num_mid for lp in plan.layers[1:6]] == [16, 24, 32, 32, 48]


def test_d16c16_restricts_before_the_last_layer() -> None:
    plan = plan_model(load_spec("mnist_d16c16_gauss"))
    ops = [lp.op for lp in plan.layers]
    assert ops[5] == "restrict"
    restrict, last = plan.layers[5], plan.layers[6]
    assert summary(restrict.inp) == ("D16", "32xregular", 7, 7)
    assert summary(restrict.out) == ("C16", "64xregular", 7, 7)
    assert restrict.inp.feature.channels == restrict.out.feature.channels  # type: ignore[union-attr]
    assert summary(last.inp) == ("C16", "64xregular", 7, 7)
    assert summary(last.out) == ("C16", "128xregular", 7, 7)
    assert plan.layers[1].inp.feature.field.dim == 32  # type: ignore[union-attr]


def test_quotient_fields_have_dim_20() -> None:
    plan = plan_model(load_spec("mnist_quotient_gauss"))
    feature = plan.layers[-1].inp.feature
    assert feature is not None
    assert (feature.field.dim, feature.count) == (20, 64)
    assert [lp.layer.reduction for lp in plan.layers[1:6]] == [2, 2, 2, 2, 2]
    assert [lp.num_mid for lp in plan.layers[1:6]] == [7, 10, 15, 15, 20]
    assert [lp.num_mid for lp in plan.layers[1:6]] == [7, 10, 15, 15, 20]


def test_pdoeconv_uses_the_same_trunk() -> None:
    base = plan_model(load_spec("mnist_regular_gauss"))
    pdo = plan_model(load_spec("mnist_pdoeconv_gauss"))
    assert {lp.op for lp in pdo.layers[:-1]} == {"pdo_conv"}
    assert [summary(lp.out) for lp in pdo.layers] == [summary(lp.out) for lp in base.layers]


def test_quickstart_is_small() -> None:
    plan = plan_model(load_spec("quickstart"))
    assert plan.input.group.name in ("C4", "C8")
    widths = [lp.out.feature.count for lp in plan.layers[:-1]]  # type: ignore[union-attr]
    assert max(widths) <= 8 and len(widths) <= 4


def test_sizes_with_stride_and_pool() -> None:
    plan = plan_of(
        [
            {"op": "pdo_conv", "fields": 2, "stride": 2},  # 15 -> 8
            {"op": "conv1x1", "fields": 2, "stride": 3},  # 8 -> 3
            {"op": "pdo_conv", "fields": 2, "pool": 2, "pool_kind": "avg"},  # 3 -> 1
        ],
        size=[15, 17],
    )
    assert [(lp.out.height, lp.out.width) for lp in plan.layers] == [(8, 9), (3, 3), (1, 1)]


def test_plain_conv_and_group_pool_on_c1() -> None:
    plan = plan_of(
        [
            {"op": "conv", "channels": 8, "kernel": 3, "stride": 2, "pool": 2},
            {"op": "group_pool", "kind": "avg"},
            {"op": "head", "classes": 3},
        ],
        group="C1",
        size=28,
    )
    assert summary(plan.layers[0].out) == ("C1", "8xtrivial", 7, 7)
    assert plan.num_classes == 3


def test_group_pool_gives_trivial_fields() -> None:
    plan = plan_of([{"op": "pdo_conv", "fields": 3}, {"op": "group_pool"}])
    assert summary(plan.output) == ("C4", "3xtrivial", 16, 16)
    assert plan.num_classes is None


def test_repeat_expands_with_the_same_path() -> None:
    plan = plan_of(
        [
            {"op": "pdo_conv", "fields": 4},
            {"op": "neural_epdo", "fields": 4, "g": 2, "repeat": 3},
        ]
    )
    assert [lp.path for lp in plan.layers] == ["layers[0]"] + ["layers[1]"] * 3
    assert all(a.out == b.inp for a, b in zip(plan.layers, plan.layers[1:], strict=False))


def test_residual_shortcuts() -> None:
    plan = plan_of(
        [
            {"op": "pdo_conv", "fields": 4},
            {"op": "residual", "body": [{"op": "pdo_conv", "fields": 4}]},
            {"op": "residual", "body": [{"op": "pdo_conv", "fields": 8, "stride": 2}]},
            {"op": "residual", "body": [{"op": "conv1x1", "fields": 6}]},
            {"op": "residual", "body": [{"op": "pdo_conv", "fields": 6}], "repeat": 2},
        ]
    )
    shortcuts = [(lp.shortcut, lp.shortcut_stride) for lp in plan.layers[1:]]
    assert shortcuts == [("identity", 1), ("conv1x1", 2), ("conv1x1", 1)] + [("identity", 1)] * 2
    strided = plan.layers[2]
    assert [b.path for b in strided.body] == ["layers[2].body[0]"]
    assert summary(strided.out) == ("C4", "8xregular", 8, 8)


def test_residual_shortcut_on_odd_sizes() -> None:
    plan = plan_of(
        [{"op": "residual", "body": [{"op": "pdo_conv", "fields": 2, "stride": 2}]}], size=7
    )
    assert (plan.layers[0].shortcut, plan.layers[0].shortcut_stride) == ("conv1x1", 2)
    assert plan.output.height == 4
    plan = plan_of([{"op": "residual", "body": [{"op": "pool", "size": 3}]}], size=[9, 12])
    assert (plan.layers[0].shortcut_stride, plan.output.height, plan.output.width) == (3, 3, 4)


def test_residual_errors() -> None:
    with pytest.raises(SpecError) as info:
        plan_of(
            [{"op": "residual", "shortcut": "identity", "body": [{"op": "pdo_conv", "fields": 2}]}]
        )
    assert info.value.path == "layers[0].shortcut"
    with pytest.raises(SpecError) as info:
        plan_of([{"op": "residual", "body": [{"op": "pool", "size": 3}]}], size=[16, 12])
    assert info.value.path == "layers[0].shortcut"
    with pytest.raises(SpecError) as info:
        plan_of([{"op": "residual", "body": [{"op": "restrict"}]}], group="D4")
    assert info.value.path == "layers[0].shortcut" and "group" in str(info.value)


def test_neural_epdo_on_trivial_input_has_no_generator() -> None:
    with pytest.raises(SpecError) as info:
        plan_of([{"op": "neural_epdo", "fields": 2, "g": 1}])
    assert info.value.path == "layers[0].reduction"
    assert "no reduction works" in str(info.value)


def test_restrict_of_mixed_fields_keeps_the_count() -> None:
    plan = plan_of(
        [
            {"op": "pdo_conv", "fields": 3, "type": ["regular", "quotient2"]},
            {"op": "restrict"},
        ],
        group="D4",
    )
    inp, out = plan.layers[1].inp.feature, plan.output.feature
    assert inp is not None and out is not None
    assert (out.count, out.channels) == (3, inp.channels)
