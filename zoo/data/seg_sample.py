"""The embedded segmentation sample ``seg-sample``: rotated Fashion-MNIST garments on 64×64
canvases, with a class for every pixel.

``seg_sample.npz`` (built by ``scripts/make_seg_sample.py`` from the embedded Fashion-MNIST
sample; provenance, construction and format in ``SEG_SAMPLE.md`` beside it) holds, for each
split ``S`` in ``train`` (800 canvases), ``test`` (200):

- ``S_images``: ``(N, 64, 64)`` uint8, one to three garments on black, each rotated by its
  own angle;
- ``S_masks``: ``(N, 64, 64)`` uint8, 0 = background, ``k + 1`` = Fashion-MNIST class ``k``
  (:data:`SEG_CLASSES`);
- ``S_sources`` ``(N, 3)`` int64, ``S_angles`` ``(N, 3)`` float64, ``S_places``
  ``(N, 3, 2)`` int16: each canvas's garments (index in the Fashion-MNIST sample's split,
  angle in degrees, top-left corner of its 40×40 patch; -1 where a canvas has fewer);

and ``provenance``, a JSON string.

``seg-sample-upright`` is the same canvases with every garment upright: the recorded
garments laid at their recorded places unrotated (:func:`compose` with zero angles), so a
model trained on it has seen each class in one orientation only, and the angle sweep of
``epdo eval --dataset seg-sample`` shows what it does with the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .masks import MaskDataset
from .names import FASHION_CLASSES
from .sample import SAMPLE_SOURCE, read_archive

__all__ = ["CANVAS", "MAX_GARMENTS", "PATCH", "SEG_CLASSES", "SEG_SAMPLE_FILE", "THRESHOLD",
           "compose", "load_seg_sample", "rotated_garments", "seg_sample_arrays"]

#: The embedded archive.
SEG_SAMPLE_FILE = Path(__file__).with_name("seg_sample.npz")
#: Its classes: mask value 0 is the background, k + 1 Fashion-MNIST's class k.
SEG_CLASSES = ["background", *FASHION_CLASSES]
CANVAS = 64
"""Canvas side (pixels)."""
PATCH = 40
"""Side of the patch a 28×28 garment is centred and rotated in (28·√2 < 40: nothing is cut)."""
GARMENT = 28
MAX_GARMENTS = 3
THRESHOLD = 0.1
"""A rotated garment's value (in [0, 1]) above which a pixel belongs to it."""
_HINT = "the package is damaged: reinstall epdo (or rebuild it with scripts/make_seg_sample.py)"


