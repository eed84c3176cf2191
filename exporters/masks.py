"""A segmentation's answers as files: the mask of every input at the input's own size, in a
palette PNG, its overlay on the image, and the share of each class (``epdo predict ART
IMAGES --out DIR``).

For an input image of its own size ``H0 x W0`` fitted to the model's ``h x w`` (the
artifact's ``fit``, as training and :mod:`epdo.exporters.preprocess` read it), the mask is

1. ``m[i, j] = argmax_k logits[k, i, j]`` at the model's size (the first of equal scores);
2. mapped back with nearest-neighbour sampling onto the box of the image the model saw (the
   whole image for ``resize``, the centred box for ``center_crop``): the box pixel
   ``(I, J)`` of a ``Hb x Wb`` box takes ``m[floor((I + 1/2) h / Hb), floor((J + 1/2) w / Wb)]``;
3. :data:`NOT_PREDICTED` (255) outside the box (only ``center_crop`` leaves any).

``DIR/<stem>.png`` holds it as a palette ("P" mode) PNG whose value is the class index and
whose colours are the fixed :func:`palette` (PASCAL VOC's: class 0 black, then distinct
colours; 255 is the VOC "void" colour), with the class names in its ``classes`` text chunk
(JSON). ``DIR/<stem>_overlay.png`` (on request) is the image blended with the mask's
colours, ``(1 - a) image + a colour`` with ``a =`` :data:`OVERLAY_ALPHA`, the image alone
where nothing was predicted. Each class's fraction is its share of the predicted pixels of
the written mask (they sum to 1).

Every file is written atomically, and nothing is written unless every input has its own
output names: two inputs with the same stem (compared without case: the folder may not
tell ``A.png`` from ``a.png``) are refused before anything runs.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from epdo.zoo.data.images import ImageError, decode_image, fit_box
from epdo.zoo.fileio import atomic_write

from .artifact import InputError, ServingError
from .limits import MAX_BATCH_BYTES
from .preprocess import read_input

__all__ = ["NOT_PREDICTED", "OVERLAY_ALPHA", "FileSegmentation", "class_fractions",
           "mask_at_size", "mask_png", "output_paths", "overlay_png", "palette",
           "resize_nearest", "segment_files"]

NOT_PREDICTED = 255
"""The mask value of a pixel the model did not see (outside a ``center_crop`` box)."""
MAX_MASK_CLASSES = 255
"""The most classes a palette mask holds: indices 0..254 (255 is :data:`NOT_PREDICTED`)."""
OVERLAY_ALPHA = 0.5
"""The weight of the mask's colour in an overlay."""
_ROWS = 1024
"""Rows of an overlay blended at once (memory stays a few bytes per pixel)."""


