"""A run's data: loaded (a named dataset, a folder of images, or given), checked against
the spec, and the spec fitted to it.

:func:`prepare_data` does it all for :func:`~epdo.zoo.training.train`: it loads the
training and test splits, fits the spec to them (a folder's number of classes in the head,
``auto`` input statistics computed on the training split; :func:`fit_spec`), checks that
their images and labels fit the fitted spec, and gives a :class:`TrainingData` whose tensors
the loaders take as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..spec import Spec
from ..values import shape_text
from .config import fitted_to_data
from .errors import TrainError
from .progress import Progress
from .rundir import RunDir

__all__ = ["LabeledImages", "TrainingData", "check_data", "fit_spec", "prepare_data"]


class LabeledImages(Protocol):
    """What training needs of a dataset (:class:`epdo.zoo.data.ImageDataset` has it)."""

    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    name: str


@dataclass
class TrainingData:
    """A run's two splits, as the loaders take them, and the folder dataset they came from
    (None for a named or given dataset)."""

    train_set: LabeledImages
    test_set: LabeledImages
    folder: Any = None
    """A folder dataset's ``FolderData`` (its record goes to the run's ``data.json``)."""

    def __post_init__(self) -> None:
        self.train_images = _as_inputs(self.train_set.images)  # (N, C, H, W)
        self.train_labels = self.train_set.labels.long().contiguous()  # (N,)
        self.test_images = _as_inputs(self.test_set.images)
        self.test_labels = self.test_set.labels.long().contiguous()

    @property
    def classes(self) -> list[str]:
        """The training split's class names."""
        return list(self.train_set.classes)

    def default_workers(self) -> int:
        """DataLoader workers when none are asked for: 0 for data in memory, up to 4 for
        images streamed from disk."""
        if self.folder is None or self.folder.in_memory:
            return 0
        return min(4, os.cpu_count() or 1)


def prepare_data(
    spec: Spec,
    *,
    data: tuple[LabeledImages, LabeledImages] | None,
    resume: str | os.PathLike[str] | None,
    skip_bad: bool,
    memory_budget: str | int | None,
    workers: int | None,
    report: Progress,
    classes: list[str] | None = None,
) -> tuple[Spec, TrainingData]:
    """The spec fitted to its data, and the data checked against it.

    ``data`` = (train, test) is used as given; otherwise the spec's ``train.dataset`` is
    loaded (a ``folder`` dataset as the spec's input says, following the ``data.json`` of
    the run being resumed, whose class names must be ``classes``, the resumed checkpoint's,
    when given). Raises the data module's ``DataError`` or :class:`TrainError`.
    """
    folder = None
    if data is not None:
        train_set, test_set = data
    elif spec.train.dataset == "folder":
        folder = _load_folder(spec, _data_record(resume, classes), skip_bad, memory_budget,
                              workers, report)
        train_set, test_set = folder.train, folder.test
    else:
        train_set, test_set = _load_data(spec)
    spec = fit_spec(spec, train_set, folder, report)
    check_data(spec, train_set, test_set)
    return spec, TrainingData(train_set, test_set, folder)


def check_data(spec: Spec, train_set: LabeledImages, test_set: LabeledImages) -> None:
    """Both splits have images of the spec's input shape (N, C, H, W), one label per image,
    at least one image, and labels within the head's classes; :class:`TrainError`
    otherwise."""
    inp, name = spec.input, spec.name
    expected = (inp.channels, inp.height, inp.width)
    classes = _num_classes(spec)
    for split, ds in (("train", train_set), ("test", test_set)):
        shape = tuple(ds.images.shape[1:])
        if len(ds.images.shape) != 4 or shape != expected:
            raise TrainError(
                f"dataset {ds.name!r} ({split}) has images of shape {shape_text(shape)} but "
                f"spec {name!r} expects {shape_text(expected)}; choose a matching --dataset "
                "or spec"
            )
        if len(ds.labels) != len(ds.images) or len(ds.images) == 0:
            raise TrainError(
                f"dataset {ds.name!r} ({split}) has no images or mismatched labels"
            )
        top = int(ds.labels.max())
        if top >= classes or int(ds.labels.min()) < 0:
            raise TrainError(
                f"dataset {ds.name!r} ({split}) has label {top} but spec {name!r} has "
                f"{classes} classes; choose a matching --dataset or spec"
            )


