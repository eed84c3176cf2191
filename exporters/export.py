"""Export a zoo model to any registered artifact format, verified before it is declared
good.

``export_model`` builds the inference graph (:mod:`epdo.exporters.inference`), has the
format build and seal it (:mod:`epdo.exporters.formats`: metadata and digest inside), writes
it to a temporary file beside the target, and loads that file exactly as serving loads it
(:func:`epdo.exporters.runtime.load_classifier`: read once, inspected, digest checked, on
the CPU). It runs the loaded artifact on random and real test images at batch sizes 1 and 7
(one artifact, dynamic batch; fewer real images when fewer are asked for), compares its
logits with the PyTorch model's, and checks invariance under 90 degree rotations when the
group contains them (a segmentation: equivariance of its map). Then the figures go into the
metadata, the artifact is sealed again
(its digest must not change: the model bytes are the ones that were verified), read back
through the same checks, and only then renamed onto the target. A failed verification
raises :class:`VerificationError` and leaves nothing at the target.

The figures and how they are computed: :mod:`epdo.exporters.verification`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epdo.zoo.fileio import atomic_path
from epdo.zoo.spec import Spec
from epdo.zoo.spec.schema import PATH_DATASETS

from .artifact import ArtifactError, ExportError, build_metadata, with_metadata_digest
from .formats import ArtifactFormat, format_named
from .inference import inference_model
from .loading import read_metadata
from .verification import (
    BATCHES,
    Check,
    ExportReport,
    Runner,
    VerificationError,
    failure_text,
    verify,
)

# --------------------------------------------------------------------------- inputs


@functools.lru_cache(maxsize=4)
def _test_images(dataset: str) -> tuple[torch.Tensor, str]:
    """The first 64 test images of a named dataset as float in [0, 1] (whatever the data
    layer stores: float images, or uint8 pixels of a segmentation dataset), else those of
    the embedded sample."""
    from epdo.zoo.data import DataError, load_dataset
    from epdo.zoo.transforms import to_unit_range

    try:
        images, desc = load_dataset(dataset, "test").images[:64], f"{dataset} test split"
    except DataError:
        images = load_dataset("sample", "test").images[:64]
        desc = f"embedded sample test split ({dataset} not found)"
    return to_unit_range(images.clone()), desc


def _folder_test_images(spec: Spec, checkpoint: Path | None,
                        n: int) -> tuple[torch.Tensor | None, str]:
    """The first ``n`` test images a run on a folder recorded, read as training read them
    (the data layer's :func:`~epdo.zoo.data.folder_run.run_split`)."""
    from epdo.zoo.data import DataError
    from epdo.zoo.data.folder_run import run_split
    from epdo.zoo.transforms import to_unit_range

    try:
        test = run_split(spec, checkpoint, "test", limit=n)
    except DataError as exc:
        return None, f"none (the run's image folder cannot be read: {exc})"
    return to_unit_range(test.images[torch.arange(len(test))]), f"{len(test)} test images of " \
        f"{test.source}"


def real_test_images(spec: Spec, n: int,
                     checkpoint: Path | None = None) -> tuple[torch.Tensor | None, str]:
    """Up to ``n`` real test images ``(n, C, H, W)`` in [0, 1] of the spec's dataset (the
    embedded sample when the dataset is absent; a run on a folder: its recorded test files,
    decoded exactly as ``epdo predict`` decodes files), or None with the reason when none
    fit the input shape (then the random inputs alone verify the artifact)."""
    if n <= 0:
        return None, "none requested"
    if spec.train.dataset in PATH_DATASETS:
        return _folder_test_images(spec, checkpoint, n)
    images, desc = _test_images(spec.train.dataset)
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    if tuple(images.shape[1:]) != shape:
        return None, f"none ({desc} has shape {tuple(images.shape[1:])}, the model {shape})"
    return images[:n].clone(), desc


# --------------------------------------------------------------------------- the loaded artifact


def _runner(path: Path, fmt: ArtifactFormat) -> Runner:
    """Logits of the artifact written at ``path``, loaded exactly as serving loads it
    (:func:`~epdo.exporters.runtime.load_classifier` on the CPU; a native-code format is
    trusted: this export built it)."""
    from .runtime import load_classifier

    classifier = load_classifier(path, provider="cpu", trust=fmt.native_code)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(classifier.session.run(x.numpy().astype(np.float32))))

    return run


# --------------------------------------------------------------------------- export


def _resolve_source(source: Any) -> tuple[nn.Module, Spec, Path | None, list[str] | None]:
    """The model, its spec, the checkpoint file and the class names it recorded."""
    if isinstance(source, tuple):
        model, spec = source
        return model, spec, None, None
    from epdo.zoo.checkpoint import (
        CheckpointError,
        checkpoint_classes,
        model_from_checkpoint,
        read_checkpoint,
        resolve_checkpoint,
    )

    try:
        checkpoint = resolve_checkpoint(source)
        data = read_checkpoint(checkpoint)
        model, spec = model_from_checkpoint(data)
        classes = checkpoint_classes(data, spec)
    except CheckpointError as exc:
        raise ExportError(str(exc).strip().splitlines()[0]) from exc
    return model.eval(), spec, checkpoint, classes


