"""``dense_head``: per-pixel class scores, the last layer of a segmentation network.

Group pooling makes every field one invariant channel, then a per-pixel MLP (1×1
convolutions, BatchNorm and ReLU per hidden width) gives ``classes`` scores at every pixel:
``(B, F·d, H, W) -> (B, classes, H, W)``. Each pixel's scores depend only on invariant
features there, so a grid-exact rotation (or flip) of the input moves the map and leaves
every pixel's scores unchanged: the output map turns with the input.

The map must have the input's size (what the encoder shrinks, the decoder must grow back):
otherwise a :class:`~epdo.zoo.spec.errors.SizeError`, to which the planner adds the input
sizes that fit.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..spec.errors import SizeError
from ..stages import Cost, LayerPlan, Stage, require_features, values_of
from .base import Builder, LayerSchema, Planner, PoolKind, Probability, register_op


class DenseHeadLayer(LayerSchema):
    """Per-pixel classifier: group pool, (1×1 conv-BN-ReLU)*, 1×1 conv -> classes.

    ``preact: true`` starts with a field BatchNorm and ReLU (after a pre-activation trunk).
    """

    op: Literal["dense_head"]
    classes: Annotated[int, Field(ge=2)]
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    group_pool: PoolKind = "max"
    dropout: Probability = 0.0
    preact: bool = False


def plan(layer: DenseHeadLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    start = planner.input
    if (inp.height, inp.width) != (start.height, start.width):
        raise SizeError(
            f"the map here is {inp.height}x{inp.width} but the input is "
            f"{start.height}x{start.width}; a dense head gives scores for every input pixel, "
            "so the decoder must upsample back to the input's size",
            path=path,
        )
    out = Stage(inp.group, None, inp.height, inp.width, layer.classes, dense=True)
    return LayerPlan(path, layer.op, layer, inp, out)


def build(plan: LayerPlan, builder: Builder):
    from ..layers.dense_head import DenseHead

    layer = plan.layer
    return DenseHead(plan.inp.feature, layer.classes, tuple(layer.hidden), layer.group_pool,
                     layer.dropout, layer.preact)


def cost(plan: LayerPlan) -> Cost:
    """The 1×1 layers (with their BatchNorm) and the pooled and hidden maps."""
    layer, feature = plan.layer, plan.inp.feature
    widths = [feature.count, *layer.hidden, layer.classes]
    weights = sum(a * b + 3 * b for a, b in zip(widths, widths[1:], strict=False))
    pixels = plan.inp.height * plan.inp.width
    return Cost(weights, values_of(plan.inp) + pixels * sum(widths))


OP = register_op(DenseHeadLayer, plan, build, in_body=False, cost=cost)
