"""``group_pool``: each field becomes one trivial field, the max or mean of its channels
(invariant)."""

from __future__ import annotations

from typing import Literal

from ..reps import FeatureType, parse_field_type
from ..stages import LayerPlan, Stage, require_features
from .base import Builder, LayerSchema, Planner, PoolKind, register_op


class GroupPoolLayer(LayerSchema):
    """Group pooling: each field becomes one trivial field (max or mean of its channels)."""

    op: Literal["group_pool"]
    kind: PoolKind = "max"


def plan(layer: GroupPoolLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    feature = require_features(inp, path)
    trivial = parse_field_type(inp.group, "trivial")
    out = inp.resized(inp.height, inp.width, FeatureType(trivial, feature.count))
    return LayerPlan(path, layer.op, layer, inp, out)


def build(plan: LayerPlan, builder: Builder):
    from ..layers.pooling import GroupPool

    return GroupPool(plan.inp.feature, plan.layer.kind)


OP = register_op(GroupPoolLayer, plan, build)
