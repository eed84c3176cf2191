"""Type inference for a spec: the group, field types and size between every two layers.

:func:`plan_model` walks the layers of a spec from the input (``input.channels`` trivial
fields) to the head; every layer is planned by its op (:mod:`epdo.zoo.ops`), which computes
its output :class:`~epdo.zoo.stages.Stage` and checks what only the network as a whole can
tell (field types the group provides, the Neural ePDO divisibility rules, sizes that do not
vanish, ...). Errors are :class:`~epdo.zoo.spec.errors.SpecError` carrying the spec path
(``layers[3].g``). A layer with ``repeat: n`` becomes ``n`` plans that all carry the
layer's path; the network plans to at most ``EPDO_MAX_LAYERS`` layers, and its estimated
weights and activations (:func:`plan_cost`, from the plan alone) must fit the limits of
:mod:`epdo.zoo.spec.limits`. A loaded spec holds its plan (:attr:`epdo.zoo.spec.Spec.plan`);
the builder turns it into modules. This module knows nothing about tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .ops import OPS
from .reps import FeatureType, parse_field_type
from .spec.errors import SizeError, SpecError
from .spec.limits import ACTIVATION_BYTES, LAYERS, WEIGHTS
from .stages import Cost, LayerPlan, ModelPlan, Stage, values_of

__all__ = [
    "LayerPlan",
    "ModelPlan",
    "Stage",
    "check_cost",
    "fitting_sizes",
    "input_stage",
    "plan_cost",
    "plan_layers",
    "plan_model",
]

FLOAT_BYTES = 4
"""Bytes of one float32 value."""


def _layer_names(layers: Sequence[Any], prefix: str) -> dict[str, int]:
    """``{name: index}`` of the named layers of the top-level list ``layers``; a repeated
    name is a SpecError at the second one's ``name``."""
    names: dict[str, int] = {}
    for i, layer in enumerate(layers):
        name = getattr(layer, "name", None)
        if name is None:
            continue
        if name in names:
            raise SpecError(
                f"the name {name!r} is already given to {prefix}[{names[name]}]; layer "
                "names are unique",
                path=f"{prefix}[{i}].name",
            )
        names[name] = i
    return names


class _Planner:
    """Plans layer lists; ops with nested layers (``residual``) call back into it.

    It counts the layers it plans and stops at ``EPDO_MAX_LAYERS`` (``repeat`` expanded).
    It remembers the output stage of every named top-level layer (after its last repeat),
    which a ``skip`` asks for with :meth:`tap`; names inside nested layers are refused.
    ``input`` is the network's input stage (a dense head's map must have its size)."""

    def __init__(self, start: Stage) -> None:
        self.input = start
        self.planned = 0
        self.limit = LAYERS.value
        self.depth = 0
        self.names: dict[str, int] = {}
        self.taps: dict[str, Stage] = {}

    def tap(self, name: str, path: str) -> Stage:
        if name in self.taps:
            return self.taps[name]
        if name in self.names:
            raise SpecError(
                f"{name!r} names layers[{self.names[name]}], which does not come before this "
                "skip; a skip reads the output of an earlier layer",
                path=path,
            )
        known = ", ".join(self.taps) or "none"
        raise SpecError(f"no earlier layer is named {name!r}; named so far: {known}", path=path)

    def sequence(
        self, layers: Sequence[Any], prefix: str, stage: Stage
    ) -> tuple[tuple[LayerPlan, ...], Stage]:
        top = self.depth == 0
        if top:
            self.names, self.taps = _layer_names(layers, prefix), {}
        self.depth += 1
        try:
            return self._plan_list(layers, prefix, stage, top)
        finally:
            self.depth -= 1

    def _plan_list(
        self, layers: Sequence[Any], prefix: str, stage: Stage, top: bool
    ) -> tuple[tuple[LayerPlan, ...], Stage]:
        plans: list[LayerPlan] = []
        for i, layer in enumerate(layers):
            path = f"{prefix}[{i}]"
            if stage.feature is None:
                raise SpecError(
                    f"{layer.op!r} after the head: the head must be the last layer", path=path
                )
            repeat = getattr(layer, "repeat", 1)
            for _ in range(repeat):
                self.planned += 1
                if self.planned > self.limit:
                    raise SpecError(
                        f"the network plans to more than {self.limit:,} layers (repeat "
                        f"{repeat:,} here); {LAYERS.hint}",
                        path=f"{path}.repeat" if repeat > 1 else path,
                    )
                plan = OPS[layer.op].plan(layer, path, stage, self)
                plans.append(plan)
                stage = plan.out
            name = getattr(layer, "name", None)
            if name is not None and not top:
                raise SpecError(
                    f"only a top-level layer may have a name (a skip reads the main path); "
                    f"remove name: {name} here",
                    path=f"{path}.name",
                )
            if name is not None:
                self.taps[name] = stage
        return tuple(plans), stage


