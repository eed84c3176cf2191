"""Every shipped spec: builds, runs, and is exactly equivariant in float64.

The test is made non-vacuous by calibrating the BatchNorm statistics on smooth random
images first and asserting that the logits vary across inputs.
"""

from __future__ import annotations

import pytest
import torch

from epdo.zoo import build_model, list_specs, load_spec
from epdo.zoo.equivariance import calibrate_batchnorm, check_spec, smooth_images
from epdo.zoo.transforms import transform_features, transform_grid_exact

SHIPPED = list_specs()
MNIST = [s for s in SHIPPED if s.startswith("mnist") or s == "quickstart"]
# The PDO-eConvs CIFAR models as published are not invariant: their classifier reads every
# orientation channel (no group pooling) and they stride on even sizes.
PUBLISHED_NOT_INVARIANT = [s for s in SHIPPED if load_spec(s).layers[-1].group_pool == "none"]
TOL = 1e-9


def test_the_zoo_is_complete() -> None:
    expected = {
        "mnist_regular_fd", "mnist_regular_gauss", "mnist_quotient_gauss",
        "mnist_d16c16_gauss", "mnist_pdoeconv_gauss", "mnist_cnn", "quickstart",
        "cifar10_pdoeconv_p8_resnet44", "cifar10_pdoeconv_p8_resnet44_rot90",
        "rgb_regular_gauss", "rgb_pdoeconv_gauss", "rgb_cnn",
    }
    assert expected <= set(SHIPPED)
    assert "cifar100_pdoeconv_p8_resnet44" in PUBLISHED_NOT_INVARIANT


@pytest.mark.parametrize("name", [s for s in SHIPPED if s not in PUBLISHED_NOT_INVARIANT])
def test_every_spec_builds_and_runs(name: str) -> None:
    model = build_model(name).eval()
    c, h, w = model.input_shape
    with torch.no_grad():
        y = model(torch.randn(2, c, h, w))
    out = model.plan.output
    per_pixel = (out.height, out.width) if out.dense else ()
    assert y.shape == (2, model.plan.num_classes, *per_pixel)
    assert torch.isfinite(y).all()


def _calibrated(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(name).double()
    c, h, w = model.input_shape
    calibrate_batchnorm(model, smooth_images(12, c, h, w, seed=1))
    return model, smooth_images(3, c, h, w, seed=2)


@pytest.mark.parametrize("name", [s for s in MNIST if s != "mnist_cnn"])
def test_intermediate_fields_transform_by_their_permutation(name: str) -> None:
    """After every block, the outputs of g.x are g applied to the outputs of x, for the
    grid-exact g of that block's group."""
    model, x = _calibrated(name)
    group_in = model.plan.input.group
    plans = model.plan.layers[:-1]

    def trace(inp: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in model.blocks[: len(plans)]:
            inp = block(inp)
            outs.append(inp)
        return outs

    with torch.no_grad():
        ys = trace(x)
        for g in group_in.grid_exact_elements[1:]:
            gys = trace(transform_grid_exact(x, group_in, g))  # the input is trivial fields
            for plan, y, gy in zip(plans, ys, gys, strict=True):
                feature = plan.out.feature
                if g not in feature.group.elements:
                    break  # after a restriction, the flips are no longer symmetries
                err = (gy - transform_features(y, feature, g)).norm() / y.norm()
                assert err < TOL, f"{name} {plan.path} {feature.group.describe(g)}: {err:.1e}"


@pytest.mark.parametrize(
    "name",
    [s for s in SHIPPED if load_spec(s).group != "C1" and s not in PUBLISHED_NOT_INVARIANT],
)
def test_logits_exactly_invariant_and_not_constant(name: str) -> None:
    report = check_spec(name, batch=3, calibration=12, angles=())
    assert report.output_variation > 1e-2, "vacuous: the logits barely depend on the input"
    exact = [r for r in report.rows if r.grid_exact and r.in_group]
    assert len(exact) >= 3
    assert report.max_exact_error < TOL
    # the plain CNN beside it is not invariant (the check can tell the difference)
    assert min(r.cnn_error for r in exact) > 1e-2


def test_plain_cnn_is_not_invariant() -> None:
    report = check_spec("mnist_cnn", batch=3, calibration=12, angles=())
    assert report.max_exact_error == 0.0  # C1 has no grid-exact element besides identity
    rot = [r for r in report.rows if not r.in_group]
    assert rot and min(r.model_error for r in rot) > 1e-2


def test_d16c16_flips_are_not_claimed_after_restriction() -> None:
    report = check_spec("mnist_d16c16_gauss", batch=2, calibration=8, angles=(45.0,))
    assert report.group == "C16"
    assert [r.transform for r in report.rows] == ["rot 90°", "rot 180°", "rot 270°", "rot 45°"]
