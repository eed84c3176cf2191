"""``pdo_conv``: the linear ePDO convolution (PDO-eConv), a 5x5 equivariant kernel.

``K = sum_(k,i) C_(k,i) (x) stencil(d^(k,i))`` with the coefficients C constrained to the
equivariant solutions (:mod:`epdo.zoo.layers.conv`); padding 2, output size
``(H - 1) // stride + 1``. ``coefficients: h9`` learns the PDO-eConvs CIFAR family instead.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..reps import FeatureType, FieldRep
from ..spec.errors import SpecError
from ..stages import Cost, LayerPlan, Stage, field_type, require_features, strided
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


class PdoConvLayer(ConvStackSchema):
    """Linear ePDO convolution (PDO-eConv) with a 5×5 stencil, padding 2."""

    op: Literal["pdo_conv"]
    fields: Annotated[int, Field(ge=1)]
    type: FieldTypeName = "regular"
    order: Order = 4
    stride: Annotated[int, Field(ge=1)] = 1
    coefficients: Literal["full", "h9"] = "full"
    """full: every equivariant PDO up to ``order``; h9: the PDO-eConvs CIFAR family, the
    rotated H(u,v) = b1 + b2 u + b3 v + b4 u² + b5 uv + b6 v² + b7 u²v + b8 uv² + b9 u²v²
    learned as a 3x3 array (order 4, regular output, trivial or regular input)."""


def _check_h9(layer: PdoConvLayer, path: str, feature: FeatureType, field: FieldRep) -> None:
    """The 9-term family: order 4, regular output fields, trivial or regular input fields."""
    if layer.order != 4:
        raise SpecError(
            f"coefficients: h9 is a family of order-4 PDOs; set order: 4 (got {layer.order})",
            path=f"{path}.order",
        )
    if len(field.reps) != 1 or not field.reps[0].is_regular:
        raise SpecError(
            f"coefficients: h9 maps onto regular fields, not {field.name}; use type: regular "
            "or coefficients: full",
            path=f"{path}.type",
        )
    rep = feature.field.reps
    if len(rep) != 1 or not (rep[0].is_regular or rep[0].dim == 1):
        raise SpecError(
            f"coefficients: h9 reads trivial or regular fields, not {feature.field.name}; "
            "use coefficients: full",
            path=f"{path}.coefficients",
        )


def plan(layer: PdoConvLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    feature = require_features(inp, path)
    field = field_type(inp.group, layer.type, f"{path}.type")
    if layer.coefficients == "h9":
        _check_h9(layer, path, feature, field)
    h, w = strided(inp.height, layer.stride), strided(inp.width, layer.stride)
    mid = inp.resized(h, w, FeatureType(field, layer.fields))
    return LayerPlan(path, layer.op, layer, inp, stack_output(layer, path, mid))


def build(plan: LayerPlan, builder: Builder):
    from ..layers.conv import PDOConv

    layer = plan.layer
    conv = PDOConv(
        plan.inp.feature,
        plan.out.feature,
        layer.order,
        builder.discretization,
        layer.stride,
        layer.bias,
        builder.kernel_basis,
        layer.coefficients,
    )
    return conv_stack(conv, plan)


def cost(plan: LayerPlan) -> Cost:
    """A 5x5 kernel (what it exports to)."""
    return stack_cost(plan, 25)


OP = register_op(PdoConvLayer, plan, build, cost=cost, exactness=stack_exactness)
