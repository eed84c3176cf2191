"""A model's layer table: op, field types, channels, output size, parameters, FLOPs.

FLOPs are forward floating-point operations per image (a multiply-add counts 2), counted by
``torch.utils.flop_counter.FlopCounterMode`` on an eval-mode forward of one image after the
kernels are expanded (kernel expansion is a one-off in eval mode). FlopCounterMode counts
matrix products and convolutions only, so the spatially varying 5x5 product of each Neural
ePDO layer (elementwise multiply-adds) is added analytically: 2 * C * H * W * 25.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .builder import ZooModel
from .layers.neural_epdo import NeuralEPDO
from .plan import LayerPlan, Stage


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
        return "vector"
    return f"{stage.feature.name} ({stage.group.name})"


def _channels(stage: Stage) -> int:
    return stage.feature.channels if stage.feature is not None else 0


def _extra_flops(module: torch.nn.Module, height: int, width: int) -> int:
    """Elementwise multiply-adds of the Neural ePDO products inside ``module``."""
    total = 0
    for m in module.modules():
        if isinstance(m, NeuralEPDO):
            total += 2 * m.in_type.channels * height * width * m.kernel_size**2
    return total


@torch.no_grad()
def summarize(model: ZooModel) -> ModelSummary:
    """Layer table, total parameters and forward FLOPs per image of ``model``."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *model.input_shape)
    model(x)  # expand and cache the kernels
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    counts = counter.get_flop_counts()
    model.train(was_training)
    rows = []
    for i, (plan, block) in enumerate(zip(model.plan.layers, model.blocks, strict=True)):
        key = f"ZooModel.blocks.{i}"
        flops = int(sum(counts.get(key, {}).values()))
        flops += _extra_flops(block, plan.inp.height, plan.inp.width)
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
    size = f"{out.height}x{out.width}" if out.feature is not None else "-"
    if plan.op == "head":
        size = str(plan.layer.classes)
    return LayerRow(
        path=plan.path,
        op=plan.op,
        type_in=_type_name(plan.inp),
        type_out=_type_name(out) if plan.op != "head" else f"{plan.layer.classes} logits",
        channels_in=_channels(plan.inp),
        channels_out=_channels(out) if plan.op != "head" else plan.layer.classes,
        size_out=size,
        params=sum(p.numel() for p in block.parameters()),
        flops=flops,
    )
