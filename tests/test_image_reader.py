"""The one image reader (epdo.zoo.data.images): real files written by Pillow, read back as the
model's uint8 pixels; and `epdo predict`'s preprocessing reading files exactly as training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from epdo.exporters.runtime import InputError, Preprocessing, preprocess_input
from epdo.zoo.data.images import ImageError, decode_image, model_pixels
from epdo.zoo.transforms import to_unit_range

RNG = np.random.default_rng(12)


def _rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _gray(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width), dtype=np.uint8)


def _smooth_rgb(height: int, width: int) -> np.ndarray:
    """A gradient (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                     np.full_like(x, 128)], axis=-1).astype(np.uint8)


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def _native(path: Path, channels: int) -> np.ndarray:
    """Decoded at the file's own size (no resampling)."""
    with Image.open(path) as image:
        height, width = image.height, image.width
    pixels, _ = decode_image(path, channels, (height, width))
    return pixels


# ------------------------------------------------------------------- formats and modes


def test_gray_png_exact_and_copied_to_three_channels(tmp_path) -> None:
    gray = _gray(9, 13)
    path = _save(tmp_path / "g.png", gray)
    pixels, info = decode_image(path, 1, (9, 13))
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 9, 13)
    assert pixels.flags.writeable and pixels.flags.c_contiguous  # the caller's own array
    np.testing.assert_array_equal(pixels[0], gray)
    assert (info.width, info.height, info.mode, info.channels, info.bits) == (13, 9, "L", 1, 8)
    rgb = _native(path, 3)
    assert rgb.shape == (3, 9, 13)
    for c in range(3):
        np.testing.assert_array_equal(rgb[c], gray)


def test_rgb_png_exact_and_one_channel_is_pillows_luma(tmp_path) -> None:
    rgb = _rgb(10, 7)
    path = _save(tmp_path / "c.png", rgb)
    pixels, info = decode_image(path, 3, (10, 7))
    np.testing.assert_array_equal(pixels, rgb.transpose(2, 0, 1))
    assert (info.mode, info.channels, info.bits) == ("RGB", 3, 8)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(_native(path, 1)[0], luma)
    # ITU-R 601-2: L = R*299/1000 + G*587/1000 + B*114/1000, within Pillow's rounding
    expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luma - expected).max() <= 1.0


def test_rgba_alpha_is_dropped(tmp_path) -> None:
    rgb = _rgb(8, 8)
    alpha = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    alpha[0, :] = 0  # fully transparent pixels keep their colour
    path = _save(tmp_path / "a.png", np.dstack([rgb, alpha]))
    pixels, info = decode_image(path, 3, (8, 8))
    np.testing.assert_array_equal(pixels, rgb.transpose(2, 0, 1))
    assert (info.mode, info.channels) == ("RGBA", 3)


def test_palette_png_is_expanded(tmp_path) -> None:
    source = Image.fromarray(_rgb(12, 10)).quantize(colors=6)
    assert source.mode == "P"
    path = tmp_path / "p.png"
    source.save(path)
    with Image.open(path) as image:
        assert image.mode == "P"
        expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    pixels, info = decode_image(path, 3, (12, 10))
    np.testing.assert_array_equal(pixels, expected)
    assert info.channels == 3 and len(np.unique(pixels.reshape(3, -1), axis=1).T) <= 6


def test_palette_png_with_transparency(tmp_path) -> None:
    source = Image.fromarray(_rgb(6, 6)).quantize(colors=4)
    path = tmp_path / "pt.png"
    source.save(path, transparency=0)
    with Image.open(path) as image:
        assert "transparency" in image.info
        expected = np.asarray(image.convert("RGBA").convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_image(path, 3, (6, 6))[0], expected)


def test_jpeg(tmp_path) -> None:
    rgb = _smooth_rgb(16, 24)
    path = _save(tmp_path / "c.jpg", rgb, quality=95)
    pixels, info = decode_image(path, 3, (16, 24))
    with Image.open(path) as image:
        assert image.format == "JPEG"
        np.testing.assert_array_equal(pixels, np.asarray(image.convert("RGB")).transpose(2, 0, 1))
    assert (info.mode, info.channels, info.bits) == ("RGB", 3, 8)
    assert np.abs(pixels.astype(int) - rgb.transpose(2, 0, 1)).mean() < 3.0


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".tiff"])
@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_lossless_formats_are_exact(tmp_path, suffix, kind) -> None:
    array = _gray(7, 11) if kind == "gray" else _rgb(7, 11)
    path = _save(tmp_path / f"x{suffix}", array)
    channels = 1 if kind == "gray" else 3
    pixels, info = decode_image(path, channels, (7, 11))
    expected = array[None] if kind == "gray" else array.transpose(2, 0, 1)
    np.testing.assert_array_equal(pixels, expected)
    assert info.channels == channels and info.bits == 8


