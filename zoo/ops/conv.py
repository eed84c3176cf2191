"""``conv``: a plain ``Conv2d`` for CNN baselines, allowed only for the trivial group C1
(padding ``kernel // 2``, output size ``(H - 1) // stride + 1``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from ..reps import FeatureType, parse_field_type
from ..spec.errors import SpecError
from ..stages import Cost, LayerPlan, Stage, require_features, strided
from .base import (
    Builder,
    ConvStackSchema,
    Planner,
    conv_stack,
    register_op,
    stack_cost,
    stack_exactness,
    stack_output,
)


class ConvLayer(ConvStackSchema):
    """Plain ``Conv2d`` for CNN baselines; only for the trivial group C1."""

    op: Literal["conv"]
    channels: Annotated[int, Field(ge=1)]
    kernel: Annotated[int, Field(ge=1)] = 5
    stride: Annotated[int, Field(ge=1)] = 1

    @field_validator("kernel")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel must be odd (padding is kernel // 2), got {value}")
        return value


def plan(layer: ConvLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    if inp.group.order != 1:
        raise SpecError(
            f"a plain conv is not equivariant under {inp.group.name}; use pdo_conv or "
            "conv1x1, or set group: C1",
            path=f"{path}.op",
        )
    trivial = parse_field_type(inp.group, "trivial")
    h, w = strided(inp.height, layer.stride), strided(inp.width, layer.stride)
    mid = inp.resized(h, w, FeatureType(trivial, layer.channels))
    return LayerPlan(path, layer.op, layer, inp, stack_output(layer, path, mid))


def build(plan: LayerPlan, builder: Builder):
    from torch import nn

    layer = plan.layer
    conv = nn.Conv2d(
        plan.inp.feature.channels,
        layer.channels,
        layer.kernel,
        layer.stride,
        layer.kernel // 2,
        bias=layer.bias,
    )
    return conv_stack(conv, plan)


def cost(plan: LayerPlan) -> Cost:
    return stack_cost(plan, plan.layer.kernel**2)


OP = register_op(ConvLayer, plan, build, cost=cost, exactness=stack_exactness)
