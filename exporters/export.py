"""Export a zoo model to any registered artifact format, verified before it is declared
good.

``export_model`` builds the inference graph (:mod:`epdo.exporters.inference`), has the
format build and seal it (:mod:`epdo.exporters.formats`: metadata and digest inside), writes
it to a temporary file beside the target, and loads that file exactly as serving loads it
(:func:`epdo.exporters.runtime.load_classifier`: read once, inspected, digest checked, on
the CPU). It runs the loaded artifact on random and real test images at batch sizes 1 and 7
(one artifact, dynamic batch; fewer real images when fewer are asked for), compares its
logits with the PyTorch model's, and checks invariance under 90 degree rotations when the
group contains them. Then the figures go into the metadata, the artifact is sealed again
(its digest must not change: the model bytes are the ones that were verified), read back
through the same checks, and only then renamed onto the target. A failed verification
raises :class:`VerificationError` and leaves nothing at the target.

Error figures: ``max_abs = max |a - r|`` and ``max_rel = max |a - r| / max |r|`` over the
logits ``a`` of the artifact and ``r`` of the PyTorch model; ``agreement`` is the fraction
of inputs whose top-1 class is the same.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epdo.zoo.fileio import atomic_path
from epdo.zoo.spec import Spec

from .artifact import ArtifactError, ExportError, build_metadata, with_metadata_digest
from .formats import ArtifactFormat, format_named
from .inference import inference_model
from .loading import read_metadata

BATCHES = (1, 7)

Runner = Callable[[torch.Tensor], torch.Tensor]


class VerificationError(ExportError):
    """The artifact does not compute what the PyTorch model computes (``report`` says how);
    the command line exits with code 1 (nothing was written)."""

    exit_code = 1


@dataclass
class Check:
    """One comparison of artifact and PyTorch logits."""

    inputs: str
    batch: int
    max_abs: float
    max_rel: float
    agreement: float


@dataclass
class ExportReport:
    """What an export did and how well the artifact agrees with the PyTorch model."""

    format: str
    path: str
    spec_name: str
    source: str | None
    atol: float
    real_images: str
    checks: list[Check] = field(default_factory=list)
    rotation_max_rel: float | None = None
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    graph_sha256: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, float] = field(default_factory=dict)
    card: str | None = None

    @property
    def opset(self) -> int | None:
        """The ONNX opset (None for the other formats)."""
        return self.notes.get("opset")

    @property
    def torch_version(self) -> str | None:
        """The torch that wrote a ``torch.export`` artifact (None for the others)."""
        return self.notes.get("torch_version")

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.checks), default=float("nan"))

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.checks), default=float("nan"))

    @property
    def agreement(self) -> float:
        return min((c.agreement for c in self.checks), default=float("nan"))

    @property
    def passed(self) -> bool:
        """max abs error within ``atol`` and 100% top-1 agreement on every check."""
        return bool(self.checks) and self.max_abs <= self.atol and self.agreement >= 1.0

    def verification(self) -> dict[str, Any]:
        """The figures stored in the artifact's ``epdo.verification`` metadata."""
        out: dict[str, Any] = {
            "format": self.format,
            "opset": self.opset,
            "atol": self.atol,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "agreement": self.agreement,
            "rotation_max_rel": self.rotation_max_rel,
            "real_images": self.real_images,
            "checks": [asdict(c) for c in self.checks],
        }
        if self.checks:  # not before the artifact ran
            out["passed"] = self.passed
        out.update({k: v for k, v in self.notes.items() if k != "opset"})
        if self.graph_sha256 is not None:
            out["graph_sha256"] = self.graph_sha256
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the whole report."""
        return {
            "path": self.path,
            "spec_name": self.spec_name,
            "source": self.source,
            "export_seconds": self.export_seconds,
            "verify_seconds": self.verify_seconds,
            "images_per_s": self.speed,
            "model_card": self.card,
            **self.verification(),
        }


# --------------------------------------------------------------------------- inputs


@functools.lru_cache(maxsize=4)
def _test_images(dataset: str) -> tuple[torch.Tensor, str]:
    from epdo.zoo.data import DataError, load_dataset

    try:
        return load_dataset(dataset, "test").images[:64], f"{dataset} test split"
    except DataError:
        sample = load_dataset("sample", "test").images[:64]
        return sample, f"embedded sample test split ({dataset} not found)"


def _folder_test_images(spec: Spec, checkpoint: Path | None,
                        n: int) -> tuple[torch.Tensor | None, str]:
    """The first ``n`` test images a folder run recorded, read as training read them."""
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
    """Up to ``n`` real test images of the spec's dataset (the embedded sample when the
    dataset is absent; a folder run's recorded test files, decoded exactly as ``epdo
    predict`` decodes files), or None with the reason when none fit the input shape."""
    if n <= 0:
        return None, "none requested"
    if spec.train.dataset == "folder":
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


# --------------------------------------------------------------------------- verification


def _compare(name: str, out: torch.Tensor, ref: torch.Tensor) -> Check:
    diff = (out.double() - ref.double()).abs()
    scale = ref.double().abs().max().item()
    max_abs = diff.max().item()
    return Check(
        inputs=name,
        batch=int(ref.shape[0]),
        max_abs=max_abs,
        max_rel=max_abs / scale if scale > 0 else max_abs,
        agreement=(out.argmax(1) == ref.argmax(1)).double().mean().item(),
    )


def verify(run: Runner, model: nn.Module, spec: Spec, inputs: dict[str, torch.Tensor],
           report: ExportReport) -> None:
    """Fill ``report.checks``, ``report.rotation_max_rel`` and ``report.speed`` (images/s
    per batch size: the fastest of the verification's calls at that size) by running the
    artifact."""
    rotate = spec.group_obj.N % 4 == 0
    worst = 0.0
    fastest: dict[int, float] = {}
    for name, x in inputs.items():
        with torch.no_grad():
            ref = model(x)
        out = ref
        for b in sorted({min(b, x.shape[0]) for b in BATCHES}):
            start = time.perf_counter()
            out = run(x[:b].contiguous())
            seconds = time.perf_counter() - start
            fastest[b] = min(fastest.get(b, seconds), seconds)
            if tuple(out.shape) != tuple(ref[:b].shape):
                raise VerificationError(
                    f"the artifact returned logits of shape {tuple(out.shape)} for {name} "
                    f"inputs of batch {b}, expected {tuple(ref[:b].shape)}", report)
            report.checks.append(_compare(name, out, ref[:b]))
        if rotate:
            # invariance under the generator r (90 degrees) implies it under r^2 and r^3
            base = out.double()
            rotated = run(torch.rot90(x, 1, dims=(2, 3)).contiguous()).double()
            scale = base.abs().max().item() or 1.0
            worst = max(worst, (rotated - base).abs().max().item() / scale)
    report.rotation_max_rel = worst if rotate else None
    report.speed = {f"batch {b}": b / t for b, t in sorted(fastest.items()) if t > 0}


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

        if spec.train.dataset == "folder":
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
        num_logits = int(model(inputs["random"][:1]).shape[-1])
    classes = _classes(classes, recorded, spec, num_logits)
    real, real_desc = real_test_images(spec, real_images, checkpoint)
    if real is not None:
        inputs["test images"] = real
    built = fmt.build(inference_model(model, spec), inputs["random"][:2], opset=opset)
    report = ExportReport(format=fmt.name, path=str(target), spec_name=spec.name,
                          source=str(checkpoint) if checkpoint else None, atol=atol,
                          real_images=real_desc, notes=fmt.notes(built))
    with atomic_path(target, suffix=f".tmp{fmt.suffix}") as tmp:
        data, digest = fmt.seal(built, with_metadata_digest(
            build_metadata(spec, classes, report.verification())), target)
        Path(tmp).write_bytes(data)
        report.export_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        verify(_runner(Path(tmp), fmt), model, spec, inputs, report)
        report.verify_seconds = time.perf_counter() - t1
        if not report.passed:
            raise VerificationError(
                f"verification failed: max abs error {report.max_abs:.3g} (atol {atol:g}), "
                f"top-1 agreement {100 * report.agreement:.1f}%; nothing written to {target}",
                report,
            )
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
    "ArtifactError",
    "Check",
    "ExportError",
    "ExportReport",
    "VerificationError",
    "export_model",
    "real_test_images",
    "verify",
]
