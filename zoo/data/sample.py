"""The embedded sample: real Fashion-MNIST images shipped inside the package.

``fashion_sample.npz`` (see ``SAMPLE.md`` beside it for provenance and licence; built by
``scripts/make_sample.py``) holds, for each split ``S`` in ``train``, ``test``:

- ``S_images``: ``(N, 28, 28)`` uint8, the images as in Fashion-MNIST;
- ``S_labels``: ``(N,)`` uint8 in 0..9 (Fashion-MNIST's classes, equally many of each);
- ``S_index``: ``(N,)`` int64, each image's index in Fashion-MNIST's split ``S``;

and ``provenance``, a JSON string (source files with their SHA-256, seed, counts).

``sample-upright`` is the images as they are. ``sample`` rotates each image once, as
``rotated-idx`` does: angle uniform in [0°, 360°) from the stream
``("sample", S, "angles")`` of ``seed``, bilinear, about the centre, zeros outside.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import ImageDataset
from .errors import DataError
from .names import FASHION_CLASSES
from .rotate import rotate_unit_images, uniform_angles

__all__ = ["SAMPLE_FILE", "SAMPLE_SOURCE", "load_sample", "read_archive", "sample_arrays",
           "sample_provenance"]

#: The embedded archive.
SAMPLE_FILE = Path(__file__).with_name("fashion_sample.npz")
#: The ``source`` of datasets loaded from it.
SAMPLE_SOURCE = "embedded sample"
_HINT = "the package is damaged: reinstall epdo (or rebuild it with scripts/make_sample.py)"


def read_archive(path: Path, hint: str = _HINT) -> dict[str, np.ndarray]:
    """Every array of an embedded ``.npz`` (no pickles); DataError ending in ``hint`` when
    it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the embedded sample ({exc}); {hint}", path) from None


def sample_arrays(split: str, path: Path = SAMPLE_FILE) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28) uint8, labels (N,) int64)`` of ``split``, validated."""
    arrays = read_archive(path)
    images = arrays.get(f"{split}_images")
    labels = arrays.get(f"{split}_labels")
    if images is None or labels is None:
        raise DataError(f"no {split}_images / {split}_labels arrays; {_HINT}", path)
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 \
            or len(images) != len(labels):
        raise DataError(f"{split}: unexpected arrays {images.dtype}{images.shape} / "
                        f"{labels.dtype}{labels.shape}; {_HINT}", path)
    bad = np.flatnonzero(labels >= len(FASHION_CLASSES))
    if bad.size:
        raise DataError(f"{split}: label {int(labels[bad[0]])} out of range; {_HINT}", path,
                        int(bad[0]) + 1)
    return images, labels.astype(np.int64)


def sample_provenance(path: Path = SAMPLE_FILE) -> dict[str, Any]:
    """The provenance record stored in the archive."""
    arrays = read_archive(path)
    return json.loads(str(arrays["provenance"][()])) if "provenance" in arrays else {}


def load_sample(split: str, rotated: bool, seed: int = 0) -> ImageDataset:
    """Split ``split`` of the embedded sample: ``(N, 1, 28, 28)`` float32 in [0, 1]; rotated
    (dataset ``sample``, ``angles`` set) or upright (``sample-upright``)."""
    images, labels = sample_arrays(split)
    tensor = torch.from_numpy(images).unsqueeze(1)
    angles = None
    if rotated:
        degrees = uniform_angles(len(images), seed, "sample", split, "angles")
        tensor = rotate_unit_images(tensor, degrees)
        angles = torch.from_numpy(degrees)
    else:
        tensor = tensor.float().div_(255.0)
    return ImageDataset(name="sample" if rotated else "sample-upright", split=split,
                        images=tensor, labels=torch.from_numpy(labels),
                        classes=list(FASHION_CLASSES), source=SAMPLE_SOURCE, angles=angles)
