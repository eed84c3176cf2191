"""What a run minimises and counts, per task.

- ``classify``: logits (B, K) against labels (B,); the loss is the mean cross-entropy over
  the images (weighted by the optional class weights, as below), a batch counts its images
  and its correct top-1 predictions.
- ``segment``: logits (B, K, H, W) against masks (B, H, W); the loss is the per-pixel
  cross-entropy ``-w_t log softmax(z)_t`` averaged over the pixels whose target t is not
  :data:`~epdo.zoo.segmentation_metrics.IGNORE` (weighted by the optional class weights
  ``w``: ``Σ w_t ℓ / Σ w_t``, torch's convention), a batch counts its counted pixels and the
  correctly labelled ones, and evaluation sums the (K, K) confusion matrix.

The counts are tensors on the device: the engine sums them without a host sync per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..segmentation_metrics import IGNORE, confusion_matrix

__all__ = ["Objective"]


class Objective:
    """The loss and counts of one task (see the module docstring)."""

    def __init__(self, task: str, classes: int,
                 class_weights: list[float] | tuple[float, ...] | None = None) -> None:
        if task not in ("classify", "segment"):
            raise ValueError(f"unknown task {task!r}")
        self.task, self.classes = task, classes
        self.dense = task == "segment"
        self.weights = None if class_weights is None else torch.tensor(
            class_weights, dtype=torch.float32)

    @classmethod
    def of(cls, spec: object) -> Objective:
        """The objective of a spec: its plan's task and classes, its training's weights."""
        plan = spec.plan  # type: ignore[attr-defined]
        weights = getattr(spec.train, "class_weights", None)  # type: ignore[attr-defined]
        return cls(plan.task, plan.num_classes or 0, weights)

    def _weight(self, device: torch.device) -> torch.Tensor | None:
        if self.weights is not None and self.weights.device != device:
            self.weights = self.weights.to(device)
        return self.weights

    def loss(self, logits: torch.Tensor, target: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of float32 ``logits`` against ``target`` (ignored pixels skipped)."""
        weight = self._weight(logits.device)
        if not self.dense:
            return F.cross_entropy(logits, target, weight=weight, reduction=reduction)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE,
                               reduction=reduction)

    def counts(self, logits: torch.Tensor, target: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(correct, counted) of one batch: images, or pixels not ignored."""
        right = logits.argmax(1) == target
        if not self.dense:
            return right.sum(), torch.tensor(target.shape[0], device=target.device)
        counted = target != IGNORE
        return (right & counted).sum(), counted.sum()

    def weight_sum(self, target: torch.Tensor) -> torch.Tensor:
        """What a ``mean`` loss of this batch divides by: the images, the counted pixels or
        (with class weights) their summed weights; loss * this is the batch's loss sum."""
        counted = target != IGNORE if self.dense else torch.ones_like(target, dtype=torch.bool)
        if self.weights is None:
            return counted.sum().double()
        return self._weight(target.device)[target[counted]].sum().double()

    def confusion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch's (K, K) confusion matrix (segmentation)."""
        return confusion_matrix(logits, target, self.classes)
