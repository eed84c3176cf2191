"""The upsample op: planned, built, exactly equivariant under the grid-exact elements at
every size, exported to every format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from epdo.exporters.export import export_model
from epdo.exporters.inference import inference_model
from epdo.zoo import build_model
from epdo.zoo.groups import parse_group
from epdo.zoo.layers.upsample import Upsample
from epdo.zoo.reps import FeatureType, parse_field_type
from epdo.zoo.spec import SpecError, load_spec
from epdo.zoo.transforms import transform_features


def spec(mode: str = "nearest", size: int = 9) -> dict:
    return {
        "name": "upsample_tiny",
        "group": "D4",
        "input": {"channels": 1, "size": size},
        "layers": [
            {"op": "pdo_conv", "fields": 2, "order": 2},
            {"op": "upsample", "mode": mode},
            {"op": "head", "classes": 3},
        ],
    }


def test_plan_doubles_the_size_and_refuses_unknown_modes() -> None:
    up = load_spec(spec()).plan.layers[1]
    assert (up.out.height, up.out.width) == (18, 18) and up.out.feature == up.inp.feature
    with pytest.raises(SpecError) as err:
        load_spec(spec(mode="bicubic"))
    assert err.value.path == "layers[1].mode"


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("field", ["regular", "trivial", "quotient2"])
@pytest.mark.parametrize("size", [6, 7])
def test_exactly_equivariant_at_every_size(mode: str, field: str, size: int) -> None:
    group = parse_group("D4")
    feature = FeatureType(parse_field_type(group, field), 3)
    layer = Upsample(feature, mode)
    x = torch.randn(2, feature.channels, size, size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    y = layer(x)
    assert y.shape == (2, feature.channels, 2 * size, 2 * size)
    elements = group.grid_exact_elements
    assert len(elements) == 8
    for g in elements:
        moved = layer(transform_features(x, feature, g))
        torch.testing.assert_close(moved, transform_features(y, feature, g), atol=1e-12, rtol=0)


def test_nearest_repeats_and_bilinear_interpolates() -> None:
    feature = FeatureType(parse_field_type(parse_group("C1"), "trivial"), 1)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    near = Upsample(feature, "nearest")(x)[0, 0]
    assert torch.equal(near[:2, :2], torch.ones(2, 2)) and torch.equal(near[2:, 2:],
                                                                      torch.full((2, 2), 4.0))
    bil = Upsample(feature, "bilinear")(x)[0, 0]
    assert bil[0, 0] == 1.0 and bil[3, 3] == 4.0 and bil[1, 1] == pytest.approx(1.75)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_a_model_with_upsample_exports_to_every_format(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    s = load_spec(spec(mode))
    model = build_model(s).eval()
    x = torch.rand(2, 1, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(inference_model(model)(x), model(x), atol=1e-5, rtol=1e-5)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".ts"), ("pt2", ".pt2")):
        report = export_model((model, s), fmt, tmp_path / f"m{suffix}", real_images=0,
                              classes=["a", "b", "c"])
        assert report.passed and report.rotation_max_rel < 1e-4