def test_16_bit_png_maps_the_full_range(tmp_path) -> None:
    values = np.concatenate([np.arange(0, 65536, 97), [65535, 32768, 128, 129, 1, 257, 256]])
    values = np.resize(values, 26 * 26).astype(np.uint16).reshape(26, 26)
    values[0, :4] = [65535, 32768, 0, 257]
    path = _save(tmp_path / "w.png", values)
    with Image.open(path) as image:
        assert image.mode == "I;16"  # really a 16-bit file
    pixels, info = decode_image(path, 1, (26, 26))
    assert (info.mode, info.channels, info.bits) == ("I;16", 1, 16)
    assert pixels[0, 0, :4].tolist() == [255, 128, 0, 1]
    expected = np.vectorize(lambda v: round(int(v) * 255 / 65535))(values)
    np.testing.assert_array_equal(pixels[0], expected)
    # gray 16-bit to RGB: the same 8-bit values in each channel
    rgb, _ = decode_image(path, 3, (26, 26))
    for c in range(3):
        np.testing.assert_array_equal(rgb[c], expected)


def test_float_tiff_reads_zero_to_one(tmp_path) -> None:
    values = np.array([[0.0, 0.5, 1.0, 2.0], [-1.0, 0.25, np.nan, 0.1]], dtype=np.float32)
    path = _save(tmp_path / "f.tif", values)
    with Image.open(path) as image:
        if image.mode != "F":
            pytest.skip(f"this Pillow writes a float TIFF as {image.mode}")
    pixels, info = decode_image(path, 1, (2, 4))
    assert (info.mode, info.bits) == ("F", 32)
    # round(clip(v, 0, 1) * 255), NaN read as 0
    assert pixels[0].tolist() == [[0, 128, 255, 255], [0, 64, 0, 26]]


# ------------------------------------------------------------------- fitting to the model size


def _bars(height: int, width: int, white: slice, axis: int) -> np.ndarray:
    """Black with a white band ``white`` along ``axis`` (1: columns, 0: rows)."""
    image = np.zeros((height, width), np.uint8)
    if axis == 1:
        image[:, white] = 255
    else:
        image[white, :] = 255
    return image


def test_center_crop_keeps_only_the_centre_and_resize_keeps_everything(tmp_path) -> None:
    # 40 wide x 20 high: left and right quarters black, the centre 20x20 white
    path = _save(tmp_path / "wide.png", _bars(20, 40, slice(10, 30), axis=1))
    crop, _ = decode_image(path, 1, (10, 10), "center_crop")
    assert crop.shape == (1, 10, 10)
    assert (crop == 255).all()
    resized, _ = decode_image(path, 1, (10, 10), "resize")
    assert resized.shape == (1, 10, 10)
    assert resized.min() == 0 and resized.max() == 255
    assert (resized[0, :, :2] == 0).all() and (resized[0, :, 3:7] == 255).all()


def test_center_crop_of_a_tall_image_to_a_wide_input(tmp_path) -> None:
    # 30x30 -> H=10, W=20 (aspect 2): the centred box is 30 wide, 15 high (rows 7..21)
    path = _save(tmp_path / "sq.png", _bars(30, 30, slice(7, 22), axis=0))
    crop, _ = decode_image(path, 1, (10, 20), "center_crop")
    assert crop.shape == (1, 10, 20) and (crop == 255).all()
    # a tall image to a square input: rows 10..30 of 41
    path = _save(tmp_path / "tall.png", _bars(41, 20, slice(10, 30), axis=0))
    crop, _ = decode_image(path, 1, (8, 8), "center_crop")
    assert (crop == 255).all()
    assert decode_image(path, 1, (8, 8), "resize")[0].min() == 0


def test_fits_agree_when_the_aspect_ratio_matches(tmp_path) -> None:
    path = _save(tmp_path / "c.png", _rgb(24, 36))
    np.testing.assert_array_equal(decode_image(path, 3, (8, 12), "resize")[0],
                                  decode_image(path, 3, (8, 12), "center_crop")[0])
    # same size: untouched
    np.testing.assert_array_equal(decode_image(path, 3, (24, 36), "center_crop")[0],
                                  decode_image(path, 3, (24, 36), "resize")[0])


