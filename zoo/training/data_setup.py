"""A run's data: loaded (a named dataset, a folder of images or of image and mask pairs,
or given), checked against the spec, and the spec fitted to it.

:func:`prepare_data` does it all for :func:`~epdo.zoo.training.train`: it loads the
training and test splits, fits the spec to them (a folder's number of classes in the head,
``auto`` input statistics computed on the training split; :func:`fit_spec`), checks that
their images and labels fit the fitted spec (one label per image for a classifier, one mask
of the image's size for a segmentation, whose last layer is a ``dense_head``), and gives a
:class:`TrainingData` whose tensors the loaders take as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..data.masks import IGNORE
from ..spec import Spec
from ..values import shape_text
from .config import fitted_to_data
from .errors import TrainError
from .progress import Progress
from .rundir import RunDir

__all__ = ["LabeledImages", "TrainingData", "check_data", "fit_spec", "prepare_data"]


class LabeledImages(Protocol):
    """What training needs of a dataset (:class:`epdo.zoo.data.ImageDataset` has it)."""

    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1], or uint8 pixels
    labels: torch.Tensor  # (N,) int64, or masks (N, H, W) uint8 (255: ignore)
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
        self.train_labels = _as_targets(self.train_set.labels)  # (N,) or (N, H, W)
        self.test_images = _as_inputs(self.test_set.images)
        self.test_labels = _as_targets(self.test_set.labels)

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
    elif spec.train.dataset in ("folder", "seg"):
        load = _load_folder if spec.train.dataset == "folder" else _load_seg_folder
        task = "classify" if spec.train.dataset == "folder" else "segment"
        folder = load(spec, _data_record(resume, classes, task), skip_bad, memory_budget,
                      workers, report)
        train_set, test_set = folder.train, folder.test
    else:
        train_set, test_set = _load_data(spec)
    spec = fit_spec(spec, train_set, folder, report)
    check_data(spec, train_set, test_set)
    return spec, TrainingData(train_set, test_set, folder)


def check_data(spec: Spec, train_set: LabeledImages, test_set: LabeledImages) -> None:
    """Both splits have images of the spec's input shape (N, C, H, W), at least one image,
    and one label per image within the head's classes, or for a segmentation spec one mask
    (N, H, W) of the images' size whose values are classes or 255 (ignore);
    :class:`TrainError` otherwise."""
    inp, name = spec.input, spec.name
    expected = (inp.channels, inp.height, inp.width)
    classes = _num_classes(spec)
    dense = spec.plan.task == "segment"
    weights = spec.train.class_weights
    if weights is not None and len(weights) != classes:
        raise TrainError(f"train.class_weights has {len(weights)} weights but spec {name!r} has "
                         f"{classes} classes; give one weight per class")
    for split, ds in (("train", train_set), ("test", test_set)):
        _check_task(spec, ds, dense)
        shape = tuple(ds.images.shape[1:])
        if len(ds.images.shape) != 4 or shape != expected:
            raise TrainError(
                f"dataset {ds.name!r} ({split}) has images of shape {shape_text(shape)} but "
                f"spec {name!r} expects {shape_text(expected)}; choose a matching --dataset "
                "or spec"
            )
        if len(ds.labels) != len(ds.images) or len(ds.images) == 0 or (
                dense and tuple(ds.labels.shape[1:]) != expected[1:]):
            raise TrainError(
                f"dataset {ds.name!r} ({split}) has no images or mismatched "
                + ("masks" if dense else "labels")
            )
        values = ds.labels[ds.labels != IGNORE] if dense else ds.labels
        if not values.numel():
            continue
        top = int(values.max())
        if top >= classes or int(values.min()) < 0:
            raise TrainError(
                f"dataset {ds.name!r} ({split}) has label {top} but spec {name!r} has "
                f"{classes} classes; choose a matching --dataset or spec"
            )


def _check_task(spec: Spec, ds: LabeledImages, dense: bool) -> None:
    """A segmentation spec trains on masks, a classifier on labels (TrainError)."""
    masks = ds.labels.ndim == 3
    if dense and not masks:
        raise TrainError(
            f"spec {spec.name!r} labels every pixel (its last layer is a dense_head) but "
            f"dataset {ds.name!r} has one label per image; train it on seg-sample or "
            "seg:PATH (images/ and masks/)"
        )
    if masks and not dense:
        raise TrainError(
            f"dataset {ds.name!r} labels every pixel but spec {spec.name!r} labels whole "
            "images (its last layer is a head); train a segmentation spec on it, such as "
            "seg_regular_gauss"
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
                 classes: list[str] | None = None,
                 task: str = "classify") -> dict[str, Any] | None:
    """The ``data.json`` of the run being resumed, if it has one (a record of ``task``, its
    class names checked against ``classes``, the resumed checkpoint's, when given)."""
    if resume is None:
        return None
    from ..data.folder_dataset import read_record
    from ..data.folder_run import run_record

    run = RunDir(resume)
    checkpoint = run.resume_checkpoint()
    if checkpoint is not None:
        return run_record(checkpoint, classes, task=task)
    if not run.data.is_file():  # killed before epoch 1
        return None
    return read_record(run.data, task=task)


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


def _load_seg_folder(spec: Spec, record: dict[str, Any] | None, skip_bad: bool,
                     budget: str | int | None, workers: int | None, report: Progress) -> Any:
    """The spec's segmentation folder (images/ and masks/), decoded as the spec's input
    says, its notes reported (always in memory; ``workers`` is not used)."""
    from ..data import DataError
    from ..data.folder_dataset import memory_budget
    from ..data.folder_images import PixelSettings
    from ..data.seg_dataset import load_seg_folder

    t, inp = spec.train, spec.input
    if not t.data_dir:
        raise DataError(f"spec {spec.name!r} trains on a segmentation folder: give it with "
                        "--dataset seg:PATH (PATH/images/ and PATH/masks/)")
    if inp.channels not in (1, 3):
        raise TrainError(f"a segmentation folder is read as 1 (grayscale) or 3 (RGB) "
                         f"channels, but spec {spec.name!r} has {inp.channels}; use "
                         "--channels 1 or 3")
    settings = PixelSettings(inp.channels, (inp.height, inp.width), inp.fit)
    folder = load_seg_folder(t.data_dir, settings, seed=t.seed, test_fraction=t.test_fraction,
                             skip_bad=skip_bad, budget=memory_budget(budget), record=record,
                             progress=report.data_progress)
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


def _as_targets(labels: torch.Tensor) -> torch.Tensor:
    """A split's labels as the loaders take them: int64 labels (N,), or masks (N, H, W)
    kept as they are (uint8: converted on the device)."""
    if labels.ndim == 3:
        return labels.contiguous()
    return labels.long().contiguous()


def _as_inputs(images: Any) -> Any:
    """A split's images as the loaders take them: uint8 pixels and streamed files as they
    are (converted on the device), other tensors as contiguous float32."""
    if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:
        return images.float().contiguous()
    return images
