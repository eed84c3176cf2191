"""Named taps and the skip op: planned (sizes, concatenated fields, located errors), an
encoder-decoder exactly equivariant under the grid-exact elements, exported to every
format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from epdo.exporters.export import export_model
from epdo.zoo import build_model
from epdo.zoo.builder import ZooModel
from epdo.zoo.layers.plain import TappedSequence
from epdo.zoo.ops.skip import tap_slots
from epdo.zoo.spec import SpecError, load_spec
from epdo.zoo.transforms import transform_features


def unet(size: int = 12, mode: str = "concat", enc: int = 2, **skip: Any) -> dict:
    """pdo_conv (named) -> pool 2 -> pdo_conv -> upsample -> skip -> pdo_conv -> head."""
    return {
        "name": "seg_tiny",
        "group": "D4",
        "input": {"channels": 1, "size": size},
        "layers": [
            {"op": "pdo_conv", "fields": enc, "order": 2, "name": "enc"},
            {"op": "pool", "size": 2},
            {"op": "pdo_conv", "fields": 2, "order": 2},
            {"op": "upsample"},
            {"op": "skip", "from": "enc", "mode": mode, **skip},
            {"op": "pdo_conv", "fields": 2, "order": 2},
            {"op": "head", "classes": 3},
        ],
    }


def refused(spec: dict) -> SpecError:
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    return err.value


# --------------------------------------------------------------------------- plan


def test_plan_concatenates_fields_and_keeps_the_size() -> None:
    plan = load_spec(unet(enc=3)).plan
    skip = plan.layers[4]
    assert (skip.out.height, skip.out.width) == (12, 12)
    assert skip.inp.feature.count == 2 and skip.out.feature.count == 5
    assert skip.out.feature.field == skip.inp.feature.field
    assert skip.out.feature.channels == 5 * 8
    assert tap_slots(plan.layers) == ([0, -1, -1, -1, -1, -1, -1], [-1, -1, -1, -1, 0, -1, -1])


def test_add_keeps_the_fields_and_the_spec_round_trips() -> None:
    s = load_spec(unet(mode="add"))
    skip = s.plan.layers[4]
    assert skip.out == skip.inp
    layers = s.resolved()["layers"]
    assert layers[4] == {"op": "skip", "from": "enc", "mode": "add"}
    assert "name" not in layers[1] and layers[0]["name"] == "enc"
    assert load_spec(s.resolved()) == s


def test_the_last_repeat_of_a_named_layer_is_kept() -> None:
    spec = unet()
    spec["layers"][0]["repeat"] = 2
    plan = load_spec(spec).plan
    keep, source = tap_slots(plan.layers)
    assert keep[:2] == [-1, 0] and source[5] == 0


def test_unknown_name() -> None:
    err = refused(unet(**{"from": "nope"}))
    assert err.path == "layers[4].from" and "'nope'" in str(err) and "enc" in str(err)


def test_a_later_layer() -> None:
    spec = unet(**{"from": "dec"})
    spec["layers"][5]["name"] = "dec"
    err = refused(spec)
    assert err.path == "layers[4].from" and "layers[5]" in str(err)


def test_a_skip_cannot_read_itself() -> None:
    err = refused(unet(name="me", **{"from": "me"}))
    assert err.path == "layers[4].from" and "layers[4]" in str(err)


def test_size_mismatch_names_both_sizes() -> None:
    spec = unet()
    spec["layers"][3], spec["layers"][4] = spec["layers"][4], spec["layers"][3]
    err = refused(spec)
    assert err.path == "layers[3].from" and "12x12" in str(err) and "6x6" in str(err)
    assert "\n" not in str(err)


def test_group_mismatch() -> None:
    spec = unet()
    spec["layers"].insert(4, {"op": "restrict"})
    err = refused(spec)
    assert err.path == "layers[5].from" and "D4" in str(err) and "C4" in str(err)


def test_add_needs_the_same_fields() -> None:
    err = refused(unet(mode="add", enc=3))
    assert err.path == "layers[4].mode" and "3xregular" in str(err)


def test_concat_needs_one_field_type() -> None:
    spec = unet()
    spec["layers"][2]["type"] = "quotient2"
    err = refused(spec)
    assert err.path == "layers[4].from" and "quotient2" in str(err)


def test_repeated_name() -> None:
    spec = unet()
    spec["layers"][2]["name"] = "enc"
    err = refused(spec)
    assert err.path == "layers[2].name" and "layers[0]" in str(err)


def test_a_name_is_an_identifier() -> None:
    spec = unet()
    spec["layers"][0]["name"] = "enc-1"
    assert refused(spec).path == "layers[0].name"
    assert refused(unet(**{"from": "2x"})).path == "layers[4].from"


def test_names_and_skips_stay_at_top_level() -> None:
    spec = unet()
    spec["layers"][2] = {"op": "residual", "body": [
        {"op": "pdo_conv", "fields": 2, "order": 2, "name": "inner"}]}
    assert refused(spec).path == "layers[2].body[0].name"
    spec["layers"][2] = {"op": "residual", "body": [{"op": "skip", "from": "enc"}]}
    err = refused(spec)
    assert err.path.startswith("layers[2].body[0]") and "skip" in str(err)


def test_unknown_keys_list_from() -> None:
    err = refused(unet(source="enc"))
    assert "allowed: name, from, mode" in str(err)


# --------------------------------------------------------------------------- equivariance


def features(model: ZooModel, x: torch.Tensor) -> torch.Tensor:
    """The map before the head, running the blocks directly with their kept outputs."""
    x = model.normalize(x)
    kept: list[torch.Tensor] = []
    blocks = list(model.blocks)[:-1]
    for block, keep, source in zip(blocks, model.keep, model.source, strict=False):
        x = block(x) if source < 0 else block(x, kept[source])
        if keep >= 0:
            kept.append(x)
    return x


@pytest.mark.parametrize("mode", ["concat", "add"])
@pytest.mark.parametrize("size", [10, 12])
def test_encoder_decoder_is_exactly_equivariant(mode: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(unet(size, mode)).double().eval()
    assert model.tapped
    plan = model.plan
    inp, out = plan.input.feature, plan.layers[-2].out.feature
    x = torch.rand(2, 1, size, size, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, logits = features(model, x), model(x)
        assert y.shape == (2, out.channels, size, size)
        elements = plan.input.group.grid_exact_elements
        assert len(elements) == 8
        for g in elements:
            gx = transform_features(x, inp, g)
            torch.testing.assert_close(features(model, gx), transform_features(y, out, g),
                                       atol=1e-10, rtol=0)
            torch.testing.assert_close(model(gx), logits, atol=1e-10, rtol=0)


def test_a_skip_reads_the_named_output() -> None:
    torch.manual_seed(0)
    model = build_model(unet()).eval()
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        tap = model.blocks[0](model.normalize(x))
        y = features(model, x)
        up = model.blocks[3](model.blocks[2](model.blocks[1](tap)))
        expected = model.blocks[5](torch.cat((up, tap), dim=1))
    torch.testing.assert_close(y, expected)


# --------------------------------------------------------------------------- export


def test_without_names_the_body_stays_a_sequential() -> None:
    spec = unet()
    del spec["layers"][0]["name"]
    spec["layers"].pop(4)
    model = build_model(spec)
    assert not model.tapped and isinstance(model.export().body, nn.Sequential)


def test_an_encoder_decoder_exports_to_every_format(tmp_path: Path) -> None:
    torch.manual_seed(0)
    s = load_spec(unet())
    model = build_model(s).eval()
    plain = model.export()
    assert isinstance(plain.body, TappedSequence)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".ts"), ("pt2", ".pt2")):
        report = export_model((model, s), fmt, tmp_path / f"m{suffix}", real_images=0,
                              classes=["a", "b", "c"])
        assert report.passed and report.rotation_max_rel < 1e-4
