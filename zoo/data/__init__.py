"""Datasets: MNIST-rot, rotated IDX benchmarks, the embedded sample, CIFAR.

Public API::

    from epdo.zoo.data import load_dataset, DATASETS, DataError

    train = load_dataset("sample", "train")          # embedded Fashion-MNIST, rotated
    train.images   # (N, C, H, W) float32 in [0, 1]
    train.labels   # (N,) int64
    train.classes  # class names
    test = load_dataset("mnist-rot", "test", data_dir="~/data")   # .amat files or the zip

Datasets (:data:`DATASETS`):

- ``mnist-rot``: MNIST-rot's two ``.amat`` files or its archive ``mnist_rotation_new.zip``
  (:mod:`.mnist_rot`); ``epdo data fetch mnist-rot`` downloads it (:func:`fetch_dataset`).
- ``idx``: MNIST-format IDX files, e.g. Fashion-MNIST (:mod:`.idx`).
- ``rotated-idx``: ``idx`` made MNIST-rot style, 12,000 train images and the whole test
  split, every image rotated by a seeded uniform angle (:mod:`.rotated_idx`).
- ``sample`` / ``sample-upright``: real Fashion-MNIST images shipped in the package,
  rotated / upright (:mod:`.sample`).
- ``cifar10`` / ``cifar100``: torchvision's local folders, pickles read by a restricted
  unpickler (:mod:`.cifar`, :mod:`.safe_pickle`).
- ``seg-sample``: segmentation, 64×64 canvases of rotated Fashion-MNIST garments with a
  class per pixel, shipped in the package (:mod:`.seg_sample`); a
  :class:`~.masks.MaskDataset` (images and ``(N, H, W)`` masks, 255 = ignore).

A segmentation folder (``seg:PATH``, ``images/`` + ``masks/``) is read by
:mod:`.seg_dataset`, a classification folder (``folder:PATH``) by :mod:`.folder_dataset`.

Files are looked for in ``data_dir`` when given, else in ``$EPDO_DATA`` and then the
dataset's default place (:mod:`.locations`). Every problem is one :class:`DataError`
whose text is ``FILE:RECORD: what is wrong; what to do``.
"""

from .dataset import ImageDataset
from .errors import DataError
from .fetch import fetch_dataset
from .info import dataset_info, datasets_info
from .loaders import dataset_classes, load_dataset
from .locations import default_data_dir
from .masks import IGNORE, MaskDataset
from .names import DATASETS, SPLITS
from .rotate import rotate_images, uniform_angles

__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "IGNORE",
    "ImageDataset",
    "MaskDataset",
    "dataset_classes",
    "dataset_info",
    "datasets_info",
    "default_data_dir",
    "fetch_dataset",
    "load_dataset",
    "rotate_images",
    "uniform_angles",
]
