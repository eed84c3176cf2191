"""How an image file, a ``.npy`` file or an array becomes one model input, exactly as
training read its images.

An artifact's metadata says how (:class:`Preprocessing`, read by
:meth:`Preprocessing.from_metadata`): the model input ``(C, H, W)``, grayscale or RGB, the
fit (``resize`` or ``center_crop``) and the 8-bit scale (1/255). Image files go through the
one image reader of training (:func:`epdo.zoo.data.images.decode_image`: the header's pixel
count is checked against :data:`~epdo.exporters.limits.MAX_IMAGE_PIXELS` before anything is
decoded); a ``.npy`` file's header is checked before its data is read (it must hold one
model input); only regular files are read (a FIFO or a device is an input error, never a
hang).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epdo.zoo.data.images import ImageError, decode_image, model_pixels

from .artifact import ArtifactError, InputError, ServingError, first_line, validate_metadata
from .files import open_regular

__all__ = ["Preprocessing", "preprocess_input", "read_input"]


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model inputs, read from the artifact's metadata.

    Attributes:
        channels: C of the model input (1 for ``grayscale``, 3 for ``rgb``).
        size: ``(H, W)`` of the model input; image files are fitted to it as ``fit``
            says (:mod:`epdo.zoo.data.images`, the conversion training used).
        color: ``"grayscale"`` or ``"rgb"``: the Pillow mode (``L`` / ``RGB``) images are
            converted to.
        scale: factor from 8-bit pixel values to [0, 1] (``1/255``).
        fit: ``resize`` or ``center_crop`` (artifacts written before it existed: resize).
        mean, std: per-channel normalization; applied by the runtime only when
            ``normalized_in_graph`` is false (the exporter puts it inside the graph).
    """

    channels: int
    size: tuple[int, int]
    color: str = "grayscale"
    scale: float = 1.0 / 255.0
    fit: str = "resize"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    normalized_in_graph: bool = True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one model input."""
        return (self.channels, *self.size)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any],
                      input_shape: Sequence[int] | None = None) -> Preprocessing:
        """The preprocessing of an artifact from its decoded metadata.

        ``input_shape`` (``[C, H, W]`` of the graph) is the fallback when the metadata has
        no ``epdo.input_shape``. The values are checked as
        :func:`epdo.exporters.metadata.validate_metadata` does (types, finite numbers, the
        size limit). Raises ServingError when they are wrong or neither gives a shape.
        """
        where = "the model"
        try:
            validate_metadata(metadata, where, complete=False)
            shape = metadata.get("epdo.input_shape", input_shape)
            if shape is None or len(shape) != 3 or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                raise ServingError(f"the model does not say its input shape [C, H, W] "
                                   f"(epdo.input_shape: {shape!r})")
            if "epdo.input_shape" not in metadata:  # the graph's: the same checks
                validate_metadata({**metadata, "epdo.input_shape": list(shape)}, where,
                                  complete=False)
        except ArtifactError as exc:
            raise ServingError(str(exc)) from exc
        channels, height, width = (int(d) for d in shape)
        pre = metadata.get("epdo.preprocess") or {}
        color = pre.get("color", "grayscale" if channels == 1 else "rgb")
        mean = tuple(float(m) for m in metadata.get("epdo.input_mean", [0.0]))
        std = tuple(float(s) for s in metadata.get("epdo.input_std", [1.0]))
        return cls(channels=channels, size=(height, width), color=color,
                   scale=float(pre.get("scale", 1.0 / 255.0)),
                   fit=str(pre.get("fit", "resize")), mean=mean, std=std,
                   normalized_in_graph=bool(pre.get("normalized_in_graph", True)))


def _scaled(pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8 pixels times ``scale`` as float32; the exporter's 1/255 is a division by 255,
    as in training (:func:`epdo.zoo.transforms.to_unit_range`), so both give the same bits."""
    divisor = 1.0 / scale
    values = pixels.astype(np.float32)
    if abs(divisor - round(divisor)) < 1e-6:
        return np.ascontiguousarray(values / np.float32(round(divisor)))
    return np.ascontiguousarray(values * np.float32(scale))


def _image_to_array(image: Any, pre: Preprocessing) -> np.ndarray:
    """A Pillow image -> ``(C, H, W)`` float32: the model's pixels
    (:func:`~epdo.zoo.data.images.model_pixels`, as in training) times ``pre.scale``."""
    try:
        pixels = model_pixels(image, pre.channels, pre.size, pre.fit)
    except ImageError as exc:
        raise InputError(str(exc)) from exc
    return _scaled(pixels, pre.scale)


