"""``rotated-idx``: an MNIST-rot style benchmark built from any IDX dataset.

- ``"train"``: 12,000 images (all of them when the IDX training split is smaller) drawn
  without replacement, uniformly, from the IDX training split; kept in their original order.
- ``"test"``: the whole IDX test split.
- Every image is rotated once, counter-clockwise about its centre, by its own angle drawn
  uniformly from [0°, 360°), with bilinear interpolation and zeros outside
  (:func:`epdo.zoo.data.rotate.rotate_images`).

The draw and the angles come from independent streams of ``seed``
(:func:`epdo.zoo.data.rotate.seeded_rng`): ``("rotated-idx", "train", "draw")``,
``("rotated-idx", "train", "angles")`` and ``("rotated-idx", "test", "angles")``. The
selection and the angles depend on the seed only (numpy's PCG64 is platform independent);
the same files, seed and library versions give bit-identical images.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .dataset import ImageDataset
from .idx import idx_classes, load_idx_arrays
from .rotate import rotate_unit_images, seeded_rng, uniform_angles

__all__ = ["ROTATED_TRAIN_SIZE", "load_rotated_idx", "rotated_idx_selection"]

#: Training images drawn from the IDX training split (MNIST-rot's 10,000 + 2,000).
ROTATED_TRAIN_SIZE = 12_000


def rotated_idx_selection(available: int, seed: int) -> np.ndarray:
    """Sorted indices of the training images drawn from ``available`` ones."""
    count = min(ROTATED_TRAIN_SIZE, available)
    chosen = seeded_rng(seed, "rotated-idx", "train", "draw").choice(available, count,
                                                                      replace=False)
    return np.sort(chosen)


def load_rotated_idx(split: str, data_dir: str | os.PathLike[str] | None = None,
                     seed: int = 0) -> ImageDataset:
    """Split ``split`` of the rotated benchmark: images ``(N, 1, H, W)`` float32 in [0, 1];
    ``angles`` holds each image's rotation in degrees."""
    images, labels, folder = load_idx_arrays(split, data_dir, name="rotated-idx")
    if split == "train":
        chosen = rotated_idx_selection(len(images), seed)
        images, labels = images[chosen], labels[chosen]
    angles = uniform_angles(len(images), seed, "rotated-idx", split, "angles")
    rotated = rotate_unit_images(torch.from_numpy(images).unsqueeze(1), angles)
    return ImageDataset(name="rotated-idx", split=split, images=rotated,
                        labels=torch.from_numpy(labels), classes=idx_classes(folder),
                        source=str(folder), angles=torch.from_numpy(angles))