def input_stage(spec: Any) -> Stage:
    """``input.channels`` trivial fields of the spec's group at the input size."""
    group = spec.group_obj
    feature = FeatureType(parse_field_type(group, "trivial"), spec.input.channels)
    return Stage(group, feature, spec.input.height, spec.input.width)


def _layer_costs(plans: Sequence[LayerPlan]) -> list[tuple[str, Cost]]:
    """The cost of every plan, nested plans (residual bodies) included."""
    out: list[tuple[str, Cost]] = []
    for plan in plans:
        out.append((plan.path, OPS[plan.op].estimate(plan)))
        out.extend(_layer_costs(plan.body))
    return out


def plan_cost(plan: ModelPlan) -> Cost:
    """The model's weights and the values a forward pass computes for one image, estimated
    from the plan (see :class:`~epdo.zoo.stages.Cost`)."""
    return _total(_layer_costs(plan.layers), plan)


def _total(costs: list[tuple[str, Cost]], plan: ModelPlan) -> Cost:
    total = Cost(0, values_of(plan.input))
    for _, cost in costs:
        total = total + cost
    return total


def _size(n: float) -> str:
    """``1.2 GiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _count(n: int) -> str:
    """``1,234`` or, for a large count, ``1.2e+10``."""
    return f"{n:,}" if n < 10**12 else f"{n:.1e}"


def check_cost(plan: ModelPlan) -> Cost:
    """The plan's :func:`plan_cost`, or a SpecError at the largest layer when the weights
    are above ``EPDO_MAX_WEIGHTS`` or one image's values above ``EPDO_MAX_ACTIVATION_BYTES``."""
    costs = _layer_costs(plan.layers)
    total = _total(costs, plan)
    weights_limit, values_limit = WEIGHTS.value, ACTIVATION_BYTES.value
    if total.weights > weights_limit:
        path, top = max(costs, key=lambda item: item[1].weights)
        raise SpecError(
            f"the model would hold about {_count(total.weights)} weights "
            f"({_size(total.weights * FLOAT_BYTES)} as float32; this layer "
            f"{_count(top.weights)}), more than it may: use fewer fields, channels or "
            f"layers, or {WEIGHTS.hint}",
            path=path,
        )
    if total.values * FLOAT_BYTES > values_limit:
        path, top = max(costs, key=lambda item: item[1].values)
        raise SpecError(
            f"a forward pass would compute about {_size(total.values * FLOAT_BYTES)} of "
            f"values for one image (this layer {_size(top.values * FLOAT_BYTES)}), more than "
            f"it may: use a smaller input, fewer fields or pool earlier, or "
            f"{ACTIVATION_BYTES.hint}",
            path=path,
        )
    return total


def plan_layers(spec: Any, height: int, width: int) -> tuple[LayerPlan, ...] | None:
    """The spec's layer plans for a ``height x width`` input (the spec's own size aside), or
    None when they do not plan there (a map that vanishes, a skip or a dense head meeting
    maps of different sizes). The size limits are not checked."""
    start = input_stage(spec)
    stage = Stage(start.group, start.feature, height, width)
    try:
        layers, _ = _Planner(stage).sequence(spec.layers, "layers", stage)
    except SpecError:
        return None
    return layers


def fitting_sizes(spec: Any, most: int = 256) -> list[int]:
    """The square input sizes ``n`` (1 <= n <= ``most``) at which the spec's layers plan
    (skips and a dense head meet maps of equal size), found by planning each."""
    return [n for n in range(1, most + 1) if plan_layers(spec, n, n) is not None]


def _size_hint(spec: Any) -> str:
    """Which square input sizes plan (``multiples of 16``, or the ones nearest the input)."""
    most = max(256, 2 * max(spec.input.height, spec.input.width))
    sizes = fitting_sizes(spec, most)
    if not sizes:
        return f"no square input size up to {most} fits these layers"
    step = sizes[0]
    if sizes == list(range(step, most + 1, step)):
        below = max(step, spec.input.height // step * step)
        return f"input sizes that fit: multiples of {step}, such as {below} or {below + step}"
    near = sorted(sizes, key=lambda n: abs(n - spec.input.height))[:4]
    return "input sizes that fit include " + ", ".join(str(n) for n in sorted(near))


def plan_model(spec: Any) -> ModelPlan:
    """Infer every layer's stages of a validated spec and check the network, its size
    included (:func:`check_cost`); raises SpecError with the key path. A size that makes a
    skip or a dense head meet maps of different sizes is refused with the input sizes that
    fit. (A loaded spec keeps its plan: use ``spec.plan``.)"""
    start = input_stage(spec)
    try:
        layers, out = _Planner(start).sequence(spec.layers, "layers", start)
    except SizeError as err:
        raise SpecError(f"{err.message}; {_size_hint(spec)}", path=err.path) from None
    plan = ModelPlan(input=start, layers=layers, output=out)
    check_cost(plan)
    return plan