def _array_to_input(array: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """An array (H, W), (C, H, W) or (H, W, C), uint8 or float in [0, 1] -> ``(C, H, W)``."""
    array = np.asarray(array)
    c, h, w = pre.input_shape
    if array.dtype == np.uint8:
        values = _scaled(array, pre.scale)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise InputError("the array holds NaN or infinite values")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise InputError(f"float values must lie in [0, 1], got [{values.min():.3g}, "
                             f"{values.max():.3g}] (or store uint8 pixels)")
    else:
        raise InputError(f"expected uint8 or float pixels, got dtype {array.dtype}")
    if values.shape == (c, h, w):
        return np.ascontiguousarray(values)
    if c == 1 and values.shape == (h, w):
        return np.ascontiguousarray(values[None])
    if values.shape == (h, w, c):
        return np.ascontiguousarray(values.transpose(2, 0, 1))
    raise _shape_error(values.shape, pre)


def preprocess_input(source: str | os.PathLike[str] | np.ndarray | Any,
                     pre: Preprocessing) -> np.ndarray:
    """One model input ``(C, H, W)`` float32 in [0, 1] from an image, a file or an array
    (:func:`read_input` without the source's size).

    Args:
        source: a path to an image Pillow reads (PNG, JPEG, ...: converted to grayscale or
            RGB, resized bilinearly to the model size, scaled by ``pre.scale``), a path to
            a ``.npy`` file or a numpy array (uint8, or float in [0, 1]; shape (H, W) for
            one-channel models, (C, H, W) or (H, W, C); not resized), a Pillow image, or an
            open binary file of an encoded image (bytes a server received).
        pre: the artifact's preprocessing.

    Raises:
        InputError: unreadable file, not an image, wrong dtype, range or shape.
    """
    return read_input(source, pre)[0]


def read_input(source: str | os.PathLike[str] | np.ndarray | Any,
               pre: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """``(input, (H, W))``: the model input of :func:`preprocess_input` and the source's own
    size (an image's before it was fitted; an array is the model's size), to map a
    per-pixel answer back onto the image."""
    if isinstance(source, np.ndarray):
        return _array_to_input(source, pre), pre.size
    if not isinstance(source, (str, os.PathLike)):
        from PIL import Image

        if isinstance(source, Image.Image):
            return _image_to_array(source, pre), (source.height, source.width)
        if hasattr(source, "read") and hasattr(source, "seek"):
            return _read_image(source, pre)
        raise InputError(f"cannot preprocess a {type(source).__name__}")
    path = Path(source)
    try:
        file = open_regular(path)
    except OSError as exc:
        raise InputError(exc.strerror or first_line(exc)) from exc
    with file:
        if path.suffix.lower() == ".npy":
            return _array_to_input(_read_npy(file, pre), pre), pre.size
        return _read_image(file, pre)


def _shape_error(shape: tuple[int, ...], pre: Preprocessing) -> InputError:
    c, h, w = pre.input_shape
    accepted = f"({h}, {w}), " if c == 1 else ""
    return InputError(f"expected shape {accepted}({c}, {h}, {w}) or ({h}, {w}, {c}), "
                      f"got {tuple(shape)}")


def _read_npy(file: Any, pre: Preprocessing) -> np.ndarray:
    """The array of an open ``.npy`` file, its header checked before any data is read: a
    shape the model takes, uint8 or float, and as many data bytes as the header declares
    (a crafted header cannot make it allocate more than one model input)."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(file)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(file)
        else:
            raise InputError(f"not a readable .npy array (format version {version} is not "
                             "supported; save it with numpy.save)")
    except InputError:
        raise
    except Exception as exc:  # a crafted header: ValueError, SyntaxError, EOFError, ...
        raise InputError(f"not a readable .npy array ({first_line(exc)})") from exc
    if dtype.hasobject or not (dtype == np.uint8 or dtype.kind == "f"):
        raise InputError(f"expected uint8 or float pixels, got dtype {dtype}")
    c, h, w = pre.input_shape
    shape = tuple(shape)
    if shape not in {(c, h, w), (h, w, c)} | ({(h, w)} if c == 1 else set()):
        raise _shape_error(shape, pre)
    nbytes = math.prod(shape) * dtype.itemsize
    data = file.read(nbytes)
    if len(data) < nbytes:
        raise InputError(f"truncated .npy file: its header declares {nbytes:,} bytes of data, "
                         f"the file holds {len(data):,}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_image(file: Any, pre: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """One model input from an open image file, read exactly as training read its images
    (:func:`~epdo.zoo.data.images.decode_image`: the header's pixel count checked against
    :data:`~epdo.exporters.limits.MAX_IMAGE_PIXELS` before anything is decoded), and the
    image's own ``(H, W)``."""
    try:
        pixels, info = decode_image(file, pre.channels, pre.size, pre.fit)
    except ImageError as exc:
        raise InputError(str(exc)) from exc
    return _scaled(pixels, pre.scale), (info.height, info.width)