def seg_sample_arrays(split: str, path: Path = SEG_SAMPLE_FILE) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 64, 64) uint8, masks (N, 64, 64) uint8)`` of ``split``, validated
    (shapes, dtypes, mask values below ``len(SEG_CLASSES)``)."""
    arrays = read_archive(path, _HINT)
    images, masks = arrays.get(f"{split}_images"), arrays.get(f"{split}_masks")
    if images is None or masks is None:
        raise DataError(f"no {split}_images / {split}_masks arrays; {_HINT}", path)
    if images.dtype != np.uint8 or masks.dtype != np.uint8 or images.ndim != 3 \
            or images.shape != masks.shape or len(images) == 0:
        raise DataError(f"{split}: unexpected arrays {images.dtype}{images.shape} / "
                        f"{masks.dtype}{masks.shape}; {_HINT}", path)
    top = int(masks.max())
    if top >= len(SEG_CLASSES):
        raise DataError(f"{split}: mask value {top} beyond the {len(SEG_CLASSES)} classes; "
                        f"{_HINT}", path)
    return images, masks


def rotated_garments(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """``images`` (n, 28, 28) uint8 centred in 40×40 patches and rotated counter-clockwise
    by ``angles`` (n,) degrees (:func:`~epdo.zoo.transforms.rotate_images`, float64,
    bilinear, zeros outside): (n, 40, 40) float64 in [0, 1]."""
    from ..transforms import rotate_images

    pad = (PATCH - GARMENT) // 2
    patches = np.zeros((len(images), 1, PATCH, PATCH), dtype=np.float64)
    patches[:, 0, pad:pad + GARMENT, pad:pad + GARMENT] = images / 255.0
    rotated = rotate_images(torch.from_numpy(patches), torch.from_numpy(angles))
    return np.clip(rotated[:, 0].numpy(), 0.0, 1.0)


def compose(images: np.ndarray, labels: np.ndarray, picks: dict[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """The canvases of one split from the garments ``picks`` chose: ``counts`` (n,)
    garments per canvas, then per garment in canvas order ``chosen`` (its index in
    ``images`` (M, 28, 28) uint8 / ``labels`` (M,)), ``angles`` (degrees) and ``places``
    ((top, left) of its patch). Each rotated garment covers the canvas where its value is
    above :data:`THRESHOLD`, the mask there is its class + 1, later garments lie on top.
    Returns ``images`` (n, 64, 64) uint8 (``rint(value · 255)``), ``masks`` (n, 64, 64)
    uint8, and per canvas ``sources``, ``angles``, ``places`` (-1 where it has fewer)."""
    n = len(picks["counts"])
    garments = rotated_garments(images[picks["chosen"]], picks["angles"])
    canvas = np.zeros((n, CANVAS, CANVAS), dtype=np.float64)
    masks = np.zeros((n, CANVAS, CANVAS), dtype=np.uint8)
    sources = np.full((n, MAX_GARMENTS), -1, dtype=np.int64)
    angles = np.zeros((n, MAX_GARMENTS), dtype=np.float64)
    places = np.full((n, MAX_GARMENTS, 2), -1, dtype=np.int16)
    j = 0
    for c, count in enumerate(picks["counts"]):
        for k in range(int(count)):
            top, left = (int(v) for v in picks["places"][j])
            garment = garments[j]
            cover = garment > THRESHOLD
            region = (slice(top, top + PATCH), slice(left, left + PATCH))
            canvas[c][region][cover] = garment[cover]
            masks[c][region][cover] = labels[picks["chosen"][j]] + 1
            sources[c, k] = picks["chosen"][j]
            angles[c, k] = picks["angles"][j]
            places[c, k] = (top, left)
            j += 1
    pixels = np.rint(canvas * 255.0).astype(np.uint8)
    return {"images": pixels, "masks": masks, "sources": sources, "angles": angles,
            "places": places}


def _upright(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The canvases of ``split`` recomposed with every garment upright (module docstring):
    the recorded sources and places, angles 0."""
    from .sample import sample_arrays

    arrays = read_archive(SEG_SAMPLE_FILE, _HINT)
    sources, places = arrays.get(f"{split}_sources"), arrays.get(f"{split}_places")
    images, labels = sample_arrays(split)
    if sources is None or places is None or sources.ndim != 2 \
            or places.shape != (*sources.shape, 2) or sources.max() >= len(images):
        raise DataError(f"{split}: no valid garment records; {_HINT}", SEG_SAMPLE_FILE)
    valid = sources >= 0
    picks = {"counts": valid.sum(1), "chosen": sources[valid],
             "angles": np.zeros(int(valid.sum())), "places": places[valid]}
    out = compose(images, labels, picks)
    return out["images"], out["masks"]


def load_seg_sample(split: str, upright: bool = False) -> MaskDataset:
    """Split ``split`` of the embedded segmentation sample (``upright``: its garments
    unrotated, ``seg-sample-upright``): images ``(N, 1, 64, 64)`` uint8 and masks
    ``(N, 64, 64)`` uint8 over :data:`SEG_CLASSES`."""
    images, masks = _upright(split) if upright else seg_sample_arrays(split)
    name = "seg-sample-upright" if upright else "seg-sample"
    return MaskDataset(name=name, split=split,
                       images=torch.from_numpy(images).unsqueeze(1),
                       labels=torch.from_numpy(masks), classes=list(SEG_CLASSES),
                       source=SAMPLE_SOURCE)
