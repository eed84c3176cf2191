"""The dataset names and what loads each: :func:`load_dataset`, :func:`dataset_classes`."""

from __future__ import annotations

import os

from .cifar import cifar_classes, load_cifar, locate_cifar
from .dataset import ImageDataset
from .errors import DataError
from .idx import idx_classes, load_idx, locate_idx
from .masks import MaskDataset
from .mnist_rot import load_mnist_rot
from .names import DATASETS, DIGIT_CLASSES, FASHION_CLASSES, check_name, check_split
from .rotated_idx import load_rotated_idx
from .sample import load_sample
from .seg_sample import SEG_CLASSES, load_seg_sample

__all__ = ["DATASETS", "DESCRIPTIONS", "dataset_classes", "load_dataset"]

#: One line per dataset (for ``epdo data info``).
DESCRIPTIONS = {
    "mnist-rot": "MNIST-rot (Larochelle et al. 2007): 12,000 train / 50,000 test rotated digits",
    "rotated-idx": "an IDX dataset (e.g. Fashion-MNIST) made MNIST-rot style: 12,000 train, "
                   "the whole test split, each image rotated by a seeded uniform angle",
    "idx": "an MNIST-format IDX dataset as it is (MNIST, Fashion-MNIST, ...)",
    "sample": "the embedded Fashion-MNIST sample, each image rotated by a seeded uniform angle",
    "sample-upright": "the embedded Fashion-MNIST sample, upright",
    "cifar10": "CIFAR-10 from torchvision's cifar-10-batches-py folder",
    "cifar100": "CIFAR-100 (fine labels) from torchvision's cifar-100-python folder",
    "seg-sample": "segmentation: the embedded sample of 64x64 canvases with one to three "
                  "rotated Fashion-MNIST garments, a class per pixel (11 with background)",
    "seg-sample-upright": "segmentation: the embedded sample's canvases with every garment "
                          "upright (for the angle sweep of an upright-trained model)",
}
assert set(DESCRIPTIONS) == set(DATASETS)


def load_dataset(name: str, split: str, data_dir: str | os.PathLike[str] | None = None,
                 seed: int = 0) -> ImageDataset | MaskDataset:
    """Load split ``split`` (``"train"`` or ``"test"``) of dataset ``name``, fully in memory.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: the folder to read from; when ``None``, ``$EPDO_DATA`` and then the
            dataset's default place are searched (see :mod:`epdo.zoo.data.locations`).
            Ignored by the embedded sample.
        seed: the seed of the draw and the rotation angles of ``rotated-idx`` and
            ``sample``; ignored by the other datasets.

    Returns:
        An :class:`ImageDataset` with images ``(N, C, H, W)`` float32 in [0, 1] and labels
        ``(N,)`` int64; for the segmentation sample ``seg-sample`` a
        :class:`~.masks.MaskDataset` with images ``(N, 1, 64, 64)`` uint8 and masks
        ``(N, 64, 64)`` uint8.

    Raises:
        DataError: unknown name or split, data not found, malformed files.
    """
    check_name(name)
    check_split(split)
    if name == "mnist-rot":
        return load_mnist_rot(split, data_dir)
    if name == "idx":
        return load_idx(split, data_dir)
    if name == "rotated-idx":
        return load_rotated_idx(split, data_dir, seed)
    if name in ("sample", "sample-upright"):
        return load_sample(split, rotated=name == "sample", seed=seed)
    if name in ("seg-sample", "seg-sample-upright"):
        return load_seg_sample(split, upright=name == "seg-sample-upright")
    return load_cifar(name, split, data_dir)


def dataset_classes(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The class names of dataset ``name`` without loading it.

    For ``idx`` / ``rotated-idx`` they depend on the folder the data would be read from
    (Fashion-MNIST's names when its path mentions "fashion", else the digits; the digits
    when no data is found); for CIFAR they come from its meta file when present.
    """
    check_name(name)
    if name == "mnist-rot":
        return list(DIGIT_CLASSES)
    if name in ("sample", "sample-upright"):
        return list(FASHION_CLASSES)
    if name in ("seg-sample", "seg-sample-upright"):
        return list(SEG_CLASSES)
    if name in ("idx", "rotated-idx"):
        try:
            images, _ = locate_idx("train", data_dir, name)
        except DataError:
            return list(DIGIT_CLASSES)
        return idx_classes(images.parent)
    try:
        folder, _ = locate_cifar(name, "test", data_dir)
    except DataError:
        folder = None
    return cifar_classes(name, folder)
