"""Training augmentation: the resized crop, the vertical flip, the order of the epoch's
draws and the spec's ``train.augment`` section."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from epdo.zoo.spec import AugmentSpec, SpecError, load_spec
from epdo.zoo.training import trainer
from epdo.zoo.training.augment import (
    AugmentDraws,
    crop_batch,
    crop_boxes,
    flip_batch,
    resized_crop_batch,
    vflip_batch,
)
from epdo.zoo.training.seeding import epoch_generator
from epdo.zoo.transforms import rotate_images

OLD = {"rotate": True, "flip": True, "crop_padding": 2}
NEW = {**OLD, "vflip": True, "resized_crop": {"scale": [0.3, 0.9], "ratio": [0.5, 2.0]}}


def images(b: int = 4, c: int = 2, h: int = 12, w: int = 12) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


def spec_dict(augment: Any) -> dict[str, Any]:
    return {
        "name": "tiny", "group": "C4", "input": {"channels": 1, "size": 16},
        "layers": [{"op": "pdo_conv", "fields": 4}, {"op": "head", "classes": 10}],
        "train": {"augment": augment},
    }


def bilinear_reference(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The resized crop of one (H, W) image, one output pixel at a time: pixel (i, j)
    interpolates the image at (top + (i + 1/2) h / H, left + (j + 1/2) w / W) (fractions of
    the sides), i.e. at pixel coordinates y = that * H - 1/2 (pixel k's centre at k),
    clamped to the first and last pixel centres."""
    H, W = image.shape
    left, top, w, h = box
    out = np.empty_like(image)
    for i in range(H):
        for j in range(W):
            y = min(max((top + (i + 0.5) * h / H) * H - 0.5, 0.0), H - 1.0)
            x = min(max((left + (j + 0.5) * w / W) * W - 0.5, 0.0), W - 1.0)
            y0, x0 = min(int(math.floor(y)), H - 2), min(int(math.floor(x)), W - 2)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * image[y0, x0] + (1 - fy) * fx * image[y0, x0 + 1]
                         + fy * (1 - fx) * image[y0 + 1, x0] + fy * fx * image[y0 + 1, x0 + 1])
    return out


# --------------------------------------------------------------------------- resized crop


@pytest.mark.parametrize("shape", [(12, 12), (10, 14)])
def test_the_whole_image_box_gives_back_the_image(shape: tuple[int, int]) -> None:
    x = images(3, 2, *shape)
    out = resized_crop_batch(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out, x, atol=1e-6)


def test_two_pixels_by_hand() -> None:
    # [a, b] cut to its left half: output pixel 0 samples x = 0.125 * 2 - 1/2 = -1/4 (left of
    # a's centre: a); pixel 1 samples x = 0.375 * 2 - 1/2 = 1/4: 3/4 a + 1/4 b
    a, b = 2.0, 10.0
    x = torch.tensor([[[[a, b]]]])
    out = resized_crop_batch(x, torch.tensor([[0.0, 0.0, 0.5, 1.0]]))
    assert torch.allclose(out, torch.tensor([[[[a, 0.75 * a + 0.25 * b]]]]), atol=1e-6)


