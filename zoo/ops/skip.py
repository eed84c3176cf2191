"""``skip``: join the output of an earlier named top-level layer to the current map, for the
decoder of an encoder-decoder (U-Net) network (:mod:`epdo.zoo.layers.skip`).

``mode: concat`` (the default) stacks the channels, the current map's fields then the tapped
ones: ``a`` fields of type rho here and ``b`` there give ``a + b`` fields of rho. ``mode:
add`` sums two maps of the same fields. Both maps must have the same group, height and
width. The group acts on each part on its own, so the join is exactly equivariant.

The model keeps the outputs of named layers while it runs; :func:`tap_slots` says, from the
plan alone, which outputs to keep and which one each skip reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from ..reps import FeatureType
from ..spec.errors import SizeError, SpecError
from ..stages import Cost, LayerPlan, Stage, require_features, values_of
from .base import Builder, LayerName, LayerSchema, Planner, register_op

__all__ = ["SkipLayer", "tap_slots", "tapped_type"]


class SkipLayer(LayerSchema):
    """Concatenate (or add) the output of an earlier named layer of the same size."""

    model_config = ConfigDict(serialize_by_alias=True)

    op: Literal["skip"]
    from_: Annotated[LayerName, Field(alias="from")]
    mode: Literal["concat", "add"] = "concat"


def tapped_type(plan: LayerPlan) -> FeatureType:
    """The fields a planned skip reads from its named layer: the output's fields after the
    current map's for ``concat``, the current map's own for ``add``."""
    cur, out = plan.inp.feature, plan.out.feature
    if plan.layer.mode == "add":
        return cur
    return FeatureType(cur.field, out.count - cur.count)


def plan(layer: SkipLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    cur = require_features(inp, path)
    where, name = f"{path}.from", layer.from_
    tap = planner.tap(name, where)
    if tap.feature is None:
        raise SpecError(f"{name!r} is the head's output; a skip reads a feature map", where)
    if tap.group != inp.group:
        raise SpecError(
            f"{name!r} has group {tap.group.name} but the map here has {inp.group.name}; a "
            "skip joins maps of one group (restrict after the skip)",
            path=where,
        )
    if (tap.height, tap.width) != (inp.height, inp.width):
        raise SizeError(
            f"{name!r} is {tap.height}x{tap.width} but the map here is "
            f"{inp.height}x{inp.width}; a skip joins maps of the same height and width",
            path=where,
        )
    if layer.mode == "add":
        if tap.feature != cur:
            raise SpecError(
                f"mode add sums the same fields, but the map here has {cur.name} and "
                f"{name!r} has {tap.feature.name}; use mode: concat",
                path=f"{path}.mode",
            )
        return LayerPlan(path, layer.op, layer, inp, inp)
    if tap.feature.field != cur.field:
        raise SpecError(
            f"concat joins fields of one type, but the map here has {cur.field.name} fields "
            f"and {name!r} has {tap.feature.field.name}; map one to the other's type first "
            "(conv1x1)",
            path=where,
        )
    out = inp.resized(inp.height, inp.width, FeatureType(cur.field, cur.count + tap.feature.count))
    return LayerPlan(path, layer.op, layer, inp, out)


def build(plan: LayerPlan, builder: Builder):
    from ..layers.skip import Skip

    return Skip(plan.inp.feature, tapped_type(plan), plan.layer.mode)


def cost(plan: LayerPlan) -> Cost:
    """Its output, and the tapped map it keeps alive until it runs."""
    tap = Stage(plan.inp.group, tapped_type(plan), plan.inp.height, plan.inp.width)
    return Cost(0, values_of(plan.out) + values_of(tap))


def tap_slots(plans: Sequence[LayerPlan]) -> tuple[list[int], list[int]]:
    """Which block outputs a model keeps, and which kept output each skip reads.

    ``plans`` are a model's top-level plans (``repeat`` expanded: one per block). Returns
    ``(keep, source)``, one entry per block: ``keep[i]`` is the slot that block i's output
    is stored in (slots are numbered 0, 1, ... in the order they are filled), or -1;
    ``source[i]`` is the slot a skip block reads, or -1 for any other block. Only the last
    repeat of a named layer is kept (its output is the layer's). Both are -1 throughout for
    a spec without names."""
    keep, source = [-1] * len(plans), [-1] * len(plans)
    slots: dict[str, int] = {}
    for i, plan in enumerate(plans):
        if plan.op == "skip":
            source[i] = slots[plan.layer.from_]
        name = plan.layer.name
        last = i + 1 == len(plans) or plans[i + 1].path != plan.path
        if name is not None and last:
            keep[i] = slots[name] = len(slots)
    return keep, source


OP = register_op(SkipLayer, plan, build, in_body=False, cost=cost)
