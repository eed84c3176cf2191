"""Optimizers and the learning-rate milestones of a spec's ``train`` section.

``lr_milestones`` maps an epoch to the learning rate from then on: epoch ``e`` (0-based,
i.e. after ``e`` completed epochs, as ``torch.optim.lr_scheduler.MultiStepLR`` counts)
trains with the value of the largest milestone ``<= e``, or with ``lr`` before the first.
The paper's MNIST-rot recipe ``{60: 2e-4, 120: 1e-4, ...}`` thus switches to 2e-4 for the
61st epoch. The rate is set at the start of every epoch, so it is a function of the epoch
alone and a resumed run gets the same rates.

Weight decay applies to every parameter (as in the papers' recipes): L2 added to the
gradient for ``adam`` and ``sgd``, decoupled for ``adamw``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..spec import TrainSpec

__all__ = ["lr_at", "make_optimizer", "set_lr"]


def lr_at(epoch: int, base_lr: float, milestones: dict[int, float]) -> float:
    """The learning rate of epoch ``epoch`` (0-based)."""
    reached = [m for m in milestones if m <= epoch]
    return milestones[max(reached)] if reached else base_lr


def make_optimizer(
    params: Iterable[torch.nn.Parameter], train: TrainSpec
) -> torch.optim.Optimizer:
    """The spec's optimizer (``adam``, ``adamw`` or ``sgd``) at the base learning rate."""
    params = list(params)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    raise ValueError(f"unknown optimizer {train.optimizer!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
