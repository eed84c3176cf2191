"""Evaluation of a trained classifier: test loss, accuracy, confusion matrix, and the
accuracy on the test images rotated by each of a list of angles.

The rotated evaluation is the picture that shows what equivariance buys: an exactly
C_N-invariant model (N divisible by 4) scores *exactly* the same at 90°, 180° and 270° as at
0° (those rotations map the pixel grid onto itself), and nearly the same in between, while a
plain CNN trained on upright images collapses away from 0°.

Order of operations for one angle t: the raw images in [0, 1] are rotated counter-clockwise
by t (:func:`epdo.zoo.transforms.rotate_image`: exact for multiples of 90°, bilinear with
zeros outside otherwise), *then* fed to the model, which normalises them itself (its first
step is the spec's ``(x - mean) / std``), so the zero padding of a rotation is black in
image space, as it would be in a rotated photograph.

Public API::

    report = evaluate_checkpoint("runs/quickstart/<timestamp>", angles=parse_angles("0:360:15"))
    report.accuracy, report.confusion, [a.accuracy for a in report.angles]
    json.dumps(report.to_dict())
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from .checkpoint import model_from_checkpoint, read_checkpoint
from .device import DEVICES, DeviceError
from .device import resolve_device as _resolve_device
from .eval_args import MAX_ANGLES, EvalError, parse_angles
from .scoring import batch_logits, eval_mode
from .segmentation_metrics import IGNORE, SegScores
from .training.objective import Objective
from .training.sampling import IndexedBatches, eval_batches
from .transforms import to_unit_range
from .tta import RotationTTA

__all__ = [
    "DEVICES",
    "MAX_ANGLES",
    "AngleResult",
    "EvalError",
    "EvalReport",
    "evaluate",
    "evaluate_checkpoint",
    "load_dataset",
    "parse_angles",
    "resolve_device",
    "test_set_of",
]

class Dataset(Protocol):
    """What evaluation needs of an :class:`epdo.zoo.data.ImageDataset`."""

    name: str
    split: str
    images: Any  # (N, C, H, W) float32 in [0, 1], tensor or array
    labels: Any  # (N,) int64
    classes: list[str]
    source: str


def load_dataset(name: str, split: str, data_dir: str | os.PathLike[str] | None = None,
                 seed: int = 0) -> Dataset:
    """:func:`epdo.zoo.data.load_dataset` (imported when first needed)."""
    from .data import load_dataset as load

    return load(name, split, data_dir=data_dir, seed=seed)


# --------------------------------------------------------------------------- report


@dataclass
class AngleResult:
    """The test set rotated counter-clockwise by ``degrees``: accuracy in [0, 1], mean
    cross-entropy, number of correctly classified images (pixels, for a segmentation, whose
    mean IoU is ``mean_iou``)."""

    degrees: float
    accuracy: float
    loss: float
    correct: int
    mean_iou: float | None = None

    @property
    def score(self) -> float:
        """The mean IoU of a segmentation, else the accuracy."""
        return self.accuracy if self.mean_iou is None else self.mean_iou


@dataclass
class EvalReport:
    """The evaluation of one model on one dataset split.

    Attributes:
        model: the spec name.
        dataset, split, source: which data (``source``: where it was read from).
        classes: class names, K of them; ``confusion`` is K × K with rows = true labels and
            columns = predicted labels, so ``sum(confusion) == num_images`` and
            ``trace(confusion) / num_images == accuracy`` (a segmentation's counts pixels:
            its sum is ``pixels``, the pixels not ignored, and ``accuracy`` is the pixel
            accuracy).
        loss: mean cross-entropy over the ``num_images`` unrotated test images (pixels).
        task: ``classify`` or ``segment``; a segmentation's report also has ``mean_iou``,
            and per class ``iou`` and ``dice`` (None for a class neither present nor
            predicted), see :mod:`epdo.zoo.segmentation_metrics`.
        angles: one :class:`AngleResult` per requested angle (empty when none were asked);
            0° is the plain test set.
        checkpoint, epoch: the checkpoint file and its completed epochs, when known.
        tta, tta_flip: the model was averaged over ``tta`` rotations by multiples of
            360°/tta, each also mirrored with ``tta_flip`` (:mod:`epdo.zoo.tta`;
            ``tta_views`` = tta or 2·tta forward passes per image); 1, False: the model alone.
        seconds, images_per_second: wall time of the evaluation passes (every angle, after
            a warm-up call) and test images scored per second over them (each angle's
            pass counts its images).
    """

    model: str
    dataset: str
    split: str
    classes: list[str]
    num_images: int
    loss: float
    accuracy: float
    confusion: list[list[int]]
    angles: list[AngleResult] = field(default_factory=list)
    checkpoint: str | None = None
    epoch: int | None = None
    device: str = "cpu"
    source: str | None = None
    task: str = "classify"
    pixels: int | None = None
    mean_iou: float | None = None
    iou: list[float | None] | None = None
    dice: list[float | None] | None = None
    tta: int = 1
    tta_flip: bool = False
    seconds: float | None = None
    images_per_second: float | None = None

    @property
    def tta_views(self) -> int:
        """Forward passes per image: ``tta``, doubled with ``tta_flip``."""
        return self.tta * (2 if self.tta_flip else 1)

    @property
    def score(self) -> float:
        """The mean IoU of a segmentation, else the accuracy."""
        return self.accuracy if self.mean_iou is None else self.mean_iou

    @property
    def score_name(self) -> str:
        return "accuracy" if self.mean_iou is None else "mIoU"

    @property
    def correct(self) -> int:
        """Correctly classified unrotated images (the confusion matrix's trace)."""
        return sum(self.confusion[i][i] for i in range(len(self.confusion)))

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class (diagonal / row sum); None for a class with no images."""
        return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(self.confusion)]

    def angle_accuracy(self, degrees: float) -> float | None:
        """The accuracy at ``degrees`` (None when that angle was not evaluated)."""
        for a in self.angles:
            if math.isclose(a.degrees, degrees, abs_tol=1e-9):
                return a.accuracy
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields, plus ``correct``, ``error``, ``per_class_accuracy``
        and, with angles, ``angle_accuracy_min`` / ``angle_accuracy_mean``."""
        out = asdict(self)
        if self.mean_iou is None:  # a classifier's report has no segmentation entries
            for key in ("pixels", "mean_iou", "iou", "dice"):
                del out[key]
            for angle in out["angles"]:
                del angle["mean_iou"]
        out["correct"] = self.correct
        out["tta_views"] = self.tta_views
        out["error"] = 1.0 - self.accuracy
        out["per_class_accuracy"] = self.per_class_accuracy
        accs = [a.accuracy for a in self.angles]
        out["angle_accuracy_min"] = min(accs) if accs else None
        out["angle_accuracy_mean"] = sum(accs) / len(accs) if accs else None
        if self.mean_iou is not None:
            ious = [a.score for a in self.angles]
            out["angle_miou_min"] = min(ious) if ious else None
            out["angle_miou_mean"] = sum(ious) / len(ious) if ious else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        """The report back from :meth:`to_dict` output (e.g. a saved ``--json`` file)."""
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in names}
        fields = set(AngleResult.__dataclass_fields__)
        kwargs["angles"] = [AngleResult(**{k: v for k, v in a.items() if k in fields})
                            for a in data.get("angles", [])]
        return cls(**kwargs)


