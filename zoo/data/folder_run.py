"""A trained run's folder dataset, read back the way the run read it.

``epdo eval`` and ``epdo export`` take a checkpoint; when its spec trained on a ``folder``
dataset, :func:`run_split` reads the split that the run recorded in the ``data.json`` beside
the checkpoint (:mod:`.folder_dataset`), decoded for the spec's input (channels, size,
fit). Without that record (a checkpoint copied elsewhere) the folder is indexed and split
again with the spec's seed and test fraction, which gives the same split while the folder
holds the same files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .dataset import ImageDataset
from .errors import DataError
from .folder_dataset import DATA_RECORD, Progress, load_folder_split, read_record
from .folder_images import PixelSettings

__all__ = ["run_record", "run_split"]


def run_record(checkpoint: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The ``data.json`` beside ``checkpoint`` (checked), or None when there is none."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).parent / DATA_RECORD
    return read_record(path) if path.is_file() else None


def run_split(spec: Any, checkpoint: str | os.PathLike[str] | None, split: str = "test", *,
              data_dir: str | os.PathLike[str] | None = None, limit: int | None = None,
              progress: Progress | None = None) -> ImageDataset:
    """Split ``split`` of the folder dataset that ``spec`` (a trained run's) names, as the
    run saw it; ``data_dir`` replaces the folder (it moved); ``limit`` keeps the first
    files. Raises DataError."""
    record = run_record(checkpoint)
    root = data_dir or spec.train.data_dir or (record or {}).get("root")
    if not root:
        raise DataError(f"spec {spec.name!r} was trained on a folder of images that it does "
                        "not name; give the folder with --data-dir")
    inp = spec.input
    settings = PixelSettings(inp.channels, (inp.height, inp.width), inp.fit)
    return load_folder_split(root, settings, split, record=record, seed=spec.train.seed,
                             test_fraction=spec.train.test_fraction, limit=limit,
                             progress=progress)
