"""Where each dataset would be read from and how big its splits are, cheaply.

Nothing is rotated or converted: MNIST-rot rows are counted (not parsed), IDX counts come
from the headers, the sample's from its arrays, CIFAR's from its label lists.
"""

from __future__ import annotations

import os
from typing import Any

from .cifar import cifar_count, locate_cifar
from .errors import DataError
from .idx import IMAGE_MAGIC, idx_count, locate_idx
from .loaders import DESCRIPTIONS, dataset_classes
from .locations import search_roots
from .mnist_rot import locate_mnist_rot, mnist_rot_rows
from .names import DATASETS, SPLITS, check_name
from .rotated_idx import ROTATED_TRAIN_SIZE
from .sample import SAMPLE_FILE, SAMPLE_SOURCE, sample_arrays
from .seg_sample import SEG_SAMPLE_FILE, seg_sample_arrays

__all__ = ["dataset_info", "datasets_info"]


def _split_info(name: str, split: str,
                data_dir: str | os.PathLike[str] | None) -> tuple[str, int]:
    """``(where split is read from, number of images)``; DataError when missing/broken."""
    if name == "mnist-rot":
        source = locate_mnist_rot(split, data_dir)
        return source.label, mnist_rot_rows(source)
    if name in ("idx", "rotated-idx"):
        images, _ = locate_idx(split, data_dir, name)
        count = idx_count(images, IMAGE_MAGIC)
        if name == "rotated-idx" and split == "train":
            count = min(count, ROTATED_TRAIN_SIZE)
        return str(images.parent), count
    if name in ("sample", "sample-upright"):
        return SAMPLE_SOURCE + f" ({SAMPLE_FILE})", len(sample_arrays(split)[1])
    if name in ("seg-sample", "seg-sample-upright"):
        return SAMPLE_SOURCE + f" ({SEG_SAMPLE_FILE})", len(seg_sample_arrays(split)[1])
    folder, _ = locate_cifar(name, split, data_dir)
    return str(folder), cifar_count(name, split, data_dir)


def dataset_info(name: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A JSON-ready record of dataset ``name``.

    Keys: ``name``, ``description``, ``found`` (both splits readable), ``status``
    (``"found"``, ``"missing"`` or ``"broken"``: a file is there but malformed), ``sources`` and
    ``sizes`` (per split; ``None`` when missing), ``classes`` (their number), ``searched``
    (the folders looked in, in order; empty for the embedded sample), ``errors`` (per
    split, the one-line message of a missing or malformed split).
    """
    check_name(name)
    sources: dict[str, str | None] = {}
    sizes: dict[str, int | None] = {}
    errors: dict[str, str] = {}
    broken = False
    for split in SPLITS:
        try:
            sources[split], sizes[split] = _split_info(name, split, data_dir)
        except DataError as exc:
            sources[split], sizes[split] = None, None
            errors[split] = str(exc)
            broken = broken or exc.file is not None  # "not found" names no single file
    try:
        classes: int | None = len(dataset_classes(name, data_dir))
    except DataError as exc:
        classes = None
        errors.setdefault("classes", str(exc))
        broken = True
    embedded = ("sample", "sample-upright", "seg-sample", "seg-sample-upright")
    searched = [] if name in embedded else search_roots(name, data_dir)
    status = "broken" if broken else "missing" if errors else "found"
    return {"name": name, "description": DESCRIPTIONS[name], "found": not errors, "status": status,
            "sources": sources, "sizes": sizes, "classes": classes,
            "searched": [str(p) for p in searched], "errors": errors}


def datasets_info(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """:func:`dataset_info` of every dataset, in the order of :data:`DATASETS`."""
    return [dataset_info(name, data_dir) for name in DATASETS]
