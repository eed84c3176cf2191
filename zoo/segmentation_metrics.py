"""Per-pixel scores of a segmentation: the confusion matrix and what is read from it.

For K classes, ``confusion[t, p]`` counts the pixels of true class t predicted as p; pixels
whose target is :data:`IGNORE` (255) are not counted. From it, with ``tp_k = C[k, k]``,
``fp_k = Σ_t C[t, k] - tp_k`` and ``fn_k = Σ_p C[k, p] - tp_k``:

- pixel accuracy ``Σ_k tp_k / Σ C``;
- IoU ``tp_k / (tp_k + fp_k + fn_k)`` and Dice ``2 tp_k / (2 tp_k + fp_k + fn_k)`` per class,
  undefined (None) for a class that is neither present nor predicted;
- mean IoU: the mean over the classes whose IoU is defined (as MMSegmentation and
  torchmetrics do with absent classes left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .data.masks import IGNORE

__all__ = ["IGNORE", "SegScores", "confusion_matrix"]


def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """The (K, K) int64 confusion of the per-pixel argmax of ``logits`` (B, K, H, W) against
    ``target`` (B, H, W) (class indices, :data:`IGNORE` skipped), on their device."""
    pred = logits.argmax(1).reshape(-1)
    true = target.reshape(-1).long()
    keep = true != IGNORE
    index = true[keep] * classes + pred[keep]
    return torch.bincount(index, minlength=classes * classes).view(classes, classes)


@dataclass(frozen=True)
class SegScores:
    """The scores of one confusion matrix (see the module docstring)."""

    confusion: torch.Tensor  # (K, K) int64 on the CPU

    @classmethod
    def of(cls, confusion: torch.Tensor) -> SegScores:
        return cls(confusion.detach().to("cpu", torch.int64))

    @property
    def pixels(self) -> int:
        return int(self.confusion.sum())

    @property
    def pixel_accuracy(self) -> float:
        return float(self.confusion.diagonal().sum()) / max(self.pixels, 1)

    def _parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.confusion.double()
        tp = c.diagonal()
        return tp, c.sum(0) - tp, c.sum(1) - tp

    @property
    def iou(self) -> list[float | None]:
        tp, fp, fn = self._parts()
        union = tp + fp + fn
        return [float(t / u) if u > 0 else None for t, u in zip(tp, union, strict=True)]

    @property
    def dice(self) -> list[float | None]:
        tp, fp, fn = self._parts()
        both = 2 * tp + fp + fn
        return [float(2 * t / b) if b > 0 else None for t, b in zip(tp, both, strict=True)]

    @property
    def mean_iou(self) -> float:
        defined = [v for v in self.iou if v is not None]
        return sum(defined) / len(defined) if defined else 0.0

    def to_dict(self, classes: list[str] | None = None) -> dict[str, Any]:
        """Pixel accuracy, mean IoU, per-class IoU and Dice (keyed by class name when
        given) and the confusion matrix, for JSON."""
        names = classes or [str(k) for k in range(len(self.confusion))]
        return {
            "pixel_accuracy": self.pixel_accuracy,
            "mean_iou": self.mean_iou,
            "iou": dict(zip(names, self.iou, strict=True)),
            "dice": dict(zip(names, self.dice, strict=True)),
            "pixels": self.pixels,
            "confusion": self.confusion.tolist(),
        }