def default_path(checkpoint: Path, spec: Spec, format: str) -> Path:
    """``<spec_name><suffix>`` next to the checkpoint (``.onnx``, ``.ts``, ...)."""
    return checkpoint.parent / f"{spec.name}{format_named(format).suffix}"


def _classes(classes: Any, recorded: list[str] | None, spec: Spec,
             num_logits: int) -> list[str]:
    """The class names to record: those given, else the checkpoint's, else the dataset's
    (numbered for a folder dataset nothing recorded); one name per logit."""
    if classes is None:
        classes = recorded
    if classes is None:
        from epdo.zoo.data import dataset_classes

        if spec.train.dataset in PATH_DATASETS:
            classes = [str(i) for i in range(spec.plan.num_classes or 0)]
        else:
            classes = dataset_classes(spec.train.dataset)
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise ExportError(f"classes must be a list of class names (strings), got "
                          f"{type(classes).__name__}")
    if len(classes) != num_logits:
        raise ExportError(f"{len(classes)} class names for a model with {num_logits} logits; "
                          "give one name per logit")
    return list(classes)


def export_model(
    source: str | os.PathLike[str] | tuple[nn.Module, Spec],
    format: str = "onnx",
    path: str | os.PathLike[str] | None = None,
    opset: int | None = None,
    atol: float | None = None,
    force: bool = False,
    *,
    real_images: int = 7,
    seed: int = 0,
    classes: list[str] | None = None,
) -> ExportReport:
    """Export, verify and atomically write an artifact; see the module docstring.

    Args:
        source: a checkpoint file or run directory, or a ``(model, spec)`` pair.
        format: a registered format (:data:`epdo.exporters.formats.FORMATS`: ``onnx``,
            ``torchscript``, ``pt2``, ``aoti``).
        path: the target file; default ``<spec_name><suffix>`` next to the checkpoint
            (required for a ``(model, spec)`` source).
        opset: ONNX opset (default and minimum: the exporter's); other formats ignore it.
        atol: the largest accepted absolute error of the logits (default: the format's).
        force: overwrite an existing target.
        real_images: how many real test images to verify on (up to 64).
        seed: seed of the random verification inputs.
        classes: class names; default those the checkpoint recorded (a folder dataset's
            folder names), else those of the spec's dataset ("0", "1", ... for a folder
            dataset that nothing recorded).

    Returns:
        The :class:`ExportReport` (``report.path`` is the written artifact).

    Raises:
        ExportError: bad arguments, unusable checkpoint, existing target without ``force``,
            a format this machine cannot write (``aoti`` without a C++ compiler).
        VerificationError: the artifact is out of tolerance; nothing is written.
    """
    fmt = format_named(format)
    fmt.require()  # before the checkpoint is read: one line, exit code 2
    atol = fmt.atol if atol is None else atol
    if not (isinstance(atol, (int, float)) and math.isfinite(atol) and atol >= 0):
        raise ExportError(f"--atol {atol}: the tolerance must be a finite number >= 0")
    model, spec, checkpoint, recorded = _resolve_source(source)
    if path is None:
        if checkpoint is None:
            raise ExportError("a (model, spec) export needs an output path")
        target = default_path(checkpoint, spec, format)
    else:
        target = Path(path)
    if target.is_dir():
        raise ExportError(f"{target}: is a directory; give a file path")
    if target.exists() and not force:
        raise ExportError(f"{target}: already exists; pass --force to overwrite it")

    model.eval()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    inputs = {"random": torch.rand((max(BATCHES), *shape), generator=gen)}
    with torch.no_grad():
        num_logits = int(model(inputs["random"][:1]).shape[1])
    classes = _classes(classes, recorded, spec, num_logits)
    real, real_desc = real_test_images(spec, real_images, checkpoint)
    if real is not None:
        inputs["test images"] = real
    built = fmt.build(inference_model(model, spec), inputs["random"][:2], opset=opset)
    report = ExportReport(format=fmt.name, path=str(target), spec_name=spec.name,
                          source=str(checkpoint) if checkpoint else None, atol=atol,
                          real_images=real_desc, task=spec.plan.task, notes=fmt.notes(built))
    with atomic_path(target, suffix=f".tmp{fmt.suffix}") as tmp:
        data, digest = fmt.seal(built, with_metadata_digest(
            build_metadata(spec, classes, report.verification())), target)
        Path(tmp).write_bytes(data)
        report.export_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        verify(_runner(Path(tmp), fmt), model, spec, inputs, report)
        report.verify_seconds = time.perf_counter() - t1
        if not report.passed:
            raise VerificationError(f"verification failed: {failure_text(report)}; nothing "
                                    f"written to {target}", report)
        report.graph_sha256 = digest
        data, sealed = fmt.seal(built, with_metadata_digest(
            build_metadata(spec, classes, report.verification())), target)
        if sealed != digest:
            raise ArtifactError(f"{target}: the artifact changed between verification and "
                                "writing; nothing written")
        Path(tmp).write_bytes(data)
        meta = read_metadata(tmp, trust=False)  # the file as written must read back
    from .model_card import write_model_card

    report.card = str(write_model_card(report, meta, report.speed))
    return report


__all__ = [
    "BATCHES",
    "ArtifactError",
    "Check",
    "ExportError",
    "ExportReport",
    "VerificationError",
    "export_model",
    "real_test_images",
    "verify",
]
