"""A model's layer table: op, field types, channels, output size, parameters, FLOPs.

FLOPs are forward floating-point operations per image (a multiply-add counts 2), counted by
``torch.utils.flop_counter.FlopCounterMode`` on an eval-mode forward of one image after the
kernels are expanded (kernel expansion is a one-off in eval mode). FlopCounterMode counts
matrix products and convolutions only, so what a module computes beyond them (the spatially
varying 5x5 product of a Neural ePDO: 2 * C * H * W * 25) is added by the module itself,
its ``extra_flops(height, width)`` at the input size it sees in that forward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .builder import ZooModel
from .stages import LayerPlan, Stage

__all__ = ["LayerRow", "ModelSummary", "extra_flops_per_block", "summarize"]


@dataclass
class LayerRow:
    path: str
    op: str
    type_in: str
    type_out: str
    channels_in: int
    channels_out: int
    size_out: str
    params: int
    flops: int


@dataclass
class ModelSummary:
    name: str
    group: str
    discretization: str
    description: str
    input_shape: tuple[int, int, int]
    rows: list[LayerRow]
    params: int
    flops: int

    def to_dict(self) -> dict:
        return asdict(self)


def _type_name(stage: Stage) -> str:
    if stage.feature is None:
        return f"{stage.logits} logits" + (" per pixel" if stage.dense else "")
    return f"{stage.feature.name} ({stage.group.name})"


def _channels(stage: Stage) -> int:
    return stage.feature.channels if stage.feature is not None else stage.logits


def extra_flops_per_block(model: ZooModel, x: torch.Tensor) -> list[int]:
    """FLOPs of ``model(x)`` per block that FlopCounterMode does not see: the sum of
    ``extra_flops(H, W)`` of every module that has one, at the size it is called with, for
    the whole batch of ``x``."""
    counts = [0] * len(model.blocks)
    handles = []
    for i, block in enumerate(model.blocks):
        for module in block.modules():
            if hasattr(module, "extra_flops"):

                def count(mod: torch.nn.Module, args: tuple, i: int = i) -> None:
                    h, w = args[0].shape[-2:]
                    counts[i] += args[0].shape[0] * mod.extra_flops(int(h), int(w))

                handles.append(module.register_forward_pre_hook(count))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return counts


@torch.no_grad()
def summarize(model: ZooModel) -> ModelSummary:
    """Layer table, total parameters and forward FLOPs per image of ``model``."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *model.input_shape)
    extra = extra_flops_per_block(model, x)  # also expands and caches the kernels
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    counts = counter.get_flop_counts()
    model.train(was_training)
    rows = []
    for i, (plan, block) in enumerate(zip(model.plan.layers, model.blocks, strict=True)):
        key = f"ZooModel.blocks.{i}"
        flops = int(sum(counts.get(key, {}).values()))
        flops += extra[i]
        rows.append(_row(plan, block, flops))
    spec = model.spec
    return ModelSummary(
        name=spec.name,
        group=model.plan.input.group.name,
        discretization=spec.discretization,
        description=spec.description,
        input_shape=tuple(model.input_shape),
        rows=rows,
        params=sum(p.numel() for p in model.parameters()),
        flops=sum(r.flops for r in rows),
    )


def _row(plan: LayerPlan, block: torch.nn.Module, flops: int) -> LayerRow:
    out = plan.out
    size = f"{out.height}x{out.width}" if out.feature is not None or out.dense \
        else str(out.logits)
    return LayerRow(
        path=plan.path,
        op=plan.op,
        type_in=_type_name(plan.inp),
        type_out=_type_name(out),
        channels_in=_channels(plan.inp),
        channels_out=_channels(out),
        size_out=size,
        params=sum(p.numel() for p in block.parameters()),
        flops=flops,
    )