def fit_spec(spec: Spec, train_set: LabeledImages, folder: Any, report: Progress) -> Spec:
    """The spec fitted to its data: a folder's number of classes in the head, and ``auto``
    statistics computed on the training split (each change reported as a note)."""
    classes = None
    if folder is not None:
        classes = len(folder.classes)
        if spec.plan.num_classes != classes:
            report.note(f"the head predicts the folder's {classes} classes (spec "
                        f"{spec.name!r} says {spec.plan.num_classes})")
    mean = std = None
    if not spec.input.statistics_known:
        if folder is not None:
            mean, std = folder.mean, folder.std
        else:
            from ..data.statistics import channel_statistics

            mean, std = channel_statistics(train_set.images)
        report.note("input statistics of the training split: mean "
                    + ", ".join(f"{m:.4f}" for m in mean) + "; std "
                    + ", ".join(f"{v:.4f}" for v in std))
    return fitted_to_data(spec, classes=classes, mean=mean, std=std)


def _data_record(resume: str | os.PathLike[str] | None,
                 classes: list[str] | None = None) -> dict[str, Any] | None:
    """The ``data.json`` of the run being resumed, if it has one (its class names checked
    against ``classes``, the resumed checkpoint's, when given)."""
    if resume is None:
        return None
    from ..data.folder_dataset import read_record
    from ..data.folder_run import run_record

    run = RunDir(resume)
    checkpoint = run.resume_checkpoint()
    if checkpoint is not None:
        return run_record(checkpoint, classes)
    return read_record(run.data) if run.data.is_file() else None  # killed before epoch 1


def _load_folder(spec: Spec, record: dict[str, Any] | None, skip_bad: bool,
                 budget: str | int | None, workers: int | None, report: Progress) -> Any:
    """The spec's folder dataset, decoded as the spec's input says, its notes reported."""
    from ..data import DataError
    from ..data.folder_dataset import load_folder, memory_budget
    from ..data.folder_images import PixelSettings

    t, inp = spec.train, spec.input
    if not t.data_dir:
        raise DataError(f"spec {spec.name!r} trains on a folder of images: give it with "
                        "--dataset folder:PATH (one subfolder per class)")
    if inp.channels not in (1, 3):
        raise TrainError(f"a folder dataset is read as 1 (grayscale) or 3 (RGB) channels, "
                         f"but spec {spec.name!r} has {inp.channels}; use --channels 1 or 3")
    if record is not None and record["classes"] and record.get("input") != {
            "channels": inp.channels, "size": list(inp.size), "fit": inp.fit}:
        raise TrainError("the run's data.json was decoded for another input than its spec's; "
                         "start a new run")
    settings = PixelSettings(inp.channels, (inp.height, inp.width), inp.fit)
    folder = load_folder(t.data_dir, settings, seed=t.seed, test_fraction=t.test_fraction,
                         skip_bad=skip_bad, budget=memory_budget(budget), workers=workers,
                         record=record, progress=report.data_progress)
    for line in folder.notes:
        report.note(line)
    return folder


def _load_data(spec: Spec) -> tuple[LabeledImages, LabeledImages]:
    """The spec's named dataset: its training and test splits."""
    from ..data import load_dataset

    t = spec.train
    return load_dataset(t.dataset, "train", t.data_dir), load_dataset(t.dataset, "test", t.data_dir)


def _num_classes(spec: Spec) -> int:
    """The number of classes of a spec's head (a classifier is needed to train)."""
    classes = spec.plan.num_classes
    if classes is None:
        raise TrainError(f"spec {spec.name!r} has no head layer: training needs a classifier")
    return classes


def _as_inputs(images: Any) -> Any:
    """A split's images as the loaders take them: uint8 pixels and streamed files as they
    are (converted on the device), other tensors as contiguous float32."""
    if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:
        return images.float().contiguous()
    return images
