"""``blur_pool``: anti-aliased downsampling, a fixed 3x3 binomial blur and subsampling by
``stride`` (:mod:`epdo.zoo.layers.blur_pool`); field types unchanged, output size
``(H - 1) // stride + 1``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..stages import LayerPlan, Stage, require_features, stride_break, strided
from .base import Builder, LayerSchema, Planner, register_op


class BlurPoolLayer(LayerSchema):
    """Anti-aliased downsampling: binomial 3x3 blur, then every ``stride``-th pixel."""

    op: Literal["blur_pool"]
    stride: Annotated[int, Field(ge=2)] = 2


def plan(layer: BlurPoolLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    out = inp.resized(strided(inp.height, layer.stride), strided(inp.width, layer.stride))
    return LayerPlan(path, layer.op, layer, inp, out)


def build(plan: LayerPlan, builder: Builder):
    from ..layers.blur_pool import BlurPool

    return BlurPool(plan.inp.feature, plan.layer.stride)


def exactness(plan: LayerPlan) -> str | None:
    """The blur (3x3 binomial, zero padding 1) is symmetric; the subsampling keeps pixels
    0, stride, ..., so the layer is exact when ``stride`` divides H - 1 and W - 1."""
    return stride_break(plan.inp.height, plan.inp.width, plan.layer.stride)


OP = register_op(BlurPoolLayer, plan, build, exactness=exactness)
