"""CIFAR-10 / CIFAR-100 from a local folder in torchvision's ("python version") format.

- ``cifar10``: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5`` (train),
  ``test_batch`` (test) and optionally ``batches.meta`` (``label_names``);
- ``cifar100``: ``cifar-100-python/`` with ``train``, ``test`` and optionally ``meta``
  (``fine_label_names``); the 100 fine labels are used.

Each batch file is a pickled dict with ``b"data"``: ``(N, 3072)`` uint8 (1024 red, then 1024
green, then 1024 blue values, each a 32 x 32 image row by row) and ``b"labels"`` /
``b"fine_labels"``: N ints. The folder is looked for inside each searched folder, or the
searched folder may be that folder itself. Pickles are read with the restricted unpickler of
:mod:`epdo.zoo.data.safe_pickle`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import ImageDataset
from .errors import DataError
from .locations import DATA_ENV, describe_roots, search_roots
from .names import CIFAR10_CLASSES, CIFAR100_CLASSES
from .safe_pickle import load_restricted

__all__ = ["CIFAR_LAYOUT", "cifar_classes", "cifar_count", "load_cifar", "locate_cifar"]

#: folder, files per split, meta file, label key, class-name key, default class names
CIFAR_LAYOUT: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": b"labels",
        "names": b"label_names",
        "classes": CIFAR10_CLASSES,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": b"fine_labels",
        "names": b"fine_label_names",
        "classes": CIFAR100_CLASSES,
    },
}
_ROW = 3 * 32 * 32


def locate_cifar(name: str, split: str,
                 data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, list[Path]]:
    """``(folder, batch files of split)`` from the first searched folder holding them all."""
    layout = CIFAR_LAYOUT[name]
    roots = search_roots(name, data_dir)
    for root in roots:
        for folder in (root / layout["folder"], root):
            files = [folder / f for f in layout[split]]
            if all(f.is_file() for f in files):
                return folder, files
    raise DataError(
        f"{name} {split} data not found: expected {layout['folder']}/ with "
        f"{', '.join(layout[split])} (torchvision's format: the unpacked python version of "
        f"{name.upper()}) in {describe_roots(roots)}. Put it there, pass --data-dir DIR, or "
        f"set {DATA_ENV}=DIR"
    )


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(data (N, 3072) uint8, labels (N,) int64)`` of one batch file, validated."""
    batch = load_restricted(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"not a CIFAR batch: expected a dict with keys b'data' and "
                        f"{label_key!r}", path)
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _ROW:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"b'data' must be a uint8 array of shape (N, {_ROW}), got {shape}", path)
    raw = batch[label_key]
    try:
        labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{label_key!r} must be a list of integers", path) from None
    if len(labels) != len(data):
        raise DataError(f"{len(labels)} labels for {len(data)} images", path)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(f"label {int(labels[bad[0]])} is out of range 0..{num_classes - 1}",
                        path, int(bad[0]) + 1)
    return data, labels


def cifar_classes(name: str, folder: Path | None = None) -> list[str]:
    """Class names from the folder's meta file when present and sane, else the defaults."""
    layout = CIFAR_LAYOUT[name]
    default = list(layout["classes"])
    meta_path = folder / layout["meta"] if folder is not None else None
    if meta_path is None or not meta_path.is_file():
        return default
    meta = load_restricted(meta_path)
    names = meta.get(layout["names"]) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != len(default):
        raise DataError(f"expected {len(default)} class names under {layout['names']!r}",
                        meta_path)
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(name: str, split: str,
               data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Split ``split`` of CIFAR-10/100: images ``(N, 3, 32, 32)`` float32 in [0, 1]."""
    folder, files = locate_cifar(name, split, data_dir)
    classes = cifar_classes(name, folder)
    parts = [_read_batch(f, CIFAR_LAYOUT[name]["labels"], len(classes)) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images = torch.from_numpy(data).reshape(-1, 3, 32, 32).float().div_(255.0)
    return ImageDataset(name=name, split=split, images=images, labels=torch.from_numpy(labels),
                        classes=classes, source=str(folder))


def cifar_count(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> int:
    """Number of images of ``split`` (reads the batches, but builds no tensors)."""
    _, files = locate_cifar(name, split, data_dir)
    label_key = CIFAR_LAYOUT[name]["labels"]
    return sum(len(_read_batch(f, label_key, len(CIFAR_LAYOUT[name]["classes"]))[1])
               for f in files)
