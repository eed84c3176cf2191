"""What a run reports: the facts shown when it starts, its ``summary.json``, and the
:class:`RunResult` that :func:`~epdo.zoo.training.train` returns.

``summary.json`` (rewritten after every epoch and when the run stops)::

    spec, task ("classify" or "segment"),
    status ("running", "completed", "interrupted", "stopped: ..."), run_dir,
    dataset {name, source, train_images, test_images, classes, + a folder's layout,
             in_memory, skipped, record, files},
    epochs, epochs_completed, best_epoch, best_test_acc, best_test_miou (a segmentation's;
    else null), final (the last metrics record),
    device, precision, amp (mixed precision on or off), world_size, batch_size_per_process,
    parameters, wall_seconds, mean_images_per_s, epdo_version, torch_version
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from epdo import __version__

from ..checkpoint import BEST, LAST
from ..spec import Spec
from .data_setup import TrainingData
from .device import Precision
from .resume_state import BestEpoch
from .rundir import RunDir

__all__ = ["RunFacts", "RunResult", "describe_device"]


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    spec: Spec
    epochs: int
    """Epochs completed."""
    best_epoch: int | None
    best_test_acc: float | None
    final: dict[str, Any] | None
    """The last epoch's ``metrics.jsonl`` record."""
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    best_test_miou: float | None = None
    """A segmentation's best mean IoU (what picked the best epoch)."""

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / BEST

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / LAST


def describe_device(device: torch.device) -> str:
    """``cuda:0 (<GPU name>)`` or ``cpu (<n> threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


@dataclass
class RunFacts:
    """What does not change during a run and is reported about it."""

    spec: Spec
    run_dir: RunDir
    data: TrainingData
    device: torch.device
    precision: Precision
    world_size: int
    parameters: int

    def started(self, *, resumed: bool, start_epoch: int, start_step: int) -> dict[str, Any]:
        """The facts :meth:`~epdo.zoo.training.Progress.run_started` shows."""
        return {
            "run_dir": str(self.run_dir.path), "spec": self.spec.name,
            "parameters": self.parameters, "dataset": self.data.train_set.name,
            "train_images": len(self.data.train_images),
            "test_images": len(self.data.test_images),
            "device": describe_device(self.device), "precision": self.precision.name,
            "batch_size": self.spec.train.batch_size, "world_size": self.world_size,
            "epochs": self.spec.train.epochs, "resumed": resumed,
            "start_epoch": start_epoch, "start_step": start_step,
        }

    def summary(
        self, *, status: str, completed: int, best: BestEpoch | None,
        history: list[dict[str, Any]], wall_seconds: float,
    ) -> dict[str, Any]:
        """The content of ``summary.json`` (module docstring) after ``completed`` epochs."""
        speeds = [r["images_per_s"] for r in history if r["images_per_s"] > 0]
        data = self.data
        return {
            "spec": self.spec.name,
            "task": self.spec.plan.task,
            "status": status,
            "run_dir": str(self.run_dir.path),
            "dataset": {
                "name": data.train_set.name,
                "source": str(getattr(data.train_set, "source", "")),
                "train_images": len(data.train_images),
                "test_images": len(data.test_images),
                "classes": data.classes,
                **self._folder(),
            },
            "epochs": self.spec.train.epochs,
            "epochs_completed": completed,
            "best_epoch": best.epoch if best else None,
            "best_test_acc": best.test_acc if best else None,
            "best_test_miou": best.test_miou if best else None,
            "final": history[-1] if history else None,
            "device": describe_device(self.device),
            "precision": self.precision.name,
            "amp": self.precision.enabled,
            "world_size": self.world_size,
            "batch_size_per_process": self.spec.train.batch_size,
            "parameters": self.parameters,
            "wall_seconds": wall_seconds,
            "mean_images_per_s": sum(speeds) / len(speeds) if speeds else None,
            "epdo_version": __version__,
            "torch_version": str(torch.__version__),
        }

    def _folder(self) -> dict[str, Any]:
        """A folder dataset's entries of the summary's ``dataset``."""
        f = self.data.folder
        if f is None:
            return {}
        return {"layout": f.layout, "in_memory": f.in_memory, "skipped": len(f.skipped),
                "record": str(self.run_dir.data), "files": f.info}

    def result(
        self, *, completed: int, best: BestEpoch | None, history: list[dict[str, Any]],
        summary: dict[str, Any],
    ) -> RunResult:
        """The :class:`RunResult` of the run after ``completed`` epochs."""
        return RunResult(
            run_dir=self.run_dir.path, spec=self.spec, epochs=completed,
            best_epoch=best.epoch if best else None,
            best_test_acc=best.test_acc if best else None,
            final=history[-1] if history else None,
            history=list(history), summary=summary,
            best_test_miou=best.test_miou if best else None,
        )
