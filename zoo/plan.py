"""Type inference for a spec: the group, field types and size between every two layers.

:func:`plan_model` walks the layers of a spec from the input (``input.channels`` trivial
fields) to the head; every layer is planned by its op (:mod:`epdo.zoo.ops`), which computes
its output :class:`~epdo.zoo.stages.Stage` and checks what only the network as a whole can
tell (field types the group provides, the Neural ePDO divisibility rules, sizes that do not
vanish, ...). Errors are :class:`~epdo.zoo.spec.errors.SpecError` carrying the spec path
(``layers[3].g``). A layer with ``repeat: n`` becomes ``n`` plans that all carry the
layer's path. A loaded spec holds its plan (:attr:`epdo.zoo.spec.Spec.plan`); the builder
turns it into modules. This module knows nothing about tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .ops import OPS
from .reps import FeatureType, parse_field_type
from .spec.errors import SpecError
from .stages import LayerPlan, ModelPlan, Stage

__all__ = ["LayerPlan", "ModelPlan", "Stage", "input_stage", "plan_model"]


class _Planner:
    """Plans layer lists; ops with nested layers (``residual``) call back into it."""

    def sequence(
        self, layers: Sequence[Any], prefix: str, stage: Stage
    ) -> tuple[tuple[LayerPlan, ...], Stage]:
        plans: list[LayerPlan] = []
        for i, layer in enumerate(layers):
            path = f"{prefix}[{i}]"
            if stage.feature is None:
                raise SpecError(
                    f"{layer.op!r} after the head: the head must be the last layer", path=path
                )
            for _ in range(getattr(layer, "repeat", 1)):
                plan = OPS[layer.op].plan(layer, path, stage, self)
                plans.append(plan)
                stage = plan.out
        return tuple(plans), stage


def input_stage(spec: Any) -> Stage:
    """``input.channels`` trivial fields of the spec's group at the input size."""
    group = spec.group_obj
    feature = FeatureType(parse_field_type(group, "trivial"), spec.input.channels)
    return Stage(group, feature, spec.input.height, spec.input.width)


def plan_model(spec: Any) -> ModelPlan:
    """Infer every layer's stages of a validated spec and check the network; raises
    SpecError with the key path. (A loaded spec keeps its plan: use ``spec.plan``.)"""
    start = input_stage(spec)
    layers, out = _Planner().sequence(spec.layers, "layers", start)
    return ModelPlan(input=start, layers=layers, output=out)