# --------------------------------------------------------------------------- evaluation


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:<index>``
    (:func:`epdo.zoo.device.resolve_device`); anything else, or CUDA where there is none, is
    an :class:`EvalError`."""
    try:
        return _resolve_device(device)
    except DeviceError as exc:
        raise EvalError(str(exc)) from None


def _confusion_pass(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    objective: Objective,
    batch_size: int,
    device: torch.device,
    degrees: float,
    workers: int = 0,
) -> tuple[float, torch.Tensor]:
    """Summed cross-entropy and the (K, K) confusion matrix (rows true, columns predicted)
    on the raw images (N, C, H, W) rotated by ``degrees`` (a segmentation's masks (N, H, W)
    rotated with them, nearest, IGNORE outside; ignored pixels not counted). ``workers``
    DataLoader processes gather (or, for streamed files, decode) the batches."""
    k, dense = objective.classes, objective.dense
    loss_sum = 0.0
    confusion = torch.zeros(k, k, dtype=torch.int64)
    n = int(images.shape[0])
    batches = IndexedBatches(images, labels, eval_batches(n, batch_size), workers=workers,
                             pin=device.type == "cuda")
    for logits, y in batch_logits(model, batches, device=device, degrees=degrees):
        expected = (logits.shape[0], k, *y.shape[1:]) if dense else (logits.shape[0], k)
        if tuple(logits.shape) != expected:
            what = "maps" if dense else "logits"
            masks = f" and masks of {y.shape[1]}x{y.shape[2]}" if dense else ""
            raise EvalError(
                f"the model outputs {tuple(logits.shape)} {what} but the dataset has {k} "
                f"classes{masks}; evaluate on the dataset it was trained for (--dataset)"
            )
        y = y.long()
        loss_sum += float(objective.loss(logits, y, reduction="sum"))
        if dense:
            confusion += objective.confusion(logits, y).cpu()
        else:
            index = (y * k + logits.argmax(dim=1)).cpu()
            confusion += torch.bincount(index, minlength=k * k).view(k, k)
    return loss_sum, confusion


def _check_fit(model: nn.Module, images: torch.Tensor, degrees: list[float]) -> None:
    """EvalError when the images (N, C, H, W) do not fit the model's input or the angles."""
    expected = getattr(model, "input_shape", None)
    shape = tuple(images.shape[1:])
    if expected is not None and tuple(expected) != shape:
        c, h, w = expected
        raise EvalError(
            f"the dataset's images are {'x'.join(map(str, shape))} (CxHxW) but the model takes "
            f"{c}x{h}x{w}; evaluate on the dataset it was trained for (--dataset)"
        )
    height, width = shape[-2:]
    odd = [a for a in degrees if (a / 90.0) % 2 == 1.0]
    if height != width and odd:
        raise EvalError(f"rotating {height}x{width} images by {odd[0]:g}° changes their shape; "
                        "angles that are odd multiples of 90° need square images")


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    angles: list[float] | None = None,
    name: str | None = None,
    workers: int | None = None,
    tta: int = 1,
    tta_flip: bool = False,
) -> EvalReport:
    """Evaluate ``model`` on ``dataset`` (no gradients, eval mode; the training mode is
    restored afterwards and the model is moved to ``device``), timing the passes.

    Args:
        model: raw (B, C, H, W) images in [0, 1] -> (B, K) logits (a zoo model normalises
            them itself).
        dataset: an ImageDataset: ``images`` (N, C, H, W) in [0, 1] (or uint8 pixels, or
            files streamed from disk), ``labels`` (N,), ``classes`` (K names).
        angles: degrees (counter-clockwise) of the extra rotated evaluations.
        name: the model's name in the report (default: its spec's name).
        workers: DataLoader processes (default: 0 for images in memory, up to 4 for
            streamed ones).
        tta, tta_flip: score :class:`~epdo.zoo.tta.RotationTTA` ``(model, tta, tta_flip)``
            instead (the softmax averaged over the turned, and mirrored, images); the
            rotations of ``angles`` are applied first, the views to the rotated images.
    """
    if batch_size < 1:
        raise EvalError(f"batch size must be at least 1, got {batch_size}")
    device = resolve_device(device)
    from .data.folder_images import ImageFiles

    images = dataset.images
    if not isinstance(images, ImageFiles):  # in memory: float in [0, 1] or uint8 pixels
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            images = images.to(torch.float32)
    elif workers is None:
        workers = min(4, os.cpu_count() or 1)
    labels = torch.as_tensor(dataset.labels)
    classes = [str(c) for c in dataset.classes]
    k = len(classes)
    dense = labels.ndim == 3
    _check_labels(dataset.name, images, labels, k, dense)
    angles = [float(a) for a in angles] if angles else []
    _check_fit(model, images, angles)
    objective = Objective("segment" if dense else "classify", k)
    scored = _with_tta(model, images, tta, tta_flip)

    n = images.shape[0]
    results: dict[float, tuple[float, torch.Tensor]] = {}  # degrees mod 360 -> loss, confusion
    with eval_mode(scored.to(device)):
        _warm_up(scored, images, batch_size, device)
        start = time.perf_counter()
        for degrees in [0.0, *angles]:
            key = degrees % 360.0
            if key not in results:
                results[key] = _confusion_pass(scored, images, labels, objective, batch_size,
                                               device, key, workers or 0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start

    def result(degrees: float) -> tuple[float, torch.Tensor]:
        return results[degrees % 360.0]

    loss_sum, confusion = result(0.0)
    counted = max(int(confusion.sum()), 1)
    per_angle = []
    for degrees in angles:
        a_loss, a_confusion = result(degrees)
        correct, total = int(a_confusion.trace()), max(int(a_confusion.sum()), 1)
        per_angle.append(AngleResult(
            degrees=degrees, accuracy=correct / total, loss=a_loss / total, correct=correct,
            mean_iou=SegScores.of(a_confusion).mean_iou if dense else None))
    spec = getattr(model, "spec", None)
    report = EvalReport(
        model=name or getattr(spec, "name", type(model).__name__),
        dataset=str(dataset.name),
        split=str(dataset.split),
        classes=classes,
        num_images=n,
        loss=loss_sum / counted,
        accuracy=int(confusion.trace()) / counted,
        confusion=confusion.tolist(),
        angles=per_angle,
        device=str(device),
        source=str(getattr(dataset, "source", "")) or None,
        tta=tta,
        tta_flip=tta_flip,
        seconds=seconds,
        images_per_second=n * len(results) / seconds if seconds > 0 else None,
    )
    if dense:
        seg = SegScores.of(confusion)
        report.task, report.pixels = "segment", seg.pixels
        report.mean_iou, report.iou, report.dice = seg.mean_iou, seg.iou, seg.dice
    return report


def _with_tta(model: nn.Module, images: Any, tta: int, flip: bool) -> nn.Module:
    """``model`` itself (tta 1, no flip) or its :class:`RotationTTA`; EvalError for a count
    below 1 or quarter-turn views of images that are not square."""
    if isinstance(tta, bool) or not isinstance(tta, int) or tta < 1:
        raise EvalError(f"TTA needs at least 1 rotation, got {tta!r}")
    if tta == 1 and not flip:
        return model
    height, width = images.shape[-2:]
    if tta % 4 == 0 and height != width:
        raise EvalError(f"TTA over {tta} rotations turns the {height}x{width} images by 90°, "
                        "which changes their shape; use a count not divisible by 4")
    return RotationTTA(model, tta, flip)


@torch.no_grad()
def _warm_up(model: nn.Module, images: Any, batch_size: int, device: torch.device) -> None:
    """One call at each batch size the passes will use, on images held in memory, before
    the clock starts (lazy initialisation, kernels chosen per shape), so that images/s
    compares models and settings fairly."""
    if isinstance(images, torch.Tensor):
        n = int(images.shape[0])
        for size in dict.fromkeys((min(batch_size, n), n % batch_size or batch_size)):
            model(to_unit_range(images[:size].to(device)))


def _check_labels(name: str, images: torch.Tensor, labels: torch.Tensor, k: int,
                  dense: bool) -> None:
    """EvalError unless there are N > 0 images with one label each (a mask of their size for
    a segmentation), every label a class (or IGNORE in a mask)."""
    n = images.shape[0] if images.ndim == 4 else 0
    shape = (n, *images.shape[2:]) if dense else (n,)
    if images.ndim != 4 or tuple(labels.shape) != shape or n == 0:
        what = "masks (N, H, W)" if dense else "labels (N,)"
        raise EvalError(f"dataset {name!r}: expected images (N, C, H, W) and {what} with "
                        f"N > 0, got {tuple(images.shape)} and {tuple(labels.shape)}")
    values = labels.long()
    if dense:
        values = values[values != IGNORE]
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= k):
        raise EvalError(f"dataset {name!r}: labels outside 0..{k - 1}"
                        + (f" (or {IGNORE}, ignore)" if dense else ""))


