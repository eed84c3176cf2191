"""One image file -> the model's pixels: the one conversion that training, evaluation, export
verification and ``epdo predict`` share, so a file gives the same input everywhere.

For an image decoded by Pillow (its pixel count checked from the header first,
:data:`~epdo.zoo.envlimits.IMAGE_PIXELS`), :func:`model_pixels` returns ``(C, H, W)`` uint8:

1. **bit depth**: 8-bit modes are kept; 16-bit and 32-bit integer pixels (``I;16``, ``I``)
   are mapped to 8 bits by ``round(v * 255 / 65535)`` (values clipped to [0, 65535]), so
   the full 16-bit range is black to white; float pixels (``F``) are read as [0, 1] and
   mapped by ``round(clip(v, 0, 1) * 255)``;
2. **channels**: C = 1 is Pillow's ``L`` (ITU-R 601-2 luma for colour images), C = 3 is
   ``RGB`` (a gray image is copied to the three channels); alpha is dropped and palettes are
   expanded;
3. **fit** to the model's H×W: ``resize`` scales the whole image to W×H; ``center_crop``
   takes the largest centred box with the model's aspect ratio W/H and scales that box to
   W×H (the box is cut out first, so no pixel outside it reaches the input). Both use
   Pillow's bilinear filter, which averages over the footprint of an output pixel when
   shrinking (no aliasing).

The model then sees ``pixels / 255`` in [0, 1] (the exporter's ``scale``).

**Memory.** A decode holds the image in its own mode (Pillow decodes it whole, at most
:data:`~epdo.zoo.envlimits.IMAGE_PIXELS` pixels), plus one byte per pixel and channel for
its 8-bit copy, plus at most one more 8-bit copy for a crop, never a float copy of the whole
image: wide and float pixels are mapped to 8 bits in tiles of :data:`TILE_PIXELS` pixels,
a gray image for a colour model is copied to R, G and B only once it has the model's size,
and each copy is released as soon as the next one is made (the decoded file itself too,
in :func:`decode_image`). A 10000×10000 16-bit PNG (200 MB decoded) thus needs about
300 MB, a float TIFF of that size (400 MB decoded) about 500 MB.

Every path is opened by :func:`~epdo.zoo.files.open_regular`: a FIFO, a device or a folder
is an :class:`ImageError`, never a read that waits.

**Masks.** :func:`decode_mask` reads a segmentation mask (a grayscale or palette PNG whose
pixel values are class indices, 255 = ignore) through the same opening and the same limits,
and gives it the same geometry as an image of its size (the same ``fit`` box), scaled with
nearest-neighbour sampling: ``(H, W)`` uint8 class values.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..envlimits import IMAGE_PIXELS
from ..errors import EpdoError
from ..files import open_regular
from ..spec.schema import FITS
from ..values import first_line

__all__ = [
    "FITS",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "ImageError",
    "ImageInfo",
    "MASK_FORMATS",
    "MaskInfo",
    "TILE_PIXELS",
    "decode_image",
    "decode_mask",
    "model_pixels",
    "natural_channels",
]

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
"""The image formats (Pillow's names) a file may be in; Pillow's others (EPS, which runs
Ghostscript, among them) are never tried."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp",
                  ".ppm", ".pgm")
"""File name endings (any case) that a folder dataset reads as images."""

_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_WIDE_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
TILE_PIXELS = 1 << 20
"""Pixels of a 16-bit, 32-bit or float image mapped to 8 bits at a time (its float64 copy
takes 8 MiB)."""


class ImageError(EpdoError, ValueError):
    """A file that is not an image this reader takes, or that does not decode (truncated,
    corrupt, too many pixels). Its text is one line without the file name."""


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds before conversion.

    Attributes:
        width, height: its size in pixels.
        mode: Pillow's mode (``L``, ``RGB``, ``I;16``, ...).
        channels: 1 for gray modes, 3 for colour ones (alpha not counted).
        bits: bits per channel (8, 16, or 32 for ``I`` / ``F``).
    """

    width: int
    height: int
    mode: str
    channels: int
    bits: int


def natural_channels(mode: str) -> int:
    """1 for Pillow's gray modes (``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``), else 3."""
    return 1 if mode in _GRAY_MODES else 3


