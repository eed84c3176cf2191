"""``head``: the classifier, the last layer. Group pooling (or none), global spatial
pooling, (Linear-BN1d-ReLU)* and a Linear to the class scores."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..stages import Cost, LayerPlan, Stage, require_features, values_of
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


def cost(plan: LayerPlan) -> Cost:
    """The linear layers (with their BatchNorm) from the pooled features to the classes."""
    layer, feature = plan.layer, plan.inp.feature
    width = feature.channels if layer.group_pool == "none" else feature.count
    widths = [width, *layer.hidden, layer.classes]
    weights = sum(a * b + 3 * b for a, b in zip(widths, widths[1:], strict=False))
    pooled = width * plan.inp.height * plan.inp.width
    return Cost(weights, values_of(plan.inp) + pooled + sum(widths))


def exactness(plan: LayerPlan) -> str | None:
    """Global pooling is exact at any size; without group pooling the classifier reads
    every channel of fields that a turn permutes (any field of dim > 1), so the logits are
    not invariant."""
    feature = plan.inp.feature
    if plan.layer.group_pool == "none" and feature.field.dim > 1:
        return (f"group_pool: none feeds the {feature.channels} channels of "
                f"{feature.name} fields to the classifier, and a turn permutes them: the "
                "logits are not invariant")
    return None


OP = register_op(HeadLayer, plan, build, in_body=False, cost=cost, exactness=exactness)
