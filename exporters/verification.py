"""How an exported artifact is held against the PyTorch model: the figures of one export
(:class:`ExportReport`) and the checks that fill them (:func:`verify`).

Error figures: ``max_abs = max |a - r|`` and ``max_rel = max |a - r| / max |r|`` over the
logits ``a`` of the artifact and ``r`` of the PyTorch model; ``agreement`` is the fraction
of inputs (of a segmentation: of pixels) whose top-1 class is the same; it must reach the
task's ``min_agreement`` (:mod:`epdo.exporters.tasks`: 100% of the inputs, 99.9% of the
pixels).

Rotation figures, with ``r`` the quarter turn and ``A`` the artifact: a classifier's
``rotation_max_rel = max |A(r x) - A(x)| / max |A(x)|`` (invariance, reported); a
segmentation's ``rotation_max_abs = max |A(r x) - r A(x)|`` (equivariance of the map: the
map of the turned image is the turned map) and ``rotation_max_rel`` that over
``max |A(x)|``. When the group holds ``r`` the map's figure must be within the format's
``atol`` (``rotation_atol``); for a group without it (C1, a plain CNN) it is measured and
reported, not required (``rotation_atol`` null).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from epdo.zoo.spec import Spec

from .artifact import ExportError
from .tasks import CLASSIFY, Task, task_named

__all__ = ["BATCHES", "Check", "ExportReport", "Runner", "VerificationError", "failure_text",
           "verify"]

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
    task: str = CLASSIFY.name
    checks: list[Check] = field(default_factory=list)
    rotation_max_rel: float | None = None
    rotation_max_abs: float | None = None
    rotation_atol: float | None = None
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
    def kind(self) -> Task:
        """The task of the model (:mod:`epdo.exporters.tasks`)."""
        return task_named(self.task)

    @property
    def min_agreement(self) -> float:
        """The least top-1 agreement accepted: 1.0 of the inputs, 0.999 of the pixels."""
        return self.kind.min_agreement

    @property
    def passed(self) -> bool:
        """max abs error within ``atol``, the task's top-1 agreement on every check, and a
        map's quarter-turn equivariance within ``rotation_atol`` when it is required."""
        turns = self.rotation_atol is None or (self.rotation_max_abs is not None
                                               and self.rotation_max_abs <= self.rotation_atol)
        return (bool(self.checks) and self.max_abs <= self.atol and turns
                and self.agreement >= self.min_agreement)

    def rotation_text(self) -> str | None:
        """The rotation figure in words (None when it was not measured)."""
        if self.rotation_max_rel is None:
            return None
        if not self.kind.dense:
            return (f"90 degree rotation invariance of the logits: max relative difference "
                    f"{self.rotation_max_rel:.2e}")
        held = "not required: the group has no quarter turn" if self.rotation_atol is None \
            else f"atol {self.rotation_atol:g}"
        return (f"90 degree rotation equivariance of the map (the turned image's map against the "
                f"turned map): max abs difference {self.rotation_max_abs:.2e} ({held}), "
                f"relative {self.rotation_max_rel:.2e}")

    def verification(self) -> dict[str, Any]:
        """The figures stored in the artifact's ``epdo.verification`` metadata."""
        out: dict[str, Any] = {
            "format": self.format,
            "opset": self.opset,
            "atol": self.atol,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "agreement": self.agreement,
            "min_agreement": self.min_agreement,
            "rotation_max_rel": self.rotation_max_rel,
            "real_images": self.real_images,
            "checks": [asdict(c) for c in self.checks],
        }
        if self.kind.dense:
            out.update(rotation_max_abs=self.rotation_max_abs, rotation_atol=self.rotation_atol)
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
            "task": self.task,
            "model_card": self.card,
            **self.verification(),
        }


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


def _quarter_turn(run: Runner, x: torch.Tensor, out: torch.Tensor,
                  dense: bool) -> tuple[float, float]:
    """``(max abs, max rel)`` difference between the artifact's output for the quarter-turned
    inputs ``r x`` and ``out = A(x)`` (a map: turned, ``r A(x)``); rel is over ``max |A(x)|``.
    Invariance (or equivariance) under the generator ``r`` implies it under ``r^2``, ``r^3``."""
    base = out.double()
    if dense:
        base = torch.rot90(base, 1, dims=(2, 3))
    turned = run(torch.rot90(x, 1, dims=(2, 3)).contiguous()).double()
    if turned.shape != base.shape:
        return math.inf, math.inf
    diff = (turned - base).abs().max().item()
    return diff, diff / (base.abs().max().item() or 1.0)


def verify(run: Runner, model: nn.Module, spec: Spec, inputs: dict[str, torch.Tensor],
           report: ExportReport) -> None:
    """Fill ``report.checks``, the rotation figures and ``report.speed`` (images/s per batch
    size: the fastest of the verification's calls at that size) by running the artifact.

    A classifier is checked for invariance under the quarter turn when its group holds it;
    a segmentation's map for equivariance always on a square input (required within
    ``report.atol`` when the group holds the turn, else only measured)."""
    dense = report.kind.dense
    square = spec.input.height == spec.input.width
    turns = spec.group_obj.N % 4 == 0
    rotate = square and (turns or dense)
    report.rotation_atol = report.atol if dense and rotate and turns else None
    worst = worst_abs = 0.0
    fastest: dict[int, float] = {}
    for name, x in inputs.items():
        with torch.no_grad():
            ref = model(x)
        out, b = ref, x.shape[0]
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
            diff, rel = _quarter_turn(run, x[:b], out, dense)
            worst, worst_abs = max(worst, rel), max(worst_abs, diff)
    report.rotation_max_rel = worst if rotate else None
    report.rotation_max_abs = worst_abs if rotate else None
    report.speed = {f"batch {b}": b / t for b, t in sorted(fastest.items()) if t > 0}


def failure_text(report: ExportReport) -> str:
    """The figures of a failed verification, for its one-line error."""
    text = (f"max abs error {report.max_abs:.3g} (atol {report.atol:g}), "
            f"{report.kind.agreement_name} {100 * report.agreement:.2f}% (at least "
            f"{100 * report.min_agreement:g}%)")
    if report.rotation_atol is not None:
        text += (f", quarter-turn map equivariance error {report.rotation_max_abs:.3g} "
                 f"(atol {report.rotation_atol:g})")
    return text
