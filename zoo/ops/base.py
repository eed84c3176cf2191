"""The op registry: one :class:`Op` per layer kind, registered once, found by its name.

An op is what a spec layer's ``op:`` names. Its definition, in one module of this package,
holds everything the zoo needs to know about it:

- ``schema``: the pydantic model of its YAML mapping (``op: Literal["name"]`` plus its keys);
- ``plan(layer, path, inp, planner) -> LayerPlan``: its output :class:`~epdo.zoo.stages.Stage`
  from its input stage, or a :class:`~epdo.zoo.spec.errors.SpecError` at ``path``;
- ``build(plan, builder) -> nn.Module``: its module (torch is imported inside ``build``, so
  loading and planning a spec never import torch);
- ``cost(plan) -> Cost`` (optional): its weights and the values it computes for one image,
  estimated from the plan, so that a model too large to build is refused before it is
  (:func:`epdo.zoo.plan.plan_cost`); without it, no weights and just its output.
- ``exactness(plan) -> str | None`` (optional): why the planned layer is not exactly
  equivariant under the grid-exact elements of its group (the quarter and half turns and the
  flips that map the pixel grid onto itself) at its planned input size -- a stride, a pool
  or a padding such a turn does not map onto itself -- or None when it is; without it the
  op is exact at every size (:mod:`epdo.zoo.exactness` walks a plan with it).

The module it builds carries the rest: ``export()`` (its inference form in plain PyTorch
ops, see :mod:`epdo.zoo.layers.export`) and, when it computes more than convolutions and
matrix products, ``extra_flops(height, width)``.

Every module of this package is imported by :mod:`epdo.zoo.ops`, and each registers its op
with :func:`register_op`; adding an op is adding one module (and its tests).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator

from ..stages import (
    Cost,
    LayerPlan,
    Stage,
    pool_break,
    pooled,
    stride_break,
    strided,
    values_of,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "OPS",
    "Builder",
    "ConvStackSchema",
    "FieldTypeName",
    "LayerName",
    "LayerSchema",
    "Op",
    "Order",
    "PoolKind",
    "Planner",
    "Probability",
    "conv_stack",
    "register_op",
    "stack_cost",
    "stack_exactness",
    "stack_output",
]


def _check_layer_name(value: str) -> str:
    """``value`` when it is an identifier (a layer name, or a skip's ``from``)."""
    if not value.isidentifier():
        raise ValueError(
            "a layer name is an identifier (letters, digits and _, not starting with a "
            f"digit), such as enc1; got {value!r}"
        )
    return value


LayerName = Annotated[str, AfterValidator(_check_layer_name)]
"""A layer's ``name`` (an identifier), by which a later ``skip`` reads its output."""


class LayerSchema(BaseModel):
    """The schema of one spec layer: unknown keys are errors, values are frozen, types are
    strict (``true`` is not 1, ``1e9`` and ``"8"`` are not integers) and numbers finite.

    Every layer may have a ``name`` (unique in the spec, top-level layers only; checked
    when planning): the planner remembers its output stage, and a later ``skip`` reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    name: Annotated[LayerName | None, Field(exclude_if=lambda v: v is None)] = None


def _check_field_type(value: Any) -> str | list[str]:
    """``"regular"`` or a non-empty list of names; the group checks the names when planning."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(
        "a field type is a name (trivial, regular, quotient<M>) or a non-empty list of "
        f"names such as [regular, quotient4]; got {value!r}"
    )


FieldTypeName = Annotated[str | list[str], PlainValidator(_check_field_type)]
"""A field type as written in a spec: ``regular`` or ``[regular, quotient4]``."""