def test_resize_is_pillows_bilinear(tmp_path) -> None:
    array = _rgb(30, 17)
    path = _save(tmp_path / "c.png", array)
    expected = np.asarray(Image.fromarray(array).resize((9, 12), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(path, 3, (12, 9))[0],
                                  expected.transpose(2, 0, 1))


def test_bad_channels_and_fit_are_image_errors() -> None:
    image = Image.fromarray(_gray(4, 4))
    with pytest.raises(ImageError, match="1 or 3 channels"):
        model_pixels(image, 2, (4, 4))
    with pytest.raises(ImageError, match="unknown fit 'stretch'"):
        model_pixels(image, 1, (4, 4), "stretch")


# ------------------------------------------------------------------- files that do not decode


def _one_line_image_error(path: Path, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        decode_image(path, kwargs.get("channels", 3), (8, 8))
    text = str(caught.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path, suffix) -> None:
    whole = _save(tmp_path / f"whole{suffix}", _rgb(24, 24))
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    assert "cannot decode the image" in _one_line_image_error(cut)


def test_garbage_and_empty_files(tmp_path) -> None:
    garbage = tmp_path / "g.png"
    garbage.write_bytes(b"this is not an image" * 20)
    assert "not an image file" in _one_line_image_error(garbage)
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    assert "not an image file" in _one_line_image_error(empty)
    eps = tmp_path / "x.png"  # a format Pillow could open with Ghostscript is never tried
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    assert "not an image file" in _one_line_image_error(eps)
    assert "no such file" in _one_line_image_error(tmp_path / "gone.png")


def test_pixel_limit_from_the_environment(tmp_path, monkeypatch) -> None:
    path = _save(tmp_path / "c.png", _rgb(12, 16))
    monkeypatch.setenv("EPDO_MAX_IMAGE_PIXELS", "100")
    text = _one_line_image_error(path)
    assert "16x12 = 192 pixels" in text and "EPDO_MAX_IMAGE_PIXELS" in text
    monkeypatch.setenv("EPDO_MAX_IMAGE_PIXELS", "192")
    assert decode_image(path, 3, (8, 8))[0].shape == (3, 8, 8)


# ------------------------------------------------------ predict reads files as training


def _parity_files(tmp_path: Path) -> list[Path]:
    wide = np.dstack([_bars(20, 40, slice(10, 30), axis=1)] * 3)
    sixteen = (RNG.integers(0, 65536, (18, 14))).astype(np.uint16)
    return [
        _save(tmp_path / "w.png", sixteen),
        _save(tmp_path / "j.jpg", _smooth_rgb(21, 33), quality=90),
        _save(tmp_path / "wide.png", wide),
        _save(tmp_path / "rgba.png", np.dstack([_rgb(15, 9), _gray(15, 9)])),
    ]


@pytest.mark.parametrize("fit", ["resize", "center_crop"])
@pytest.mark.parametrize("channels", [1, 3])
def test_predict_preprocessing_reads_files_as_training(tmp_path, fit, channels) -> None:
    pre = Preprocessing(channels=channels, size=(10, 12),
                        color="grayscale" if channels == 1 else "rgb", fit=fit)
    for path in _parity_files(tmp_path):
        served = preprocess_input(path, pre)
        pixels, _ = decode_image(path, channels, (10, 12), fit)
        assert served.dtype == np.float32 and served.shape == (channels, 10, 12)
        # the same 8-bit pixels ...
        np.testing.assert_array_equal(np.rint(served * 255.0).astype(np.uint8), pixels)
        # ... and the very model input the trainer makes of them (x / 255), bit for bit
        trained = to_unit_range(torch.from_numpy(pixels)).numpy()
        np.testing.assert_array_equal(served, trained)


def test_predict_refuses_what_training_refuses(tmp_path, monkeypatch) -> None:
    pre = Preprocessing(channels=3, size=(8, 8), color="rgb")
    garbage = tmp_path / "g.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputError):
        preprocess_input(garbage, pre)
    path = _save(tmp_path / "c.png", _rgb(12, 16))
    monkeypatch.setenv("EPDO_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(InputError, match="EPDO_MAX_IMAGE_PIXELS"):
        preprocess_input(path, pre)
