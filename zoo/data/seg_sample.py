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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .masks import MaskDataset
from .names import FASHION_CLASSES
from .sample import SAMPLE_SOURCE, read_archive

__all__ = ["SEG_CLASSES", "SEG_SAMPLE_FILE", "load_seg_sample", "seg_sample_arrays"]

#: The embedded archive.
SEG_SAMPLE_FILE = Path(__file__).with_name("seg_sample.npz")
#: Its classes: mask value 0 is the background, k + 1 Fashion-MNIST's class k.
SEG_CLASSES = ["background", *FASHION_CLASSES]
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


def load_seg_sample(split: str) -> MaskDataset:
    """Split ``split`` of the embedded segmentation sample: images ``(N, 1, 64, 64)`` uint8
    and masks ``(N, 64, 64)`` uint8 over :data:`SEG_CLASSES`."""
    images, masks = seg_sample_arrays(split)
    return MaskDataset(name="seg-sample", split=split,
                       images=torch.from_numpy(images).unsqueeze(1),
                       labels=torch.from_numpy(masks), classes=list(SEG_CLASSES),
                       source=SAMPLE_SOURCE)
