"""``dropout``: element-wise dropout with probability ``p`` (training only)."""

from __future__ import annotations

from typing import Literal

from ..stages import LayerPlan, Stage, require_features
from .base import Builder, LayerSchema, Planner, Probability, register_op


class DropoutLayer(LayerSchema):
    """Dropout with probability ``p``."""

    op: Literal["dropout"]
    p: Probability


def plan(layer: DropoutLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    return LayerPlan(path, layer.op, layer, inp, inp)


def build(plan: LayerPlan, builder: Builder):
    from torch import nn

    return nn.Dropout(plan.layer.p)


OP = register_op(DropoutLayer, plan, build)
