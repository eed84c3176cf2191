"""``head``: the classifier, the last layer. Group pooling (or none), global spatial
pooling, (Linear-BN1d-ReLU)* and a Linear to the class scores."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..stages import LayerPlan, Stage, require_features
from .base import Builder, LayerSchema, Planner, PoolKind, Probability, register_op


class HeadLayer(LayerSchema):
    """Classifier: group pool, global spatial pool, (Linear-BN1d-ReLU)*, Linear -> classes.

    ``group_pool: none`` feeds every channel to the classifier (not invariant: the PDO-eConvs
    CIFAR models); ``preact: true`` starts with a field BatchNorm and ReLU (the final
    BN-ReLU of a pre-activation ResNet).
    """

    op: Literal["head"]
    classes: Annotated[int, Field(ge=2)]
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    group_pool: Literal["max", "avg", "none"] = "max"
    spatial_pool: PoolKind = "max"
    dropout: Probability = 0.0
    preact: bool = False


def plan(layer: HeadLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    return LayerPlan(path, layer.op, layer, inp, Stage(inp.group, None, 1, 1, layer.classes))


def build(plan: LayerPlan, builder: Builder):
    from ..layers.head import ClassifierHead

    layer = plan.layer
    return ClassifierHead(
        plan.inp.feature,
        layer.classes,
        tuple(layer.hidden),
        layer.group_pool,
        layer.spatial_pool,
        layer.dropout,
        layer.preact,
    )


OP = register_op(HeadLayer, plan, build, in_body=False)
