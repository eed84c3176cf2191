"""The shipped specs for users' own RGB image folders: rgb_regular_gauss (Neural ePDO), its
PDO-eConv twin and its plain CNN baseline.

They must build at every input size a user is told to use (64-128 px, multiples of 16),
have about the same number of parameters (so the comparison is fair), train alike, and
the two equivariant ones must give the same logits for an image and its quarter turns.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from epdo.zoo import build_model, load_spec
from epdo.zoo.equivariance import calibrate_batchnorm, smooth_images
from epdo.zoo.layers.norms import FieldNorm
from epdo.zoo.spec import Spec
from epdo.zoo.transforms import transform_grid_exact

EPDO = "rgb_regular_gauss"
TWINS = ["rgb_pdoeconv_gauss", "rgb_cnn"]
SPECS = [EPDO, *TWINS]
EQUIVARIANT = [EPDO, "rgb_pdoeconv_gauss"]


def sized(name: str, size: int) -> Spec:
    """The shipped spec ``name`` with its input resized to ``size`` x ``size``."""
    data = load_spec(name).resolved()
    data["input"]["size"] = size
    return load_spec(data)


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    """``n`` random smooth 64x64 RGB images with values around [0, 1], float64 (noise blurred
    over a few pixels: distinct images give distinct logits, which iid noise, averaged away
    by the global pooling, would not)."""
    return smooth_images(n, 3, 64, 64, seed=seed) * 0.25 + 0.5


def randomized(spec: Spec, seed: int = 0) -> nn.Module:
    """``spec`` built in float64 with random weights, in eval mode, with BatchNorm running
    statistics measured on other images and then perturbed, and random BatchNorm and
    FieldNorm affines (one value per field, as the layers hold them): nothing is left at
    the identity that could hide a broken symmetry."""
    torch.manual_seed(seed)
    model = build_model(spec).double()
    calibrate_batchnorm(model, images(8, seed=seed + 10), batch_size=4)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.add_(torch.empty_like(mod.running_mean).uniform_(-0.1, 0.1)
                                      * mod.running_var.sqrt())
                mod.running_var.mul_(torch.empty_like(mod.running_var).uniform_(0.8, 1.25))
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
            elif isinstance(mod, FieldNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("name", SPECS)
def test_loads_and_builds_at_64_96_and_128(name: str) -> None:
    counts = set()
    for size in (64, 96, 128):
        spec = sized(name, size)
        assert spec.input.size == [size, size]
        assert spec.plan.num_classes == 10
        before_head = spec.plan.layers[-1].inp
        assert (before_head.height, before_head.width) == (size // 16, size // 16)
        counts.add(parameters(build_model(spec)))
        if size == 64:
            model = build_model(spec).eval()
            with torch.no_grad():
                logits = model(torch.rand(1, 3, 64, 64))
            assert logits.shape == (1, 10)
            assert torch.isfinite(logits).all()
    assert len(counts) == 1, f"{name}: the parameter count depends on the input size {counts}"


def test_parameter_counts_match_the_neural_epdo() -> None:
    reference = parameters(build_model(EPDO))
    assert 100_000 <= reference <= 400_000
    for name in TWINS:
        count = parameters(build_model(name))
        assert abs(count / reference - 1) <= 0.15, f"{name}: {count:,} vs {reference:,}"


def test_the_three_train_and_read_images_alike() -> None:
    spec = load_spec(EPDO)
    assert spec.train.dataset == "folder"
    assert spec.input.channels == 3 and spec.input.size == [96, 96]
    assert (spec.input.mean, spec.input.std, spec.input.fit) == ("auto", "auto", "resize")
    augment = spec.train.augment
    assert augment.rotate and augment.flip
    assert augment.resized_crop is not None and augment.resized_crop.scale == [0.6, 1.0]
    for name in TWINS:
        twin = load_spec(name)
        assert twin.train == spec.train, name
        assert twin.input == spec.input, name
        assert [layer.op for layer in twin.layers] != [layer.op for layer in spec.layers]
        assert len(twin.plan.layers) == len(spec.plan.layers)
        sizes = [(p.out.height, p.out.width) for p in twin.plan.layers[:-1]]
        assert sizes == [(p.out.height, p.out.width) for p in spec.plan.layers[:-1]], name


def quarter_turn_errors(model: nn.Module, x: torch.Tensor) -> tuple[list[float], float]:
    """The relative change ``||f(rot90^k x) - f(x)|| / ||f(x) - mean f(x)||`` of the logits
    for k = 1, 2, 3 (``torch.rot90``: counter-clockwise quarter turns, the grid-exact
    rotations of C8), and how much the logits vary between the images relative to their size
    (so that constant logits cannot pass)."""
    with torch.no_grad():
        y = model(x)
        spread = float((y - y.mean(0)).norm())
        errors = [float((model(torch.rot90(x, k, (-2, -1))) - y).norm()) / spread
                  for k in (1, 2, 3)]
    return errors, spread / float(y.norm())


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_logits_are_invariant_under_quarter_turns(name: str) -> None:
    model = randomized(sized(name, 64))
    group = model.plan.input.group
    # C8's grid-exact elements are the identity and the three quarter turns, and the group's
    # own action on the input (trivial fields) is torch.rot90
    assert len(group.grid_exact_elements) == 4
    x = images()
    for k, g in enumerate(group.grid_exact_elements):
        assert torch.equal(transform_grid_exact(x, group, g), torch.rot90(x, k, (-2, -1)))
    errors, variation = quarter_turn_errors(model, x)
    assert variation > 1e-3, "vacuous: the logits barely depend on the input"
    assert max(errors) < 1e-9, errors
    # and in float32, as training runs (the Neural ePDO's fused kernel included)
    errors32, _ = quarter_turn_errors(model.float(), x.float())
    assert max(errors32) < 1e-4, errors32


def test_the_check_tells_an_invariant_model_from_the_cnn() -> None:
    """The same measure on the plain CNN (which learns the rotations from the augmentation
    only) is far from zero, so the invariance above is the equivariant layers' doing."""
    errors, _ = quarter_turn_errors(randomized(sized("rgb_cnn", 64)), images())
    assert min(errors) > 1e-2, errors
