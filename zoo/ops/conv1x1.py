"""``conv1x1``: the equivariant 1x1 convolution (the intertwiners between field types);
output size ``(H - 1) // stride + 1``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..reps import FeatureType
from ..stages import Cost, LayerPlan, Stage, field_type, require_features, strided
from .base import (
    Builder,
    ConvStackSchema,
    FieldTypeName,
    Planner,
    conv_stack,
    register_op,
    stack_cost,
    stack_exactness,
    stack_output,
)


class Conv1x1Layer(ConvStackSchema):
    """Equivariant 1×1 convolution (the intertwiners between the field types)."""

    op: Literal["conv1x1"]
    fields: Annotated[int, Field(ge=1)]
    type: FieldTypeName = "regular"
    stride: Annotated[int, Field(ge=1)] = 1


def plan(layer: Conv1x1Layer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    field = field_type(inp.group, layer.type, f"{path}.type")
    h, w = strided(inp.height, layer.stride), strided(inp.width, layer.stride)
    mid = inp.resized(h, w, FeatureType(field, layer.fields))
    return LayerPlan(path, layer.op, layer, inp, stack_output(layer, path, mid))


def build(plan: LayerPlan, builder: Builder):
    from ..layers.conv import Conv1x1

    layer = plan.layer
    conv = Conv1x1(
        plan.inp.feature, plan.out.feature, layer.stride, layer.bias, builder.kernel_basis
    )
    return conv_stack(conv, plan)


def cost(plan: LayerPlan) -> Cost:
    return stack_cost(plan, 1)


OP = register_op(Conv1x1Layer, plan, build, cost=cost, exactness=stack_exactness)