Order = Annotated[int, Field(ge=0, le=4)]
PoolKind = Literal["max", "avg"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class ConvStackSchema(LayerSchema):
    """A linear map followed by what every conv-like layer may have: BN, ReLU, pool,
    dropout (in that order); ``repeat: n`` stacks n copies."""

    bias: bool = False
    bn: bool = True
    relu: bool = True
    pool: Annotated[int, Field(ge=2)] | None = None
    pool_kind: PoolKind = "max"
    dropout: Probability = 0.0
    repeat: Annotated[int, Field(ge=1)] = 1


class Planner(Protocol):
    """What an op's planner may ask of the whole-model planner: the network's ``input``
    stage, plans of nested layers, and the stages of named layers."""

    input: Stage

    def sequence(
        self, layers: Sequence[Any], prefix: str, stage: Stage
    ) -> tuple[tuple[LayerPlan, ...], Stage]: ...

    def tap(self, name: str, path: str) -> Stage:
        """The output stage of the earlier top-level layer ``name``, or a SpecError at
        ``path`` (no such name, or the layer does not come before)."""
        ...


class Builder(Protocol):
    """What an op's build function may ask of the model builder: the spec's model-wide
    settings, and modules for nested plans."""

    discretization: str
    kernel_basis: str

    def block(self, plan: LayerPlan) -> nn.Module: ...


@dataclass(frozen=True)
class Op:
    """One layer kind: its name, schema, planner and builder.

    ``in_body``: the op may appear inside a residual body (false for the head and for
    containers); ``cost``: the estimate of one planned layer (see :class:`Cost`), nested
    plans (a residual's body) not included; ``exactness``: why a planned layer is not
    exactly equivariant under its group's grid-exact elements, or None (None: always
    exact)."""

    name: str
    schema: type[LayerSchema]
    plan: Callable[[Any, str, Stage, Planner], LayerPlan]
    build: Callable[[LayerPlan, Builder], nn.Module]
    in_body: bool = True
    cost: Callable[[LayerPlan], Cost] | None = None
    exactness: Callable[[LayerPlan], str | None] | None = None

    def estimate(self, plan: LayerPlan) -> Cost:
        """:attr:`cost` of ``plan``, or no weights and its output's values."""
        return self.cost(plan) if self.cost is not None else Cost(0, values_of(plan.out))

    def why_inexact(self, plan: LayerPlan) -> str | None:
        """Why ``plan`` breaks exact equivariance under the grid-exact elements (quarter and
        half turns, flips) at its planned size, from :attr:`exactness`; None when exact."""
        return self.exactness(plan) if self.exactness is not None else None

    @property
    def summary(self) -> str:
        """The first line of the schema's docstring."""
        return (self.schema.__doc__ or "").strip().splitlines()[0]


OPS: dict[str, Op] = {}
"""Every registered op by name, in registration order."""


def _op_name(schema: type[LayerSchema]) -> str:
    field = schema.model_fields.get("op")
    args = typing.get_args(field.annotation) if field is not None else ()
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{schema.__name__} needs a field op: Literal['<name>']")
    return args[0]


def register_op(
    schema: type[LayerSchema],
    plan: Callable[[Any, str, Stage, Planner], LayerPlan],
    build: Callable[[LayerPlan, Builder], nn.Module],
    *,
    in_body: bool = True,
    cost: Callable[[LayerPlan], Cost] | None = None,
    exactness: Callable[[LayerPlan], str | None] | None = None,
) -> Op:
    """Register the op whose schema declares ``op: Literal[name]``; names are unique."""
    op = Op(_op_name(schema), schema, plan, build, in_body, cost, exactness)
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is registered twice")
    OPS[op.name] = op
    return op


def conv_stack(linear: nn.Module, plan: LayerPlan) -> nn.Sequential:
    """``linear`` followed by the layer's BN, ReLU, pool and dropout (a ConvStackSchema)."""
    from torch import nn

    from ..layers.norms import FieldBatchNorm
    from ..layers.pooling import SpatialPool

    layer, out = plan.layer, plan.out.feature
    mods: list[nn.Module] = [linear]
    if layer.bn:
        mods.append(FieldBatchNorm(out))
    if layer.relu:
        mods.append(nn.ReLU(inplace=True))
    if layer.pool:
        mods.append(SpatialPool(out, layer.pool, layer.pool_kind))
    if layer.dropout > 0:
        mods.append(nn.Dropout2d(layer.dropout))
    return nn.Sequential(*mods)


def stack_output(layer: ConvStackSchema, path: str, mid: Stage) -> Stage:
    """The stage after the stack's optional pool, from the linear map's output ``mid``."""
    h, w = pooled(mid, layer.pool, f"{path}.pool")
    return mid.resized(h, w)


def stack_cost(plan: LayerPlan, taps: int, extra: Cost | None = None) -> Cost:
    """The cost of a conv stack whose linear map reads ``taps`` pixels per output (25 for a
    5x5 kernel): the dense kernel, bias and BatchNorm; the map before its pool and the
    output. ``extra``: what the linear map holds and makes beyond that."""
    layer, inp, out = plan.layer, plan.inp, plan.out
    c_in, c_out = inp.feature.channels, out.feature.channels
    stride = getattr(layer, "stride", 1)
    before_pool = c_out * strided(inp.height, stride) * strided(inp.width, stride)
    weights = c_in * c_out * taps + 3 * c_out
    return Cost(weights, before_pool + values_of(out)) + (extra or Cost())


def stack_exactness(plan: LayerPlan) -> str | None:
    """Why a conv stack (a linear map of odd kernel k, padding k // 2 and ``stride``, then an
    optional pool) breaks exact equivariance at its planned size, or None: the stride's
    sampling must be symmetric on the input (:func:`~epdo.zoo.stages.stride_break`: s
    divides n - 1) and the pool's windows must tile the strided map
    (:func:`~epdo.zoo.stages.pool_break`: the pool divides its size)."""
    layer, inp = plan.layer, plan.inp
    stride = getattr(layer, "stride", 1)
    reason = stride_break(inp.height, inp.width, stride) if stride > 1 else None
    if reason is None and layer.pool:
        reason = pool_break(strided(inp.height, stride), strided(inp.width, stride), layer.pool)
    return reason
