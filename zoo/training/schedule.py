"""Optimizers and the learning-rate milestones of a spec's ``train`` section.

``lr_milestones`` maps an epoch to the learning rate from then on: epoch ``e`` (0-based,
i.e. after ``e`` completed epochs, as ``torch.optim.lr_scheduler.MultiStepLR`` counts)
trains with the value of the largest milestone ``<= e``, or with ``lr`` before the first.
The paper's MNIST-rot recipe ``{60: 2e-4, 120: 1e-4, ...}`` thus switches to 2e-4 for the
61st epoch. The rate is set at the start of every epoch, so it is a function of the epoch
alone and a resumed run gets the same rates.

Weight decay is L2 added to the gradient for ``adam`` and ``sgd`` (decoupled for ``adamw``).
It applies to every parameter (``weight_decay_on: all``, the Neural ePDO code), or only to
the weights of convolutions and linear maps (``weights``: not to BatchNorm or FieldNorm
scales and shifts nor to biases, the PDO-eConvs CIFAR code, whose L2 penalty
``1e-3 * tf.nn.l2_loss(w) = 1e-3 * |w|^2 / 2`` is ``weight_decay: 1e-3`` here).
``nesterov: true`` gives SGD Nesterov momentum.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers.norms import FieldNorm
from ..spec import TrainSpec

__all__ = ["lr_at", "make_optimizer", "set_lr"]


def lr_at(epoch: int, base_lr: float, milestones: dict[int, float]) -> float:
    """The learning rate of epoch ``epoch`` (0-based)."""
    reached = [m for m in milestones if m <= epoch]
    return milestones[max(reached)] if reached else base_lr


def decay_groups(
    model: torch.nn.Module, weight_decay: float, scope: str
) -> list[dict[str, object]]:
    """Parameter groups: all parameters with ``weight_decay`` (scope ``all``), or the
    conv/linear weights with it and the rest (normalisation affines, biases) without."""
    params = [p for p in model.parameters() if p.requires_grad]
    if scope == "all" or weight_decay == 0.0:
        return [{"params": params, "weight_decay": weight_decay}]
    if scope != "weights":
        raise ValueError(f"weight_decay_on must be all or weights, got {scope!r}")
    free: set[int] = set()
    for module in model.modules():
        norm = isinstance(module, _BatchNorm | torch.nn.GroupNorm | FieldNorm)
        for pname, p in module.named_parameters(recurse=False):
            if norm or pname == "bias":
                free.add(id(p))
    decayed = [p for p in params if id(p) not in free]
    rest = [p for p in params if id(p) in free]
    return [{"params": decayed, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


def make_optimizer(
    params: Iterable[torch.nn.Parameter] | torch.nn.Module, train: TrainSpec
) -> torch.optim.Optimizer:
    """The spec's optimizer (``adam``, ``adamw`` or ``sgd``) at the base learning rate, over a
    model's parameters (grouped by ``weight_decay_on``) or a plain iterable of parameters."""
    if isinstance(params, torch.nn.Module):
        groups: list = decay_groups(params, train.weight_decay, train.weight_decay_on)
    else:
        groups = [{"params": list(params), "weight_decay": train.weight_decay}]
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, lr=train.lr)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train.lr)
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov
        )
    raise ValueError(f"unknown optimizer {train.optimizer!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
