"""Exact-size rules from the plan (zoo/exactness.py, each op's ``exactness``) against brute
force: for random small specs and sizes, a layer is predicted exact exactly when it is
measured exact (float64, every grid-exact element on its output fields)."""

from __future__ import annotations

import random

import pytest
import torch

from epdo.zoo import Spec, SpecError, build_model, load_spec
from epdo.zoo.exactness import (
    describe_sizes,
    exact_sizes,
    exactness_note,
    first_break,
    nearest_sizes,
    size_rule,
)
from epdo.zoo.ops import OPS
from epdo.zoo.plan import plan_layers
from epdo.zoo.transforms import transform_features, transform_grid_exact

TOL = 1e-9
SIZES = range(5, 25)


def spec_of(group: str, layers: list[dict], size: int = 12) -> dict:
    return {"name": "rule", "group": group, "discretization": "fd",
            "input": {"channels": 1, "size": size}, "layers": layers}


def random_layers(rng: random.Random) -> list[dict]:
    """2 to 4 layers of pdo_conv (stride 1 or 2, maybe a pool of 2 or 3), pool (2 or 3),
    blur_pool (stride 2 or 3) and conv1x1 (stride 1 or 2), one or two fields wide. No ReLU
    (pointwise, so it changes no exactness, but it can zero a narrow map and make the
    comparison vacuous)."""
    layers = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(["pdo_conv", "pdo_conv", "pool", "blur_pool", "conv1x1"])
        if kind == "pdo_conv":
            layer = {"op": "pdo_conv", "fields": rng.randint(1, 2), "order": 2,
                     "stride": rng.choice([1, 2]), "relu": False}
            if rng.random() < 0.3:
                layer["pool"] = rng.choice([2, 3])
        elif kind == "pool":
            layer = {"op": "pool", "size": rng.choice([2, 3]), "kind": rng.choice(["max", "avg"])}
        elif kind == "blur_pool":
            layer = {"op": "blur_pool", "stride": rng.choice([2, 3])}
        else:
            layer = {"op": "conv1x1", "fields": rng.randint(1, 2), "stride": rng.choice([1, 2]),
                     "relu": False}
        layers.append(layer)
    return layers


def random_spec(rng: random.Random, group: str) -> Spec:
    """A spec of :func:`random_layers` that plans at 24 x 24 (drawn again until it does)."""
    while True:
        try:
            return load_spec(spec_of(group, random_layers(rng), size=24))
        except SpecError:  # the map vanishes: too much pooling for 24 pixels
            continue


