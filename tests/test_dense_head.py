"""The dense head: per-pixel class scores, planned (task, sizes, located errors with the
sizes that fit), exactly equivariant as a map, and exported to plain ops."""

from __future__ import annotations

import pytest
import torch

from epdo.zoo import build_model
from epdo.zoo.plan import fitting_sizes
from epdo.zoo.spec import SpecError, load_spec
from epdo.zoo.transforms import transform_grid_exact


def unet(size: int = 16, group: str = "D4", **head: object) -> dict:
    """Two poolings, two upsamplings with skips, a dense head."""
    return {
        "name": "seg_tiny",
        "group": group,
        "input": {"channels": 1, "size": size},
        "defaults": {"order": 2},
        "layers": [
            {"op": "pdo_conv", "fields": 2, "name": "e1"},
            {"op": "pool", "size": 2},
            {"op": "pdo_conv", "fields": 2, "name": "e2"},
            {"op": "pool", "size": 2},
            {"op": "pdo_conv", "fields": 2},
            {"op": "upsample", "mode": "bilinear"},
            {"op": "skip", "from": "e2"},
            {"op": "pdo_conv", "fields": 2},
            {"op": "upsample"},
            {"op": "skip", "from": "e1"},
            {"op": "dense_head", "classes": 3, **head},
        ],
    }


def test_the_plan_ends_in_a_map_of_class_scores() -> None:
    plan = load_spec(unet(hidden=[5])).plan
    out = plan.output
    assert plan.task == "segment" and plan.num_classes == 3
    assert (out.height, out.width, out.logits, out.dense) == (16, 16, 3, True)
    assert load_spec("quickstart").plan.task == "classify"


def test_a_size_the_depth_does_not_allow_is_refused_with_the_sizes_that_fit() -> None:
    with pytest.raises(SpecError) as err:
        load_spec(unet(18))
    text = str(err.value)
    assert err.value.path == "layers[6].from"
    assert "9x9" in text and "8x8" in text and "multiples of 4, such as 16 or 20" in text
    assert fitting_sizes(load_spec(unet(16)), 40) == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]


def test_a_map_smaller_than_the_input_is_refused() -> None:
    spec = unet()
    spec["layers"] = spec["layers"][:5] + [spec["layers"][-1]]
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert err.value.path == "layers[5]"
    assert "4x4" in str(err.value) and "16x16" in str(err.value)
    assert "upsample" in str(err.value)


def test_nothing_follows_a_dense_head() -> None:
    spec = unet()
    spec["layers"].append({"op": "pool", "size": 2})
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert err.value.path == "layers[11]" and "last layer" in str(err.value)


def test_group_pool_none_is_refused_in_a_dense_head() -> None:
    with pytest.raises(SpecError) as err:
        load_spec(unet(group_pool="none"))
    assert "group_pool" in str(err.value)


@pytest.mark.parametrize(("group", "size"), [("D4", 16), ("C8", 12)])
def test_a_grid_exact_turn_of_the_input_turns_the_map(group: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(unet(size, group, hidden=[4])).double().eval()
    x = torch.rand(2, 1, size, size, dtype=torch.float64)
    elements = model.group.grid_exact_elements
    assert len(elements) == (8 if group == "D4" else 4)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 3, size, size)
        for g in elements:
            turned = model(transform_grid_exact(x, model.group, g))
            torch.testing.assert_close(turned, transform_grid_exact(y, model.group, g),
                                       atol=1e-12, rtol=0)


def test_the_cnn_twin_is_measurably_not_equivariant() -> None:
    spec = unet(16, "C1")
    for layer in spec["layers"]:
        if layer["op"] == "pdo_conv":
            layer.update(op="conv", channels=4, kernel=5)
            del layer["fields"]
    spec["defaults"] = {}
    torch.manual_seed(0)
    model = build_model(spec).double().eval()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        y, turned = model(x), model(torch.rot90(x, 1, (2, 3)))
    assert (turned - torch.rot90(y, 1, (2, 3))).abs().max() > 1e-3 * y.abs().max()


def test_the_inference_form_gives_the_same_map() -> None:
    torch.manual_seed(0)
    model = build_model(unet(hidden=[4], preact=True))
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, 16, 16))  # running statistics that are not the identity
    model.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.export()(x), model(x), atol=1e-5, rtol=1e-5)