def palette() -> np.ndarray:
    """The PASCAL VOC colour map, ``(256, 3)`` uint8: the bits of index ``i`` spread over
    R, G and B from the most significant bit down (bit ``3j`` of ``i`` is bit ``7 - j`` of R,
    bit ``3j + 1`` of G, bit ``3j + 2`` of B); 0 is black, 255 VOC's void colour."""
    index = np.arange(256)
    colours = np.zeros((256, 3), np.int64)
    for j in range(8):
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * j + channel)) & 1) << (7 - j)
    return colours.astype(np.uint8)


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` ``(h, w)`` resampled to ``size`` ``(H, W)`` by nearest neighbour: output
    ``(I, J)`` takes ``mask[floor((I + 1/2) h / H), floor((J + 1/2) w / W)]`` (pixel centres
    matched, computed in exact integers; torch's ``nearest-exact``)."""
    h, w = mask.shape
    height, width = size
    rows = (2 * np.arange(height, dtype=np.int64) + 1) * h // (2 * height)  # exact integers
    cols = (2 * np.arange(width, dtype=np.int64) + 1) * w // (2 * width)
    return mask[rows[:, None], cols[None, :]]


def mask_at_size(mask: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    """A model-size mask ``(h, w)`` uint8 mapped back onto an image of ``size`` ``(H0, W0)``
    fitted by ``fit`` (module docstring, steps 2 and 3): ``(H0, W0)`` uint8."""
    height, width = size
    left, top, right, bottom = fit_box(width, height, mask.shape, fit)
    inner = resize_nearest(mask, (bottom - top, right - left))
    if (left, top, right, bottom) == (0, 0, width, height):
        return np.ascontiguousarray(inner, dtype=np.uint8)
    out = np.full((height, width), NOT_PREDICTED, np.uint8)
    out[top:bottom, left:right] = inner
    return out


def class_fractions(mask: np.ndarray, classes: int) -> list[float]:
    """The share of each class ``0 .. classes - 1`` among the predicted pixels of ``mask``
    (:data:`NOT_PREDICTED` left out); they sum to 1."""
    counts = np.bincount(mask.reshape(-1), minlength=256)[:classes].astype(np.float64)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * classes


def mask_png(mask: np.ndarray, classes: Sequence[str]) -> bytes:
    """The PNG bytes of a ``(H, W)`` uint8 mask: palette mode, :func:`palette`, the class
    names in a ``classes`` text chunk (JSON)."""
    from PIL import Image, PngImagePlugin

    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(palette().reshape(-1).tolist())
    info = PngImagePlugin.PngInfo()
    info.add_itxt("classes", json.dumps(list(classes), ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, optimize=False)
    return buffer.getvalue()


def overlay_png(rgb: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> bytes:
    """The PNG bytes of ``rgb`` ``(H, W, 3)`` uint8 blended with the colours of ``mask``
    ``(H, W)``: ``round((1 - alpha) rgb + alpha colour)``, ``rgb`` where nothing was
    predicted."""
    from PIL import Image

    colours = palette()
    out = np.empty_like(rgb)
    for start in range(0, rgb.shape[0], _ROWS):
        part, where = rgb[start:start + _ROWS], mask[start:start + _ROWS]
        blend = (1 - alpha) * part + alpha * colours[where]
        blend[where == NOT_PREDICTED] = part[where == NOT_PREDICTED]
        out[start:start + _ROWS] = np.rint(blend).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(out, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def output_paths(inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                 overlay: bool = False) -> list[tuple[Path, Path | None]]:
    """``(DIR/<stem>.png, DIR/<stem>_overlay.png or None)`` of every input.

    Raises:
        InputError: two inputs would write the same file (names compared without case,
            overlays included), a file would replace one of the inputs, or ``out_dir``
            exists and is not a folder; nothing is written.
    """
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder; give a folder for "
                         "the masks")
    sources = {Path(s).resolve(): os.fspath(s) for s in inputs}
    owners: dict[str, str] = {}
    paths: list[tuple[Path, Path | None]] = []
    for source in inputs:
        stem = Path(source).stem
        names = [f"{stem}.png"] + ([f"{stem}_overlay.png"] if overlay else [])
        for name in names:
            other = owners.setdefault(name.casefold(), os.fspath(source))
            if other != os.fspath(source):
                raise InputError(f"{other} and {os.fspath(source)} would both write "
                                 f"{folder / name}; rename one of them or predict them into "
                                 "different --out folders (nothing was written)")
            if (folder / name).resolve() in sources:
                raise InputError(f"{folder / name} would replace the input "
                                 f"{sources[(folder / name).resolve()]}; give another --out "
                                 "folder (nothing was written)")
        paths.append((folder / names[0], folder / names[1] if overlay else None))
    return paths


@dataclass
class FileSegmentation:
    """The answer for one input file: its own size, the share of each class, the files
    written, or an error."""

    input: str
    size: tuple[int, int] | None = None
    fractions: list[float] = field(default_factory=list)
    mask: str | None = None
    overlay: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether this input was segmented."""
        return self.error is None

    def dominant(self, classes: Sequence[str], k: int) -> list[tuple[int, str, float]]:
        """``(index, name, fraction)`` of the ``k`` largest classes, largest first (present
        ones only)."""
        order = np.argsort(-np.asarray(self.fractions), kind="stable")[:max(1, k)]
        return [(int(i), classes[int(i)], self.fractions[int(i)]) for i in order
                if self.fractions[int(i)] > 0]

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        """``{"input", "size": [H, W], "mask", "overlay", "classes": [{"index", "class",
        "color", "fraction"}...]}`` (plus ``"error"`` when it failed)."""
        colours = palette()
        data: dict[str, Any] = {
            "input": self.input, "size": list(self.size) if self.size else None,
            "mask": self.mask, "overlay": self.overlay,
            "classes": [{"index": i, "class": name,
                         "color": "#{:02x}{:02x}{:02x}".format(*colours[i]),
                         "fraction": self.fractions[i] if self.fractions else None}
                        for i, name in enumerate(classes)]}
        if self.error is not None:
            data["error"] = self.error
        return data


def _own_rgb(source: str, x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H0, W0, 3)`` uint8: the input image at its own size, for an overlay (an image file
    decoded again by the same reader; an array: the model input itself)."""
    if Path(source).suffix.lower() == ".npy":
        pixels = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(pixels, 3 // len(pixels), 0).transpose(1, 2, 0))
    try:
        pixels, info = decode_image(source, 3, size, "resize")
    except ImageError as exc:
        raise InputError(str(exc)) from exc
    if (info.height, info.width) != size:
        raise InputError("the file changed while it was read; run again")
    return np.ascontiguousarray(pixels.transpose(1, 2, 0))


def _finish(result: FileSegmentation, x: np.ndarray, mask: np.ndarray, classifier: Any,
            paths: tuple[Path, Path | None] | None) -> None:
    """Map ``mask`` back onto the input's own size, count the classes, write the files."""
    own = mask_at_size(mask, result.size, classifier.preprocessing.fit)
    result.fractions = class_fractions(own, len(classifier.classes))
    if paths is None:
        return
    mask_path, overlay_path = paths
    if overlay_path is not None:
        image = overlay_png(_own_rgb(result.input, x, result.size), own)
        result.overlay = os.fspath(atomic_write(overlay_path, image))
    result.mask = os.fspath(atomic_write(mask_path, mask_png(own, classifier.classes)))


def segment_files(classifier: Any, inputs: Iterable[str | os.PathLike[str]],
                  out_dir: str | os.PathLike[str] | None = None, *, overlay: bool = False,
                  batch_size: int | None = None) -> list[FileSegmentation]:
    """Segment every input file with a segmentation ``classifier`` (a loaded artifact):
    one :class:`FileSegmentation` per input, in order, with the share of each class; with
    ``out_dir`` its mask (and with ``overlay`` its overlay) written as the module docstring
    says.

    One bad input never costs the others: a file that cannot be read or decoded, or whose
    map comes out NaN or infinite, gets its ``error`` and no file. At most ``batch_size``
    inputs with their maps (fewer when they would take more than
    :data:`~epdo.exporters.limits.MAX_BATCH_BYTES`) are held in memory at once.

    Raises:
        ServingError: the artifact is not a segmentation, or has more classes than a mask
            holds; InputError: two inputs would write the same file (nothing is run).
    """
    if not classifier.segments:
        raise ServingError(f"{classifier.path}: a classification model; masks come from "
                           "segmentation models")
    sources = [os.fspath(p) for p in inputs]
    paths: list[Any] = [None] * len(sources)
    if out_dir is not None:
        if len(classifier.classes) > MAX_MASK_CLASSES:
            raise ServingError(f"{classifier.path}: {len(classifier.classes)} classes; a mask "
                               f"PNG holds at most {MAX_MASK_CLASSES}")
        paths = output_paths(sources, out_dir, overlay)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = [FileSegmentation(input=s) for s in sources]
    per_input = 4 * (math.prod(classifier.input_shape) + math.prod(classifier.output_shape))
    size = max(1, min(int(batch_size or classifier.batch_size), MAX_BATCH_BYTES // per_input))
    for start in range(0, len(results), size):
        arrays: list[np.ndarray] = []
        good: list[int] = []
        for i in range(start, min(start + size, len(results))):
            try:
                x, results[i].size = read_input(sources[i], classifier.preprocessing)
            except InputError as exc:
                results[i].error = str(exc)
                continue
            arrays.append(x)
            good.append(i)
        if not good:
            continue
        maps = classifier._logits(np.stack(arrays), size)
        finite = np.isfinite(maps).all(axis=(1, 2, 3))
        masks = maps.argmax(axis=1).astype(np.uint8)
        del maps
        for i, x, mask, ok in zip(good, arrays, masks, finite, strict=True):
            if not ok:
                results[i].error = ("the model returned non-finite logits (NaN or infinity) "
                                    "for this input")
                continue
            try:
                _finish(results[i], x, mask, classifier, paths[i])
            except InputError as exc:
                results[i].error = str(exc)
    return results