def measured_exact(model, layers, n: int) -> list[bool]:
    """For every block at input n x n: whether its output is equivariant to float64
    round-off under every grid-exact element of its group (random, unsmoothed inputs)."""
    group = model.plan.input.group
    elements = group.grid_exact_elements[1:]
    x = torch.randn(2, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    xs = torch.cat([x] + [transform_grid_exact(x, group, g) for g in elements])
    exact = []
    with torch.no_grad():
        for plan, out in zip(layers, model.block_outputs(xs), strict=True):
            base, errs = out[:2], []
            assert base.norm() > 0, f"vacuous: {plan.path} is zero at {n}"
            for k, g in enumerate(elements):
                want = transform_features(base, plan.out.feature, g)
                got = out[2 * (k + 1):2 * (k + 2)]
                errs.append(float((got - want).norm() / base.norm()))
            exact.append(max(errs) < TOL)
    return exact


def predicted_exact(layers) -> list[bool]:
    """Per block: every block up to it is exact by the plan."""
    out, ok = [], True
    for plan in layers:
        ok = ok and OPS[plan.op].why_inexact(plan) is None
        out.append(ok)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_predicted_exact_iff_measured_exact(seed: int) -> None:
    rng = random.Random(seed)
    group = rng.choice(["C4", "D4"])
    spec = random_spec(rng, group)
    torch.manual_seed(seed)
    model = build_model(spec).double().eval()
    brute = []
    for n in SIZES:
        layers = plan_layers(spec, n, n)
        if layers is None:  # the map vanishes at this size
            continue
        measured, predicted = measured_exact(model, layers, n), predicted_exact(layers)
        assert predicted == measured, (
            f"{group} {[p.layer.model_dump() for p in layers]} at {n}: predicted "
            f"{predicted}, measured {measured}; {first_break(layers)}")
        if all(measured):
            brute.append(n)
    # the spec-level rule: the sizes found by planning are the ones measured exact
    assert [n for n in exact_sizes(spec, 24) if n in SIZES] == brute


def test_both_outcomes_occur_in_the_random_specs() -> None:
    """The brute-force comparison is not vacuous: exact and inexact layers both occur."""
    seen = set()
    for seed in range(10):
        rng = random.Random(seed)
        spec = random_spec(rng, rng.choice(["C4", "D4"]))
        for n in SIZES:
            layers = plan_layers(spec, n, n)
            if layers is not None:
                seen.update(predicted_exact(layers))
    assert seen == {True, False}


STRIDE_POOL = [{"op": "pdo_conv", "fields": 1, "order": 2, "stride": 2},
               {"op": "pool", "size": 2}]


def test_rule_in_words_for_a_stride_then_a_pool() -> None:
    """Stride 2 needs n odd; the pool then needs (n + 1) / 2 even: n = 4k + 3."""
    rule = size_rule(load_spec(spec_of("C4", STRIDE_POOL, size=12)))
    assert rule.sizes[:4] == (3, 7, 11, 15) and rule.rule.startswith("sizes 4k+3: 3, 7, 11")
    assert rule.breaks is not None and rule.breaks.path == "layers[0]"
    assert "stride 2" in rule.breaks.reason and "2 divides 12 - 1" in rule.breaks.reason
    assert rule.nearest == [11, 15] and not rule.exact_here
    assert size_rule(load_spec(spec_of("C4", STRIDE_POOL, size=11))).exact_here


def test_pool_reason_names_the_odd_size() -> None:
    spec = load_spec(spec_of("C4", [{"op": "pdo_conv", "fields": 1, "order": 2, "pool": 2},
                                    {"op": "pool", "size": 2}], size=14))
    brk = first_break(spec.plan.layers)
    assert brk.path == "layers[1]" and brk.op == "pool" and (brk.height, brk.width) == (7, 7)
    assert "7 is not a multiple of 2" in brk.reason
    assert size_rule(spec).rule.startswith("multiples of 4")


def test_residual_body_and_strided_shortcut() -> None:
    """A residual breaks at its body's first inexact layer, or at a strided 1x1 shortcut."""
    body = [{"op": "pdo_conv", "fields": 2, "order": 2, "stride": 2},
            {"op": "pdo_conv", "fields": 2, "order": 2}]
    spec = load_spec(spec_of("C4", [{"op": "pdo_conv", "fields": 1, "order": 2},
                                    {"op": "residual", "body": body, "preact": True}], 16))
    brk = first_break(spec.plan.layers)
    assert brk.path == "layers[1]" and "layers[1].body[0]: stride 2" in brk.reason
    assert exact_sizes(spec, 24)[:3] == [1, 3, 5]  # odd sizes: stride and shortcut agree


def test_head_without_group_pooling_is_never_exact() -> None:
    rule = size_rule(load_spec("cifar10_pdoeconv_p8_resnet44"))
    assert rule.sizes == () and rule.always is not None and rule.always.op == "head"
    assert "group_pool: none" in rule.line() and rule.breaks.path == "layers[2]"
    assert size_rule(load_spec("cifar10_pdoeconv_p8_resnet44_rot90")).exact_here


def test_shipped_equivariant_specs_are_exact_at_their_size() -> None:
    for name in ("seg_regular_gauss", "mnist_regular_gauss", "rgb_regular_gauss",
                 "mnist_d16c16_gauss"):
        rule = size_rule(load_spec(name))
        assert rule.exact_here, (name, rule.line())
        assert exactness_note(load_spec(name)) is None
    assert size_rule(load_spec("rgb_regular_gauss")).rule.startswith("multiples of 16")


def test_plain_cnn_has_no_exact_sizes_and_no_warning() -> None:
    spec = load_spec("mnist_cnn")
    rule = size_rule(spec)
    assert rule.symmetries is None and not rule.exact_here and "C1 has no quarter turn" in \
        rule.line()
    assert exactness_note(spec) is None


def test_warning_names_layer_reason_and_nearest_sizes() -> None:
    note = exactness_note(load_spec(spec_of("C4", STRIDE_POOL, size=12)))
    assert note.startswith("input 12x12 is not exactly equivariant under quarter turns")
    assert "layers[0] (pdo_conv, 12x12 in)" in note and "nearest exact sizes: 11 and 15" in note


def test_a_non_square_input_breaks_the_quarter_turns() -> None:
    spec = load_spec({**spec_of("C4", [{"op": "pdo_conv", "fields": 1, "order": 2}]),
                      "input": {"channels": 1, "size": [8, 12]}})
    assert first_break(spec.plan.layers).path == "input"


@pytest.mark.parametrize("sizes, words", [
    ([4, 8, 12, 16, 20, 24, 28, 32], "multiples of 4: 4, 8, 12, 16, ..."),
    ([3, 7, 11, 15, 19, 23, 27, 31], "sizes 4k+3: 3, 7, 11, 15, ..."),
    ([7, 11, 15, 19, 23, 27, 31], "sizes 4k+3 from 7: 7, 11, 15, 19, ..."),
    (list(range(5, 33)), "every size from 5"),
    ([1, 3, 9, 11, 17, 19, 25, 27], "sizes 1, 3 mod 8: 1, 3, 9, 11, ..."),
    ([5, 6, 19], "sizes 5, 6, 19"),
    ([], "none up to 32"),
])
def test_describe_sizes(sizes: list[int], words: str) -> None:
    assert describe_sizes(sizes, 32) == words


def test_nearest_sizes() -> None:
    assert nearest_sizes([4, 8, 12], 10) == [8, 12]
    assert nearest_sizes([4, 8, 12], 2) == [4] and nearest_sizes([], 5) == []
