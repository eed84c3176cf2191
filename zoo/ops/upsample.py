"""``upsample``: equivariant x2 upsampling (:mod:`epdo.zoo.layers.upsample`), ``nearest`` or
``bilinear``; field types unchanged, output size ``2H x 2W``."""

from __future__ import annotations

from typing import Literal

from ..stages import LayerPlan, Stage, require_features
from .base import Builder, LayerSchema, Planner, register_op


class UpsampleLayer(LayerSchema):
    """x2 upsampling of every field: ``nearest`` (2x2 blocks) or ``bilinear``."""

    op: Literal["upsample"]
    mode: Literal["nearest", "bilinear"] = "nearest"


def plan(layer: UpsampleLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    return LayerPlan(path, layer.op, layer, inp, inp.resized(2 * inp.height, 2 * inp.width))


def build(plan: LayerPlan, builder: Builder):
    from ..layers.upsample import Upsample

    return Upsample(plan.inp.feature, plan.layer.mode)


OP = register_op(UpsampleLayer, plan, build)