def test_set_of(
    data: dict[str, Any],
    spec: Any,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    progress: Any = None,
) -> Dataset:
    """The split a checkpoint (``data``, :func:`~epdo.zoo.checkpoint.read_checkpoint`, of
    ``spec``) is evaluated on: ``dataset`` (default: the spec's ``train.dataset``; the
    spec's ``train.data_dir`` only for the spec's own dataset), or for a run trained on a
    ``folder`` / ``seg`` dataset the test files it recorded (:mod:`.data.folder_run`;
    ``progress(what, done, total)`` follows their decoding)."""
    name = dataset or spec.train.dataset
    for kind in ("folder", "seg"):
        if name.startswith(f"{kind}:"):
            name, data_dir = kind, name[len(kind) + 1:]
            if not data_dir:
                raise EvalError(f"--dataset {kind}:PATH needs the folder after '{kind}:'")
    if name in ("folder", "seg"):
        from .data.folder_run import run_split

        checkpoint = data["path"] if spec.train.dataset == name else None
        return run_split(spec, checkpoint, split, data_dir=data_dir, progress=progress,
                         kind=name)
    if data_dir is None and name == spec.train.dataset:
        data_dir = spec.train.data_dir
    return load_dataset(name, split, data_dir=data_dir)


def evaluate_checkpoint(
    source: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    angles: list[float] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    split: str = "test",
    progress: Any = None,
    tta: int = 1,
    tta_flip: bool = False,
) -> EvalReport:
    """Evaluate a checkpoint file or run directory on the test split of its spec's dataset
    (:func:`test_set_of`), with rotation TTA when asked (:func:`evaluate`). Raises
    CheckpointError, DataError or :class:`EvalError`, each with a one-line message.
    """
    dev = resolve_device(device)
    data = read_checkpoint(source)
    model, spec = model_from_checkpoint(data)
    test = test_set_of(data, spec, dataset=dataset, data_dir=data_dir, split=split,
                       progress=progress)
    report = evaluate(model, test, batch_size=batch_size, device=dev, angles=angles,
                      name=spec.name, tta=tta, tta_flip=tta_flip)
    report.checkpoint = str(data["path"])
    report.epoch = int(data["epoch"])
    return report
