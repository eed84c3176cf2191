"""Type inference for a spec: the group, field types and size between every two layers.

:func:`plan_model` walks the layers of a :class:`~epdo.zoo.spec.Spec` from the input
(``input.channels`` trivial fields) to the head, computing each layer's output
:class:`Stage` and checking what only the network as a whole can tell: field types the
group provides, the Neural ePDO divisibility rules, sizes that do not vanish, plain convs
only for C1, restriction only from D_N, the head last, residual shortcuts that fit.
Errors are :class:`~epdo.zoo.spec.SpecError` carrying the spec path (``layers[3].g``).

A layer with ``repeat: n`` becomes ``n`` plans that all carry the layer's path. The builder
turns the plan into modules; for a conv-like layer ``out`` is the stage after its pool.
This module knows nothing about tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .groups import Group
from .reps import FeatureType, FieldType, parse_field_type
from .spec import (
    Conv1x1Layer,
    ConvLayer,
    GroupPoolLayer,
    HeadLayer,
    Layer,
    NeuralEpdoLayer,
    PdoConvLayer,
    PoolLayer,
    ResidualLayer,
    Spec,
    SpecError,
)

__all__ = ["LayerPlan", "ModelPlan", "Stage", "input_stage", "neural_epdo_mid", "plan_model"]


@dataclass(frozen=True)
class Stage:
    """What flows between two layers: ``feature`` fields of ``group`` at ``height × width``.

    ``feature`` is None after the head (its output is a vector of class scores).
    """

    group: Group
    feature: FeatureType | None
    height: int
    width: int

    def describe(self) -> str:
        """``16x regular C16 @ 28x28``."""
        what = "logits" if self.feature is None else self.feature.name
        return f"{what} {self.group.name} @ {self.height}x{self.width}"


@dataclass(frozen=True)
class LayerPlan:
    """One (repeated) layer with its input and output stages.

    ``body``/``shortcut``/``shortcut_stride`` are set for residual blocks (``shortcut`` is
    ``"identity"`` or ``"conv1x1"``); ``num_mid`` is the number of regular fields of a
    Neural ePDO's generator.
    """

    path: str
    op: str
    layer: Layer
    inp: Stage
    out: Stage
    body: tuple[LayerPlan, ...] = ()
    shortcut: str | None = None
    shortcut_stride: int = 1
    num_mid: int | None = None


@dataclass(frozen=True)
class ModelPlan:
    """The planned network: input stage, the layers (repeats expanded), output stage."""

    spec: Spec
    input: Stage
    layers: tuple[LayerPlan, ...]
    output: Stage

    @property
    def num_classes(self) -> int | None:
        """The head's number of classes (None for a network without head)."""
        last = self.layers[-1].layer if self.layers else None
        return last.classes if isinstance(last, HeadLayer) else None


