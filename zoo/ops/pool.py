"""``pool``: spatial max or average pooling with window and stride ``size``; field types
unchanged, exactly equivariant under the grid rotations when ``size`` divides the size."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..stages import LayerPlan, Stage, pool_break, pooled, require_features
from .base import Builder, LayerSchema, Planner, PoolKind, register_op


class PoolLayer(LayerSchema):
    """Spatial max/avg pooling with window and stride ``size``."""

    op: Literal["pool"]
    kind: PoolKind = "max"
    size: Annotated[int, Field(ge=2)] = 2


def plan(layer: PoolLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    h, w = pooled(inp, layer.size, f"{path}.size")
    return LayerPlan(path, layer.op, layer, inp, inp.resized(h, w))


def build(plan: LayerPlan, builder: Builder):
    from ..layers.pooling import SpatialPool

    return SpatialPool(plan.inp.feature, plan.layer.size, plan.layer.kind)


def exactness(plan: LayerPlan) -> str | None:
    """Exact when ``size`` divides the map's height and width (the windows tile it)."""
    return pool_break(plan.inp.height, plan.inp.width, plan.layer.size)


OP = register_op(PoolLayer, plan, build, exactness=exactness)
