"""A trained run's folder dataset, read back the way the run read it.

``epdo eval`` and ``epdo export`` take a checkpoint; when its spec trained on a ``folder``
dataset, :func:`run_split` reads the split that the run recorded in the ``data.json`` beside
the checkpoint (:mod:`.folder_dataset`), decoded for the spec's input (channels, size,
fit). Without that record (a checkpoint copied elsewhere) the folder is indexed and split
again with the spec's seed and test fraction, which gives the same split while the folder
holds the same files.

The record's class names must be the checkpoint's (``extra["classes"]``, when it recorded
them): a record whose classes were reordered or renamed would label every image of the
split with another class than the model predicts for it, so a mismatch is refused in one
line naming both files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..values import shown as shown_value
from .dataset import ImageDataset
from .errors import DataError
from .folder_dataset import DATA_RECORD, Progress, load_folder_split, read_record
from .folder_images import PixelSettings
from .masks import MaskDataset

__all__ = ["run_record", "run_split"]


def run_record(checkpoint: str | os.PathLike[str] | None,
               classes: list[str] | None = None, *,
               task: str = "classify") -> dict[str, Any] | None:
    """The ``data.json`` beside ``checkpoint`` (checked: a record of ``task``), or None when
    there is none. ``classes``, the checkpoint's class names when it recorded them, must be
    the record's (module docstring)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).parent / DATA_RECORD
    if not path.is_file():
        return None
    record = read_record(path, task=task)
    if classes is not None and list(record["classes"]) != list(classes):
        raise DataError(f"its class names ({_names(record['classes'])}) are not those of the "
                        f"checkpoint {checkpoint} ({_names(classes)}): the record was edited "
                        "or belongs to another run; use the run folder as epdo train wrote it",
                        path)
    return record


def _names(names: list[str], shown: int = 4) -> str:
    text = ", ".join(shown_value(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _checkpoint_classes(spec: Any, checkpoint: str | os.PathLike[str]) -> list[str] | None:
    """The class names ``checkpoint`` recorded (read again: the caller did not pass them)."""
    from ..checkpoint import checkpoint_classes, read_checkpoint

    return checkpoint_classes(read_checkpoint(checkpoint), spec)


def run_split(spec: Any, checkpoint: str | os.PathLike[str] | None, split: str = "test", *,
              data_dir: str | os.PathLike[str] | None = None, limit: int | None = None,
              progress: Progress | None = None,
              classes: list[str] | None = None,
              kind: str | None = None) -> ImageDataset | MaskDataset:
    """Split ``split`` of the folder dataset that ``spec`` (a trained run's) names, as the
    run saw it: a ``folder`` of class subfolders, or a ``seg`` folder of image and mask
    pairs; ``data_dir`` replaces the folder (it moved); ``limit`` keeps the first files.
    ``classes`` are the checkpoint's class names (read from ``checkpoint`` when not given
    and a record is there), checked against the record's. Raises DataError (or the
    checkpoint's CheckpointError). ``kind`` (``folder`` or ``seg``) defaults to the spec's
    dataset."""
    task = "segment" if (kind or spec.train.dataset) == "seg" else "classify"
    if checkpoint is not None and classes is None \
            and (Path(checkpoint).parent / DATA_RECORD).is_file():
        classes = _checkpoint_classes(spec, checkpoint)
    record = run_record(checkpoint, classes, task=task)
    root = data_dir or spec.train.data_dir or (record or {}).get("root")
    if not root:
        raise DataError(f"spec {spec.name!r} was trained on a folder of images that it does "
                        "not name; give the folder with --data-dir")
    inp = spec.input
    settings = PixelSettings(inp.channels, (inp.height, inp.width), inp.fit)
    if task == "segment":
        from .seg_dataset import load_seg_split

        return load_seg_split(root, settings, split, record=record, seed=spec.train.seed,
                              test_fraction=spec.train.test_fraction, limit=limit,
                              progress=progress)
    return load_folder_split(root, settings, split, record=record, seed=spec.train.seed,
                             test_fraction=spec.train.test_fraction, limit=limit,
                             progress=progress)
