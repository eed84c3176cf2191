"""``restrict``: D_N -> C_N. Channels are kept; a D_N regular field becomes two C_N ones."""

from __future__ import annotations

from typing import Literal

from ..spec.errors import SpecError
from ..stages import LayerPlan, Stage, require_features
from .base import Builder, LayerSchema, Planner, register_op


class RestrictLayer(LayerSchema):
    """Restriction D_N -> C_N; channels are kept, a D_N regular field becomes two C_N ones."""

    op: Literal["restrict"]


def plan(layer: RestrictLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    feature = require_features(inp, path)
    if not inp.group.reflections:
        raise SpecError(
            f"restrict goes from D_N to C_N, but the features are already in "
            f"{inp.group.name} (no reflections)",
            path=f"{path}.op",
        )
    sub = inp.group.rotation_subgroup()
    out = Stage(sub, feature.restrict(sub), inp.height, inp.width)
    return LayerPlan(path, layer.op, layer, inp, out)


def build(plan: LayerPlan, builder: Builder):
    from ..layers.pooling import Restrict

    return Restrict(plan.inp.feature)


OP = register_op(RestrictLayer, plan, build)