def test_the_left_half_is_the_interpolated_left_half() -> None:
    H, W = 8, 10
    x = images(2, 3, H, W)
    out = resized_crop_batch(x, torch.tensor([[0.0, 0.0, 0.5, 1.0]] * 2))
    upscaled = F.interpolate(x[..., : W // 2], size=(H, W), mode="bilinear",
                             align_corners=False)
    # the same samples, except the last column: it lies between the crop's last pixel and
    # the one right of it, which the resized crop blends in and interpolate (which sees the
    # cut-out part alone) replaces by the crop's last pixel
    assert torch.allclose(out[..., :-1], upscaled[..., :-1], atol=1e-6)
    assert not torch.allclose(out[..., -1], upscaled[..., -1], atol=1e-3)
    expected = bilinear_reference(x[0, 0].double().numpy(), (0.0, 0.0, 0.5, 1.0))
    assert np.allclose(out[0, 0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("box", [(0.1, 0.25, 0.6, 0.45), (0.3, 0.0, 0.7, 1.0),
                                 (0.0, 0.5, 0.35, 0.5)])
def test_any_box_matches_the_pixel_by_pixel_reference(
    box: tuple[float, float, float, float],
) -> None:
    x = images(2, 1, 9, 13)
    boxes = torch.tensor([box, (0.0, 0.0, 1.0, 1.0)], dtype=torch.float64)
    out = resized_crop_batch(x, boxes)
    for b, one in enumerate(boxes.tolist()):
        expected = bilinear_reference(x[b, 0].double().numpy(), tuple(one))
        assert np.allclose(out[b, 0].numpy(), expected, atol=1e-5), one


def test_crop_boxes_have_the_drawn_area_and_pixel_aspect_ratio() -> None:
    s, r = 0.3, 1.5
    crops = torch.tensor([[s, math.log(r), 0.0, 1.0], [s, math.log(r), 0.5, 0.25]],
                         dtype=torch.float64)
    square = crop_boxes(crops, 20, 20)
    assert torch.allclose(square[:, 2], torch.full((2,), math.sqrt(s * r), dtype=torch.float64))
    assert torch.allclose(square[:, 3], torch.full((2,), math.sqrt(s / r), dtype=torch.float64))
    w, h = square[0, 2].item(), square[0, 3].item()
    # u = 0 at the left edge, v = 1 at the bottom edge; u = 1/2 centred
    assert square[0, 0] == 0.0 and square[0, 1] == pytest.approx(1.0 - h)
    assert square[1, 0] == pytest.approx(0.5 * (1.0 - w))
    H, W = 10, 30
    wide = crop_boxes(crops, H, W)
    w_px, h_px = wide[0, 2].item() * W, wide[0, 3].item() * H
    assert w_px / h_px == pytest.approx(r) and w_px * h_px == pytest.approx(s * H * W)
    # a box too wide for the image is clipped to the whole width and stays inside
    clipped = crop_boxes(torch.tensor([[0.9, math.log(4.0), 0.7, 0.7]], dtype=torch.float64),
                         16, 16)
    assert clipped[0, 2] == 1.0 and clipped[0, 0] == 0.0
    assert clipped[0, 3] == pytest.approx(math.sqrt(0.9 / 4.0))


def test_drawn_boxes_lie_inside_the_image_with_areas_and_ratios_in_range() -> None:
    spec = AugmentSpec(resized_crop={"scale": [0.2, 0.6], "ratio": [0.5, 2.0]})
    draws = AugmentDraws.draw(spec, 2000, epoch_generator(3, 1, "augment"))
    assert draws.crops.shape == (2000, 4) and draws.crops.dtype == torch.float64
    boxes = crop_boxes(draws.crops, 24, 24)
    left, top, w, h = boxes.unbind(-1)
    assert (left >= 0).all() and (top >= 0).all()
    assert (left + w <= 1 + 1e-12).all() and (top + h <= 1 + 1e-12).all()
    area, ratio = w * h, w / h
    assert area.min() >= 0.2 - 1e-12 and area.max() <= 0.6 + 1e-12  # no clipping here
    assert ratio.min() >= 0.5 - 1e-12 and ratio.max() <= 2.0 + 1e-12
    # uniform area and log ratio: the means of the ranges
    assert area.mean().item() == pytest.approx(0.4, abs=0.01)
    assert torch.log(ratio).mean().item() == pytest.approx(0.0, abs=0.03)


# --------------------------------------------------------------------------- flips and draws


def test_vflip_flips_exactly_the_chosen_images() -> None:
    x = images(4)
    chosen = torch.tensor([True, False, False, True])
    out = vflip_batch(x, chosen)
    for b in range(4):
        expected = x[b].flip(-2) if chosen[b] else x[b]
        assert torch.equal(out[b], expected), b
    assert not torch.equal(x[0].flip(-2), x[0])


def test_draws_depend_only_on_the_seed_and_the_number_of_images() -> None:
    spec = AugmentSpec.model_validate(NEW)
    a = AugmentDraws.draw(spec, 40, epoch_generator(7, 3, "augment"))
    b = AugmentDraws.draw(spec, 40, epoch_generator(7, 3, "augment"))
    c = AugmentDraws.draw(spec, 40, epoch_generator(7, 4, "augment"))
    for name in ("angles", "flips", "offsets", "vflips", "crops"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.crops, c.crops) and not torch.equal(a.vflips, c.vflips)
    assert a.vflips.dtype == torch.bool and 0 < int(a.vflips.sum()) < 40


def test_new_options_leave_the_old_draws_as_they_were() -> None:
    n = 30
    old = AugmentDraws.draw(AugmentSpec.model_validate(OLD), n, epoch_generator(5, 2, "augment"))
    new = AugmentDraws.draw(AugmentSpec.model_validate(NEW), n, epoch_generator(5, 2, "augment"))
    for name in ("angles", "flips", "offsets"):
        assert torch.equal(getattr(old, name), getattr(new, name)), name
    assert old.vflips is None and old.crops is None
    # and the old draws are the ones made before the new options existed, in that order
    g = epoch_generator(5, 2, "augment")
    assert torch.equal(old.angles, torch.rand(n, generator=g, dtype=torch.float64) * 360.0)
    assert torch.equal(old.flips, torch.rand(n, generator=g) < 0.5)
    assert torch.equal(old.offsets, torch.randint(0, 5, (n, 2), generator=g))


def test_apply_is_the_steps_in_order_and_looked_up_by_image() -> None:
    n = 20
    draws = AugmentDraws.draw(AugmentSpec.model_validate(NEW), n,
                              epoch_generator(1, 0, "augment"))
    assert draws.active
    x = images(n, 1, 16, 16)
    index = torch.tensor([13, 2, 7, 19, 0])
    out = draws.apply(x[index], index)
    y = resized_crop_batch(x[index], crop_boxes(draws.crops[index], 16, 16))
    y = rotate_images(y, draws.angles[index])
    y = flip_batch(y, draws.flips[index])
    y = vflip_batch(y, draws.vflips[index])
    y = crop_batch(y, 2, draws.offsets[index])
    assert torch.equal(out, y)
    # the same image gets the same transform in any batch, in any order
    backwards = index.flip(0)
    assert torch.equal(draws.apply(x[backwards], backwards), out.flip(0))
    alone = draws.apply(x[[7]], torch.tensor([7]))
    assert torch.allclose(alone[0], out[2], atol=1e-6)


def test_resized_crop_alone_and_moving_the_draws() -> None:
    spec = AugmentSpec(resized_crop={})
    draws = AugmentDraws.draw(spec, 6, epoch_generator(0, 0, "augment"))
    assert draws.active and draws.angles is None and draws.vflips is None
    moved = draws.to(torch.device("cpu"))
    assert torch.equal(moved.crops, draws.crops) and moved.padding == draws.padding
    x = images(6, 2, 10, 14)
    index = torch.arange(6)
    out = moved.apply(x, index)
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert torch.equal(out, resized_crop_batch(x, crop_boxes(draws.crops, 10, 14)))


# --------------------------------------------------------------------------- the spec


def test_spec_defaults_shorthand_and_round_trip() -> None:
    off = load_spec(spec_dict({"rotate": True})).train.augment
    assert off.vflip is False and off.resized_crop is None
    on = load_spec(spec_dict({"vflip": True, "resized_crop": True})).train.augment
    assert on.vflip and on.resized_crop is not None
    assert on.resized_crop.scale == [0.08, 1.0] and on.resized_crop.ratio == [0.75, 4 / 3]
    assert load_spec(spec_dict({"resized_crop": {}})).train.augment == on.model_copy(
        update={"vflip": False})
    assert load_spec(spec_dict({"resized_crop": False})).train.augment.resized_crop is None
    # whole numbers are numbers: scale [1, 1] is the whole image
    whole = load_spec(spec_dict({"resized_crop": {"scale": [1, 1]}})).train.augment
    assert whole.resized_crop.scale == [1.0, 1.0]
    spec = load_spec(spec_dict(NEW))
    assert load_spec(spec.resolved()) == spec
    assert load_spec(json.loads(json.dumps(spec.resolved()))) == spec


@pytest.mark.parametrize(
    ("resized_crop", "where", "says"),
    [
        ({"scale": [0.5, 0.2]}, "train.augment.resized_crop.scale", "0 < min <= max"),
        ({"scale": [0, 1]}, "train.augment.resized_crop.scale", "0 < min <= max"),
        ({"scale": [-0.1, 0.5]}, "train.augment.resized_crop.scale", "0 < min <= max"),
        ({"scale": [0.2, 1.5]}, "train.augment.resized_crop.scale", "at most 1"),
        ({"scale": [0.2]}, "train.augment.resized_crop.scale", "two numbers"),
        ({"scale": "0.2"}, "train.augment.resized_crop.scale", "list"),
        ({"ratio": [2.0, 0.5]}, "train.augment.resized_crop.ratio", "0 < min <= max"),
        ({"ratio": [0, 2]}, "train.augment.resized_crop.ratio", "0 < min <= max"),
        ({"ratio": [-1.0, 2.0]}, "train.augment.resized_crop.ratio", "0 < min <= max"),
        ({"ratio": [0.5, 1.0, 2.0]}, "train.augment.resized_crop.ratio", "two numbers"),
        ({"ratio": [0.5, float("inf")]}, "train.augment.resized_crop.ratio[1]", "finite"),
        ({"size": 0.5}, "train.augment.resized_crop.size", "unknown key 'size'"),
        (3, "train.augment.resized_crop", "dictionary"),
    ],
)
def test_bad_resized_crop_is_one_located_error(resized_crop: Any, where: str, says: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_dict({"resized_crop": resized_crop}))
    message = str(info.value)
    assert message.startswith(f"{where}:") and says in message, message


def test_vflip_must_be_a_boolean() -> None:
    with pytest.raises(SpecError, match=r"train\.augment\.vflip"):
        load_spec(spec_dict({"vflip": 1}))


def test_no_augment_turns_every_option_off(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path) -> None:
    class Stop(Exception):
        pass

    seen: dict[str, Any] = {}
    real = trainer.with_overrides

    def spy(spec: Any, **overrides: Any) -> Any:
        seen["spec"] = real(spec, **overrides)
        raise Stop

    monkeypatch.setattr(trainer, "with_overrides", spy)
    with pytest.raises(Stop):
        trainer.train(spec_dict(NEW), augment=False, out=tmp_path / "run")
    augment = seen["spec"].train.augment
    assert augment == AugmentSpec()
    assert not AugmentDraws.draw(augment, 5, epoch_generator(0, 0, "augment")).active