# --------------------------------------------------------------------------- helpers


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _listing(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def _field_type(group: Group, name: str | list[str], path: str) -> FieldType:
    try:
        return parse_field_type(group, name)
    except ValueError as exc:
        raise SpecError(str(exc), path=path) from None


def _strided(size: int, stride: int) -> int:
    """Output size of a conv with odd kernel k, padding k // 2 and ``stride``."""
    return (size - 1) // stride + 1


def _pooled(stage: Stage, size: int | None, path: str) -> tuple[int, int]:
    if size is None:
        return stage.height, stage.width
    if stage.height < size or stage.width < size:
        raise SpecError(
            f"pooling by {size} would shrink {stage.height}x{stage.width} below 1x1",
            path=path,
        )
    return stage.height // size, stage.width // size


def _features(stage: Stage, path: str) -> FeatureType:
    if stage.feature is None:
        raise SpecError("nothing can follow the head", path=path)
    return stage.feature


# --------------------------------------------------------------------------- layers


def _plan_equivariant_conv(
    layer: PdoConvLayer | Conv1x1Layer, path: str, inp: Stage
) -> LayerPlan:
    """pdo_conv (5x5, padding 2) and conv1x1 share the size rule (H - 1) // stride + 1."""
    feature = _features(inp, path)
    field = _field_type(inp.group, layer.type, f"{path}.type")
    if getattr(layer, "coefficients", "full") == "h9":
        _check_h9(layer, path, feature, field)
    h, w = _strided(inp.height, layer.stride), _strided(inp.width, layer.stride)
    mid = Stage(inp.group, FeatureType(field, layer.fields), h, w)
    h, w = _pooled(mid, layer.pool, f"{path}.pool")
    return LayerPlan(path, layer.op, layer, inp, Stage(inp.group, mid.feature, h, w))


def _check_h9(layer: PdoConvLayer, path: str, feature: FeatureType, field: FieldType) -> None:
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


def _plan_conv(layer: ConvLayer, path: str, inp: Stage) -> LayerPlan:
    _features(inp, path)
    if inp.group.order != 1:
        raise SpecError(
            f"a plain conv is not equivariant under {inp.group.name}; use pdo_conv or "
            "conv1x1, or set group: C1",
            path=f"{path}.op",
        )
    trivial = parse_field_type(inp.group, "trivial")
    h, w = _strided(inp.height, layer.stride), _strided(inp.width, layer.stride)
    mid = Stage(inp.group, FeatureType(trivial, layer.channels), h, w)
    h, w = _pooled(mid, layer.pool, f"{path}.pool")
    return LayerPlan(path, layer.op, layer, inp, Stage(inp.group, mid.feature, h, w))


def neural_epdo_mid(num_in: int, dim: int, group_order: int, reduction: int) -> int | None:
    """Generator width ``floor(num_in * dim / (reduction * |G|))`` regular fields (the
    paper's rule), or None when that is below 1."""
    mid = (num_in * dim) // (reduction * group_order)
    return mid if mid >= 1 else None


def _plan_neural_epdo(layer: NeuralEpdoLayer, path: str, inp: Stage) -> LayerPlan:
    feature = _features(inp, path)
    field = _field_type(inp.group, layer.type, f"{path}.type")
    num_in, dim, order = feature.count, feature.field.dim, inp.group.order
    if num_in % layer.g:
        raise SpecError(
            f"g={layer.g} must divide the {num_in} input fields; allowed: "
            f"{_listing(_divisors(num_in))}",
            path=f"{path}.g",
        )
    num_mid = neural_epdo_mid(num_in, dim, order, layer.reduction)
    if num_mid is None:
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
        common = [d for d in _divisors(layer.g) if num_mid % d == 0]
        raise SpecError(
            f"s={layer.s} must divide both the {num_mid} generator fields and g={layer.g}; "
            f"allowed: {_listing(common)}",
            path=f"{path}.s",
        )
    mid = Stage(inp.group, FeatureType(field, layer.fields), inp.height, inp.width)
    h, w = _pooled(mid, layer.pool, f"{path}.pool")
    out = Stage(inp.group, mid.feature, h, w)
    return LayerPlan(path, layer.op, layer, inp, out, num_mid=num_mid)


def _plan_pool(layer: PoolLayer, path: str, inp: Stage) -> LayerPlan:
    _features(inp, path)
    h, w = _pooled(inp, layer.size, f"{path}.size")
    return LayerPlan(path, layer.op, layer, inp, Stage(inp.group, inp.feature, h, w))


def _plan_same(layer: Layer, path: str, inp: Stage) -> LayerPlan:
    _features(inp, path)
    return LayerPlan(path, layer.op, layer, inp, inp)


def _plan_group_pool(layer: GroupPoolLayer, path: str, inp: Stage) -> LayerPlan:
    feature = _features(inp, path)
    trivial = parse_field_type(inp.group, "trivial")
    out = Stage(inp.group, FeatureType(trivial, feature.count), inp.height, inp.width)
    return LayerPlan(path, layer.op, layer, inp, out)


def _plan_restrict(layer: Layer, path: str, inp: Stage) -> LayerPlan:
    feature = _features(inp, path)
    if not inp.group.reflections:
        raise SpecError(
            f"restrict goes from D_N to C_N, but the features are already in "
            f"{inp.group.name} (no reflections)",
            path=f"{path}.op",
        )
    sub = inp.group.rotation_subgroup()
    out = Stage(sub, feature.restrict(sub), inp.height, inp.width)
    return LayerPlan(path, layer.op, layer, inp, out)


def _plan_head(layer: HeadLayer, path: str, inp: Stage) -> LayerPlan:
    _features(inp, path)
    return LayerPlan(path, layer.op, layer, inp, Stage(inp.group, None, 1, 1))


def _shortcut_stride(inp: Stage, out: Stage) -> int | None:
    """The stride of a 1×1 conv that maps ``inp``'s size onto ``out``'s, if any.

    The smallest stride with ``(H - 1) // stride + 1 == h``: ``H / h`` when it divides
    exactly, and e.g. 2 for a strided body that takes 7 to 4.
    """
    stride = (inp.height - 1) // out.height + 1
    same_h = _strided(inp.height, stride) == out.height
    return stride if same_h and _strided(inp.width, stride) == out.width else None


def _plan_residual(layer: ResidualLayer, path: str, inp: Stage) -> LayerPlan:
    _features(inp, path)
    body, out = _plan_sequence(layer.body, f"{path}.body", inp)
    shortcut = layer.shortcut
    if shortcut == "auto":
        shortcut = "identity" if out == inp else "conv1x1"
    if shortcut == "identity":
        if out != inp:
            raise SpecError(
                f"an identity shortcut needs the body to keep its input ({inp.describe()}), "
                f"but it gives {out.describe()}; use shortcut: auto or conv1x1",
                path=f"{path}.shortcut",
            )
        return LayerPlan(path, layer.op, layer, inp, out, body=body, shortcut="identity")
    if out.group != inp.group:
        raise SpecError(
            f"the body changes the group from {inp.group.name} to {out.group.name}; a "
            "residual shortcut cannot follow (restrict outside the residual block)",
            path=f"{path}.shortcut",
        )
    stride = _shortcut_stride(inp, out)
    if stride is None:
        raise SpecError(
            f"no 1x1 shortcut stride maps {inp.height}x{inp.width} onto the body's "
            f"{out.height}x{out.width}; the input size must be the output size times a stride",
            path=f"{path}.shortcut",
        )
    return LayerPlan(
        path, layer.op, layer, inp, out, body=body, shortcut="conv1x1", shortcut_stride=stride
    )


_PLANNERS: dict[str, Callable[..., LayerPlan]] = {
    "pdo_conv": _plan_equivariant_conv,
    "neural_epdo": _plan_neural_epdo,
    "conv1x1": _plan_equivariant_conv,
    "conv": _plan_conv,
    "pool": _plan_pool,
    "dropout": _plan_same,
    "group_pool": _plan_group_pool,
    "restrict": _plan_restrict,
    "residual": _plan_residual,
    "head": _plan_head,
}


def _plan_sequence(
    layers: Sequence[Layer], prefix: str, stage: Stage
) -> tuple[tuple[LayerPlan, ...], Stage]:
    plans: list[LayerPlan] = []
    for i, layer in enumerate(layers):
        path = f"{prefix}[{i}]"
        if stage.feature is None:
            raise SpecError(
                f"{layer.op!r} after the head: the head must be the last layer", path=path
            )
        for _ in range(getattr(layer, "repeat", 1)):
            plan = _PLANNERS[layer.op](layer, path, stage)
            plans.append(plan)
            stage = plan.out
    return tuple(plans), stage


def input_stage(spec: Spec) -> Stage:
    """``input.channels`` trivial fields of the spec's group at the input size."""
    group = spec.group_obj
    trivial = parse_field_type(group, "trivial")
    feature = FeatureType(trivial, spec.input.channels)
    return Stage(group, feature, spec.input.height, spec.input.width)


def plan_model(spec: Spec) -> ModelPlan:
    """Infer every layer's stages and check the network; raises SpecError with the path."""
    start = input_stage(spec)
    layers, out = _plan_sequence(spec.layers, "layers", start)
    return ModelPlan(spec=spec, input=start, layers=layers, output=out)