def _bits(mode: str) -> int:
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _mapped(values: np.ndarray, mode: str) -> np.ndarray:
    """Wide integer or float pixel values (float64, overwritten) -> uint8, as the module
    docstring says."""
    if mode == "F":
        np.nan_to_num(values, copy=False, nan=0.0)
        np.clip(values, 0.0, 1.0, out=values)
        np.multiply(values, 255.0, out=values)
    else:
        np.clip(values, 0.0, 65535.0, out=values)
        np.multiply(values, 255.0 / 65535.0, out=values)
    return np.rint(values, out=values).astype(np.uint8)


def _to_8bit(image: Any) -> Any:
    """An image in an 8-bit mode: wide integer and float pixels mapped as the module
    docstring says, :data:`TILE_PIXELS` at a time (the values are those of mapping the
    whole image at once: the map is per pixel); 8-bit modes as they are."""
    from PIL import Image

    mode = image.mode
    if mode not in _WIDE_MODES and mode != "F":
        return image
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    tile_w = max(1, min(width, TILE_PIXELS))
    tile_h = max(1, TILE_PIXELS // tile_w)
    for top in range(0, height, tile_h):
        for left in range(0, width, tile_w):
            right, bottom = min(width, left + tile_w), min(height, top + tile_h)
            tile = image.crop((left, top, right, bottom))
            try:
                values = np.array(tile, dtype=np.float64)  # its own, writable copy
            finally:
                tile.close()
            out[top:bottom, left:right] = _mapped(values, mode)
    return Image.fromarray(out)


class _Steps:
    """The image being converted, one step after the other: each step's input is closed
    (its pixels freed) once the step's result is there, except the caller's own image
    unless it was handed over (``consume``)."""

    def __init__(self, image: Any, consume: bool) -> None:
        self.given, self.image, self.consume = image, image, consume

    def replace(self, result: Any) -> None:
        """Make ``result`` the current image, releasing the previous one."""
        previous, self.image = self.image, result
        if previous is not result and (previous is not self.given or self.consume):
            previous.close()


def fit_box(width: int, height: int, size: tuple[int, int],
             fit: str) -> tuple[int, int, int, int]:
    """The source box ``(left, top, right, bottom)`` in whole pixels that becomes the H×W
    input: the whole image for ``resize``; for ``center_crop`` the largest centred box of
    aspect W/H (its free side rounded to whole pixels, ``left = (width - box_w) // 2``,
    likewise ``top``)."""
    if fit == "resize":
        return (0, 0, width, height)
    out_h, out_w = size
    if width * out_h > height * out_w:  # too wide: keep the full height
        box_w, box_h = min(width, max(1, round(height * out_w / out_h))), height
    else:
        box_w, box_h = width, min(height, max(1, round(width * out_h / out_w)))
    left, top = (width - box_w) // 2, (height - box_h) // 2
    return (left, top, left + box_w, top + box_h)


def model_pixels(image: Any, channels: int, size: tuple[int, int], fit: str = "resize",
                 *, consume: bool = False) -> np.ndarray:
    """A decoded Pillow image -> the model's pixels ``(channels, H, W)`` uint8.

    Args:
        image: a Pillow image (any mode Pillow decodes).
        channels: 1 (gray) or 3 (RGB).
        size: the model's ``(H, W)``.
        fit: ``resize`` or ``center_crop`` (module docstring).
        consume: ``image`` is handed over: it is closed (its pixels freed) as soon as its
            first converted copy exists, so the two are never held longer than needed.
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ImageError(f"a model reads images as 1 or 3 channels, not {channels}")
    if fit not in FITS:
        raise ImageError(f"unknown fit {fit!r}; use one of {', '.join(FITS)}")
    steps = _Steps(image, consume)
    steps.replace(_to_8bit(steps.image))
    if steps.image.mode == "P" and "transparency" in steps.image.info:
        steps.replace(steps.image.convert("RGBA"))
    target = "L" if channels == 1 else "RGB"
    # a gray image for a colour model is fitted first, then copied to R, G and B: Pillow
    # resamples each channel alike, so the values are the same, at a third of the memory
    gray_to_rgb = target == "RGB" and steps.image.mode == "L"
    if steps.image.mode != target and not gray_to_rgb:
        steps.replace(steps.image.convert(target))
    height, width = size
    box = fit_box(steps.image.width, steps.image.height, (height, width), fit)
    if box != (0, 0, steps.image.width, steps.image.height):
        # crop first: Pillow's resize(box=...) would also weigh pixels just outside the box
        steps.replace(steps.image.crop(box))
    if steps.image.size != (width, height):
        steps.replace(steps.image.resize((width, height), Image.Resampling.BILINEAR))
    if gray_to_rgb:
        steps.replace(steps.image.convert("RGB"))
    pixels = np.asarray(steps.image, dtype=np.uint8)
    pixels = np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
    # Pillow's buffer is read-only (a gray image is not copied above): the caller owns a copy
    pixels = pixels if pixels.flags.writeable else pixels.copy()
    if steps.image is not image:
        steps.image.close()
    return pixels


@contextlib.contextmanager
def _opened(file: str | os.PathLike[str] | BinaryIO) -> Iterator[BinaryIO]:
    """``file`` itself when it is open, else the path opened by
    :func:`~epdo.zoo.files.open_regular` (closed afterwards); ImageError when it cannot be:
    missing, a folder, a FIFO, a device, unreadable."""
    if not isinstance(file, (str, os.PathLike)):
        yield file
        return
    try:
        opened = open_regular(file)
    except FileNotFoundError as exc:
        raise ImageError("no such file (it was moved or deleted)") from exc
    except OSError as exc:
        raise ImageError(exc.strerror or first_line(exc)) from exc
    with opened:
        yield opened


@contextlib.contextmanager
def _checked_image(file: str | os.PathLike[str] | BinaryIO,
                   formats: tuple[str, ...] = IMAGE_FORMATS) -> Iterator[Any]:
    """The Pillow image of ``file`` (opened by :func:`_opened`), its pixel count checked from
    the header against :data:`~epdo.zoo.envlimits.IMAGE_PIXELS` and Pillow's
    decompression-bomb limit, not decoded yet (the caller calls ``load()``). Every failure,
    inside the ``with`` block too, is one :class:`ImageError`."""
    from PIL import Image, UnidentifiedImageError

    limit = IMAGE_PIXELS.value()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _opened(file) as opened, Image.open(opened, formats=formats) as image:
                width, height = image.size
                if width * height > limit:
                    raise ImageError(f"the image is {width}x{height} = {width * height:,} "
                                     f"pixels, over the limit of {limit:,} "
                                     f"({IMAGE_PIXELS.advice()})")
                yield image
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image is over Pillow's decompression-bomb limit "
                         f"({first_line(exc)})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not an image file Pillow can read (accepted: "
                         f"{', '.join(formats)})") from exc
    except FileNotFoundError as exc:
        raise ImageError("no such file (it was moved or deleted)") from exc
    except Exception as exc:  # a corrupt image: OSError, ValueError, SyntaxError, ...
        raise ImageError(f"cannot decode the image ({first_line(exc)})") from exc


def decode_image(file: str | os.PathLike[str] | BinaryIO, channels: int,
                 size: tuple[int, int], fit: str = "resize") -> tuple[np.ndarray, ImageInfo]:
    """Read one image file (a path or an open binary file) -> ``(pixels, info)``: the model's
    pixels ``(channels, H, W)`` uint8 (:func:`model_pixels`) and what the file held.

    The pixel count is checked from the header before anything is decoded, and the whole
    image is decoded (a truncated file is an error, never a half-black image). A path is
    opened only when it is a regular file (:func:`~epdo.zoo.files.open_regular`).

    Raises:
        ImageError: not an image in :data:`IMAGE_FORMATS`, truncated or corrupt, more
            pixels than :data:`~epdo.zoo.envlimits.IMAGE_PIXELS` allows, or a path that is
            missing or not a regular file.
    """
    with _checked_image(file) as image:
        image.load()
        info = ImageInfo(image.width, image.height, image.mode, natural_channels(image.mode),
                         _bits(image.mode))
        return model_pixels(image, channels, size, fit, consume=True), info


# --------------------------------------------------------------------------- masks

MASK_FORMATS = ("PNG",)
"""A segmentation mask is a PNG: lossless, so a pixel keeps its class index."""
_MASK_MODES = {"L": 1, "P": 1, "1": 1}
_LOW_BITS = {"L;2": 85, "L;4": 17}
"""Pillow's raw modes of 2- and 4-bit grayscale PNGs, and the factor by which Pillow scales
their values to 0..255 (undone, so a stored 3 reads as class 3)."""
_MODE_NAMES = {"RGB": "colour (RGB)", "RGBA": "colour with alpha (RGBA)",
               "LA": "grayscale with alpha (LA)", "PA": "palette with alpha (PA)",
               "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale", "I": "32-bit integer",
               "F": "32-bit float"}


@dataclass(frozen=True)
class MaskInfo:
    """What a mask file holds before it is fitted.

    Attributes:
        width, height: its size in pixels.
        mode: Pillow's mode (``L``, ``P`` or ``1``).
        values: the distinct class values its pixels hold, ascending (255 is ignore).
    """

    width: int
    height: int
    mode: str
    values: tuple[int, ...]


def _mask_values(image: Any, rawmode: str) -> np.ndarray:
    """The class value of every pixel of a loaded ``L``, ``P`` or ``1`` image: (H, W) uint8.
    A palette's indices are the values; a 1-bit image gives 0 and 1; 2- and 4-bit grayscale
    give their stored values (:data:`_LOW_BITS`)."""
    values = np.array(image, dtype=np.uint8)  # "1" reads as bool: 0 and 1
    scale = _LOW_BITS.get(rawmode)
    if scale is not None:
        values //= scale
    return values


def decode_mask(file: str | os.PathLike[str] | BinaryIO, size: tuple[int, int],
                fit: str = "resize") -> tuple[np.ndarray, MaskInfo]:
    """Read one segmentation mask -> ``(classes (H, W) uint8, info)``.

    The file must be a PNG (:data:`MASK_FORMATS`) in grayscale (``L``, 8 bits or fewer;
    1-bit images give 0 and 1) or palette (``P``: the palette index is the value) mode; its
    pixel value is the class index, 255 is ignore. It is opened and checked exactly as
    :func:`decode_image` does (regular file, :data:`~epdo.zoo.envlimits.IMAGE_PIXELS`,
    Pillow's decompression-bomb limit, decoded whole) and given the same geometry as an image
    of its size with the same ``fit``: the same box (:func:`fit_box`) cut out, then scaled
    to ``size`` ``(H, W)`` with nearest-neighbour sampling (Pillow's ``NEAREST`` takes the
    source pixel under each output pixel's centre, the centres that ``BILINEAR`` weighs
    around), so no value is invented.

    Raises:
        ImageError: not a PNG, another mode (colour, alpha, 16-bit, ...), or any failure of
            :func:`decode_image`'s.
    """
    from PIL import Image

    if fit not in FITS:
        raise ImageError(f"unknown fit {fit!r}; use one of {', '.join(FITS)}")
    with _checked_image(file, MASK_FORMATS) as image:
        mode = image.mode
        if mode not in _MASK_MODES:
            name = _MODE_NAMES.get(mode, mode)
            raise ImageError(f"the mask is {name}; a mask is a grayscale (L) or palette (P) "
                             "PNG whose pixel values are class indices (255: ignore)")
        rawmode = str(image.tile[0][3] if image.tile else mode)
        image.load()
        values = _mask_values(image, rawmode)
    height, width = values.shape
    counts = np.bincount(values.ravel(), minlength=256)
    info = MaskInfo(width, height, mode, tuple(int(v) for v in np.flatnonzero(counts)))
    out_h, out_w = size
    box = fit_box(width, height, (out_h, out_w), fit)
    if box == (0, 0, width, height) and (height, width) == (out_h, out_w):
        return values, info
    with Image.fromarray(values) as plain:
        with plain.crop(box) as cut, cut.resize((out_w, out_h), Image.Resampling.NEAREST) \
                as fitted:
            return np.array(fitted, dtype=np.uint8), info
