"""The blur_pool op: planned, built, exactly equivariant on odd sizes, exported."""

from __future__ import annotations

import pytest
import torch

from epdo.exporters.inference import inference_model
from epdo.zoo import build_model
from epdo.zoo.groups import parse_group
from epdo.zoo.layers.blur_pool import BlurPool, binomial_filter
from epdo.zoo.reps import FeatureType, parse_field_type
from epdo.zoo.spec import SpecError, load_spec
from epdo.zoo.transforms import transform_features


def spec(size: int = 13, stride: int = 2) -> dict:
    return {
        "group": "D4",
        "input": {"channels": 1, "size": size},
        "layers": [
            {"op": "pdo_conv", "fields": 2},
            {"op": "blur_pool", "stride": stride},
            {"op": "head", "classes": 3},
        ],
    }


def test_plan_sizes_and_errors() -> None:
    plan = load_spec(spec(13)).plan
    blur = plan.layers[1]
    assert (blur.out.height, blur.out.width) == (7, 7)
    assert blur.out.feature == blur.inp.feature
    with pytest.raises(SpecError) as err:
        load_spec({**spec(), "layers": [{"op": "blur_pool", "stride": 1}]})
    assert err.value.path == "layers[0].stride"


@pytest.mark.parametrize("field", ["regular", "trivial", "quotient2"])
def test_exactly_equivariant_on_odd_sizes(field: str) -> None:
    group = parse_group("D4")
    feature = FeatureType(parse_field_type(group, field), 3)
    layer = BlurPool(feature, 2)
    x = torch.randn(2, feature.channels, 9, 9, generator=torch.Generator().manual_seed(0))
    y = layer(x)
    assert y.shape == (2, feature.channels, 5, 5)
    elements = group.grid_exact_elements
    assert len(elements) == 8  # the four quarter turns, with and without the reflection
    for g in elements:
        moved = layer(transform_features(x, feature, g))
        torch.testing.assert_close(moved, transform_features(y, feature, g), atol=1e-6, rtol=0)


def test_blurs_before_subsampling() -> None:
    feature = FeatureType(parse_field_type(parse_group("C1"), "trivial"), 1)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0  # an impulse at a kept pixel spreads its mass over the neighbours
    y = BlurPool(feature, 2)(x)
    assert y[0, 0, 1, 1] == binomial_filter()[1, 1]
    assert torch.equal(BlurPool(feature, 2)(torch.ones(1, 1, 5, 5))[0, 0, 1, 1], torch.tensor(1.0))


def test_model_with_blur_pool_exports_exactly() -> None:
    torch.manual_seed(0)
    model = build_model(spec(13)).eval()
    x = torch.rand(2, 1, 13, 13)
    inf = inference_model(model)
    assert not any(isinstance(m, BlurPool) for m in inf.modules())
    with torch.no_grad():
        torch.testing.assert_close(inf(x), model(x), atol=1e-5, rtol=1e-5)
