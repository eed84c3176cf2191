"""The one evaluation loop: a model's logits on batches of raw images.

Training's per-epoch test pass (:func:`epdo.zoo.training.loop.evaluate_model`, split across
processes) and the evaluation report (:func:`epdo.zoo.evaluation.evaluate`, with rotated
copies of the test set) both run :func:`batch_logits` and differ only in what they sum.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .data.masks import IGNORE
from .transforms import rotate_image, rotate_masks, to_unit_range

__all__ = ["batch_logits", "eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def batch_logits(
    model: nn.Module,
    batches: Iterable[tuple[Any, ...]],
    *,
    device: torch.device,
    degrees: float = 0.0,
    precision: Any = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """For every ``(images, labels, ...)`` of ``batches`` — raw images (B, C, H, W) in
    [0, 1] or uint8 pixels (divided by 255 on the device) and labels (B,) or masks
    (B, H, W) — the float32 logits (B, K) (maps (B, K, H, W)) of ``model`` on the images
    rotated counter-clockwise by ``degrees``, and the labels (the masks rotated with their
    images, nearest, :data:`~epdo.zoo.data.masks.IGNORE` outside), both on ``device``.
    ``precision`` (a :class:`~epdo.zoo.training.device.Precision`) gives the autocast
    context, if any. The caller chooses the model's mode (:func:`eval_mode`)."""
    channels_last = device.type == "cuda"
    for images, labels, *_ in batches:
        x = to_unit_range(images.to(device, non_blocking=True))
        y = labels.to(device, non_blocking=True)
        if degrees % 360.0:
            x = rotate_image(x, degrees)
            if y.ndim == 3:  # a segmentation's masks turn with their images
                y = rotate_masks(y, degrees, outside=IGNORE)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        context = precision.autocast(device) if precision is not None else contextlib.nullcontext()
        with context:
            logits = model(x)
        yield logits.float(), y
