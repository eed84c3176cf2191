"""``neural_epdo``: the spatially adaptive Neural ePDO layer (stride 1, size preserved).

The generator has ``num_mid = floor(C / (reduction * |G|))`` regular fields; ``g`` must
divide the input fields and ``s`` both num_mid and g (:mod:`epdo.zoo.layers.neural_epdo`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..reps import FeatureType
from ..spec.errors import SpecError
from ..stages import (
    Cost,
    LayerPlan,
    Stage,
    divisors,
    field_type,
    listing,
    require_features,
)
from .base import (
    Builder,
    ConvStackSchema,
    FieldTypeName,
    Order,
    Planner,
    conv_stack,
    register_op,
    stack_cost,
    stack_exactness,
    stack_output,
)


class NeuralEpdoLayer(ConvStackSchema):
    """Spatially adaptive Neural ePDO layer (stride 1, size preserved)."""

    op: Literal["neural_epdo"]
    fields: Annotated[int, Field(ge=1)]
    type: FieldTypeName = "regular"
    order: Order = 4
    g: Annotated[int, Field(ge=1)] = 4
    s: Annotated[int, Field(ge=1)] = 1
    reduction: Annotated[int, Field(ge=1)] = 1


def plan(layer: NeuralEpdoLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    feature = require_features(inp, path)
    field = field_type(inp.group, layer.type, f"{path}.type")
    num_in, dim, order = feature.count, feature.field.dim, inp.group.order
    if num_in % layer.g:
        raise SpecError(
            f"g={layer.g} must divide the {num_in} input fields; allowed: "
            f"{listing(divisors(num_in))}",
            path=f"{path}.g",
        )
    num_mid = feature.regular_fields_per(layer.reduction)
    if num_mid < 1:
        channels = num_in * dim
        largest = channels // order
        raise SpecError(
            f"reduction={layer.reduction} leaves no generator field: floor({num_in} fields x "
            f"dim {dim} / ({layer.reduction} x |{inp.group.name}|={order})) = 0; "
            + (f"allowed: 1..{largest}" if largest >= 1 else
               f"no reduction works: {channels} channels < |{inp.group.name}| = {order}"),
            path=f"{path}.reduction",
        )
    if num_mid % layer.s or layer.g % layer.s:
        common = [d for d in divisors(layer.g) if num_mid % d == 0]
        raise SpecError(
            f"s={layer.s} must divide both the {num_mid} generator fields and g={layer.g}; "
            f"allowed: {listing(common)}",
            path=f"{path}.s",
        )
    mid = inp.resized(inp.height, inp.width, FeatureType(field, layer.fields))
    out = stack_output(layer, path, mid)
    return LayerPlan(path, layer.op, layer, inp, out, num_mid=num_mid)


def build(plan: LayerPlan, builder: Builder):
    from ..layers.neural_epdo import NeuralEPDO

    layer = plan.layer
    module = NeuralEPDO(
        plan.inp.feature,
        plan.out.feature,
        layer.order,
        layer.g,
        layer.s,
        layer.reduction,
        builder.discretization,
        layer.bias,
        builder.kernel_basis,
    )
    return conv_stack(module, plan)


def cost(plan: LayerPlan) -> Cost:
    """The generator (a 1x1 to ``num_mid`` regular fields, its norm, and the 1x1 to ``g``
    fields of 25 stencil taps per component, in ``s`` groups), the 1x1 out, and per pixel
    the generator's fields, the stencils and the product."""
    layer, inp = plan.layer, plan.inp
    c_in, pixels = inp.feature.channels, inp.height * inp.width
    mid = (plan.num_mid or 0) * inp.group.order
    stencils = layer.g * inp.feature.field.dim * 25
    weights = c_in * mid + 2 * mid + stencils * (mid // layer.s)
    return stack_cost(plan, 1, Cost(weights, pixels * (mid + stencils + c_in)))


OP = register_op(NeuralEpdoLayer, plan, build, cost=cost, exactness=stack_exactness)
