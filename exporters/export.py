"""Export a zoo model to ONNX, TorchScript or torch.export (``.pt2`` program, ``.aoti.pt2``
AOTInductor package), verified before it is declared good.

``export_model`` builds the inference graph (:mod:`epdo.exporters.inference`), writes it
to a temporary file beside the target, runs that file (ONNX in onnxruntime on the CPU,
TorchScript through ``torch.jit.load``, ``.pt2`` / ``.aoti.pt2`` loaded as serving loads
them, :mod:`epdo.exporters.pt2`) on random and real test images at batch sizes 1
and 7 (one artifact, dynamic batch; fewer real images when fewer are asked for),
compares its logits with the PyTorch model's, checks invariance under 90 degree rotations
when the group contains them, writes the metadata
(:mod:`epdo.exporters.metadata`) with the verification figures and the artifact's SHA-256
digest (``epdo.verification.graph_sha256``: of the ONNX graph, or of the TorchScript,
``.pt2`` or ``.aoti.pt2`` archive's entries, which every reader checks), reads it back
through the same checks, and
only then renames the file onto the target. A failed verification raises
:class:`VerificationError` and leaves nothing at the target.

Error figures: ``max_abs = max |a - r|`` and ``max_rel = max |a - r| / max |r|`` over the
logits ``a`` of the artifact and ``r`` of the PyTorch model; ``agreement`` is the fraction
of inputs whose top-1 class is the same.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epdo.zoo.fileio import atomic_path
from epdo.zoo.spec import Spec

from .formats import AOTI, FORMATS, ONNX, PT2, suffix_of
from .inference import inference_model
from .metadata import (
    ArtifactError,
    ExportError,
    build_metadata,
    encode_onnx_props,
    graph_digest,
    read_metadata,
    save_torchscript,
)

BATCHES = (1, 7)
MIN_OPSET = 17

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
    opset: int | None
    atol: float
    real_images: str
    checks: list[Check] = field(default_factory=list)
    rotation_max_rel: float | None = None
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    graph_sha256: str | None = None
    torch_version: str | None = None

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
            "passed": self.passed,
        }
        if self.graph_sha256 is not None:
            out["graph_sha256"] = self.graph_sha256
        if self.torch_version is not None:  # .pt2 / .aoti.pt2: the torch that wrote it
            out["torch_version"] = self.torch_version
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the whole report."""
        return {
            "path": self.path,
            "spec_name": self.spec_name,
            "source": self.source,
            "export_seconds": self.export_seconds,
            "verify_seconds": self.verify_seconds,
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


# --------------------------------------------------------------------------- writers


def write_onnx(module: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    """``module`` as an ONNX graph at ``path``: the TorchScript exporter (dynamic batch,
    input ``images``, output ``logits``), then every Neural ePDO product placeholder
    expanded into standard operators (:mod:`.onnx_product`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            path,
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            custom_opsets={"epdo": 1},
        )
    import onnx

    from .onnx_product import expand_stencil_products

    proto = onnx.load(path)
    if expand_stencil_products(proto):
        onnx.save(proto, path)


def _onnx_runner(path: str) -> Runner:
    import onnxruntime as ort

    from .ort_options import session_options

    session = ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(["logits"], {"images": x.numpy().astype(np.float32)})
        return torch.from_numpy(out)

    return run


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, path)


def _ts_runner(path: str) -> tuple[Runner, torch.jit.ScriptModule]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(path, map_location="cpu")
    loaded.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        # the profiling executor's warm-up runs would only slow the verification down
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return loaded(x)

    return run, loaded


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
    """Fill ``report.checks`` and ``report.rotation_max_rel`` by running the artifact."""
    rotate = spec.group_obj.N % 4 == 0
    worst = 0.0
    for name, x in inputs.items():
        with torch.no_grad():
            ref = model(x)
        out = ref
        for b in sorted({min(b, x.shape[0]) for b in BATCHES}):
            out = run(x[:b].contiguous())
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
    """``<spec_name>.onnx`` / ``.ts`` next to the checkpoint."""
    return checkpoint.parent / f"{spec.name}{suffix_of(format)}"


def export_model(
    source: str | os.PathLike[str] | tuple[nn.Module, Spec],
    format: str = "onnx",
    path: str | os.PathLike[str] | None = None,
    opset: int = MIN_OPSET,
    atol: float = 1e-4,
    force: bool = False,
    *,
    real_images: int = 7,
    seed: int = 0,
    classes: list[str] | None = None,
) -> ExportReport:
    """Export, verify and atomically write an artifact; see the module docstring.

    Args:
        source: a checkpoint file or run directory, or a ``(model, spec)`` pair.
        format: ``onnx``, ``torchscript``, ``pt2`` or ``aoti`` (compiles: needs a C++
            compiler and minutes).
        path: the target file; default ``<spec_name>.onnx|.ts|.pt2|.aoti.pt2`` next to the
            checkpoint (required for a ``(model, spec)`` source).
        opset: ONNX opset (>= 17); ignored for TorchScript.
        atol: the largest accepted absolute error of the logits.
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
            ``aoti`` without a C++ compiler.
        VerificationError: the artifact is out of tolerance; nothing is written.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; use {', '.join(FORMATS[:-1])} or "
                          f"{FORMATS[-1]}")
    if format == AOTI:
        from .pt2 import require_compiler

        require_compiler()  # before the checkpoint is read: one line, exit code 2
    if format == ONNX and opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: the exporter needs ONNX opset {MIN_OPSET} or newer")
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
    if classes is None:
        classes = recorded
    if classes is None:
        from epdo.zoo.data import dataset_classes

        if spec.train.dataset == "folder":  # no record of the folder: numbered classes
            classes = [str(i) for i in range(spec.plan.num_classes or 0)]
        else:
            classes = dataset_classes(spec.train.dataset)

    model.eval()
    t0 = time.perf_counter()
    inf = inference_model(model, spec)
    gen = torch.Generator().manual_seed(seed)
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    inputs = {"random": torch.rand((max(BATCHES), *shape), generator=gen)}
    with torch.no_grad():
        num_logits = int(model(inputs["random"][:1]).shape[-1])
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise ExportError(f"classes must be a list of class names (strings), got "
                          f"{type(classes).__name__}")
    if len(classes) != num_logits:
        raise ExportError(f"{len(classes)} class names for a model with {num_logits} logits; "
                          "give one name per logit")
    classes = list(classes)
    real, real_desc = real_test_images(spec, real_images, checkpoint)
    if real is not None:
        inputs["test images"] = real

    report = ExportReport(format=format, path=str(target), spec_name=spec.name,
                          source=str(checkpoint) if checkpoint else None,
                          opset=opset if format == ONNX else None, atol=atol,
                          real_images=real_desc,
                          torch_version=torch.__version__ if format in (PT2, AOTI) else None)
    with atomic_path(target, suffix=f".tmp{suffix_of(format)}") as tmp_path:
        tmp = str(tmp_path)
        example = inputs["random"][:2]
        loaded: torch.jit.ScriptModule | None = None
        writer: Any = None
        if format == ONNX:
            write_onnx(inf, example, tmp, opset)
        elif format in (PT2, AOTI):
            from .pt2 import ProgramWriter

            writer = ProgramWriter(inf, example, compiled=format == AOTI)
            writer.write(tmp, None)
        else:
            _write_torchscript(inf, example, tmp)
        report.export_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        if format == ONNX:
            run = _onnx_runner(tmp)
        elif format in (PT2, AOTI):
            from .pt2 import program_runner

            run = program_runner(tmp, compiled=format == AOTI)
        else:
            run, loaded = _ts_runner(tmp)
        verify(run, model, spec, inputs, report)
        report.verify_seconds = time.perf_counter() - t1
        if not report.passed:
            raise VerificationError(
                f"verification failed: max abs error {report.max_abs:.3g} (atol {atol:g}), "
                f"top-1 agreement {100 * report.agreement:.1f}%; nothing written to {target}",
                report,
            )
        _write_metadata(tmp, format, spec, classes, report, loaded, writer)
        read_metadata(tmp)  # the file as written must read back
    return report


def _write_metadata(tmp: str, format: str, spec: Spec, classes: list[str],
                    report: ExportReport, loaded: torch.jit.ScriptModule | None,
                    writer: Any = None) -> None:
    if format == ONNX:
        import onnx

        proto = onnx.load(tmp)
        report.graph_sha256 = graph_digest(proto)
        meta = build_metadata(spec, classes, report.verification())
        del proto.metadata_props[:]
        for key, value in encode_onnx_props(meta).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "epdo"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
    elif writer is not None:  # .pt2 / .aoti.pt2: packed again, with metadata and digest
        meta = build_metadata(spec, classes, report.verification())
        report.graph_sha256 = writer.write(tmp, meta)
    else:
        assert loaded is not None
        meta = build_metadata(spec, classes, report.verification())
        report.graph_sha256 = save_torchscript(loaded, tmp, meta)


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
