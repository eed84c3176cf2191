"""``residual``: ``out = relu?(body(p) + shortcut)``; the body is a list of layers of any op
allowed in a body, the shortcut the identity or an equivariant 1x1 projection.

Post-activation (the default): ``p = x``, the projection is a 1x1 + BN (average-pooled by
k first when the body shrinks the map by an exact factor k, which keeps exact equivariance
on even sizes), ReLU after the sum. Pre-activation (``preact: true``, He et al. 2016, the
PDO-eConvs CIFAR code): ``p = ReLU(BN(x))``, the projection a strided 1x1 of p (no BN), no
ReLU after the sum unless ``relu: true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from ..spec.errors import SpecError
from ..stages import (
    Cost,
    LayerPlan,
    Stage,
    require_features,
    stride_break,
    strided,
    values_of,
)
from .base import OPS, Builder, LayerSchema, Planner, register_op

if TYPE_CHECKING:
    BodyLayer = LayerSchema


class ResidualLayer(LayerSchema):
    """``out = relu?(body(x) + shortcut(x))``; shortcut identity or equivariant 1×1 + BN.

    ``preact: true`` makes it a pre-activation block (He et al. 2016, as in the PDO-eConvs
    CIFAR code): ``p = ReLU(BN(x))``, ``out = body(p) + shortcut``, where the shortcut is x
    itself or a strided 1x1 of p (no BN); ``relu`` then defaults to false.
    """

    op: Literal["residual"]
    body: Annotated[list[BodyLayer], Field(min_length=1)]
    shortcut: Literal["auto", "identity", "conv1x1"] = "auto"
    relu: bool | None = None
    preact: bool = False
    repeat: Annotated[int, Field(ge=1)] = 1

    @property
    def relu_after_sum(self) -> bool:
        """ReLU after the sum: ``relu`` if given, else true for a post-activation block."""
        return (not self.preact) if self.relu is None else self.relu


def _shortcut_stride(inp: Stage, out: Stage) -> int | None:
    """The stride of a 1×1 conv that maps ``inp``'s size onto ``out``'s, if any.

    The smallest stride with ``(H - 1) // stride + 1 == h``: ``H / h`` when it divides
    exactly, and e.g. 2 for a strided body that takes 7 to 4.
    """
    stride = (inp.height - 1) // out.height + 1
    same_h = strided(inp.height, stride) == out.height
    return stride if same_h and strided(inp.width, stride) == out.width else None


def plan(layer: ResidualLayer, path: str, inp: Stage, planner: Planner) -> LayerPlan:
    require_features(inp, path)
    body, out = planner.sequence(layer.body, f"{path}.body", inp)
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


def _pooled_shortcut(plan: LayerPlan) -> bool:
    """A post-activation projection average-pools by its stride when the body shrinks the
    map by exactly that factor (see :func:`_projection`)."""
    inp, out, k = plan.inp, plan.out, plan.shortcut_stride
    return not plan.layer.preact and k > 1 and inp.height == k * out.height \
        and inp.width == k * out.width


def _projection(plan: LayerPlan, builder: Builder):
    """The shortcut's projection (see the module docstring)."""
    from torch import nn

    from ..layers.conv import Conv1x1
    from ..layers.norms import FieldBatchNorm
    from ..layers.pooling import SpatialPool

    inp, out, k = plan.inp, plan.out, plan.shortcut_stride
    basis = builder.kernel_basis
    if plan.layer.preact:
        return Conv1x1(inp.feature, out.feature, k, basis=basis)
    pooled = _pooled_shortcut(plan)
    mods: list[nn.Module] = [SpatialPool(inp.feature, k, "avg")] if pooled else []
    mods += [Conv1x1(inp.feature, out.feature, 1 if pooled else k, basis=basis),
             FieldBatchNorm(out.feature)]
    return nn.Sequential(*mods)


def build(plan: LayerPlan, builder: Builder):
    from torch import nn

    from ..layers.norms import FieldBatchNorm
    from ..layers.residual import Residual

    layer = plan.layer
    body = nn.Sequential(*[builder.block(p) for p in plan.body])
    shortcut = _projection(plan, builder) if plan.shortcut == "conv1x1" else None
    pre = nn.Sequential(FieldBatchNorm(plan.inp.feature), nn.ReLU()) if layer.preact else None
    return Residual(body, shortcut, layer.relu_after_sum, pre)


def cost(plan: LayerPlan) -> Cost:
    """The shortcut's projection, the pre-activation and the sum (the body's layers are
    planned, and counted, on their own)."""
    c_in, c_out = plan.inp.feature.channels, plan.out.feature.channels
    weights = c_in * c_out + 3 * c_out if plan.shortcut == "conv1x1" else 0
    values = 2 * values_of(plan.out) + (2 * values_of(plan.inp) if plan.layer.preact else 0)
    return Cost(weights + (2 * c_in if plan.layer.preact else 0), values)


def exactness(plan: LayerPlan) -> str | None:
    """The first body layer that is not exact (its reason, at its path), else the shortcut:
    the identity and an average pool that tiles the map are exact; a strided 1x1 is exact
    when its stride divides H - 1 and W - 1."""
    for inner in plan.body:
        reason = OPS[inner.op].why_inexact(inner)
        if reason is not None:
            return f"{inner.path}: {reason}"
    k = plan.shortcut_stride
    if plan.shortcut != "conv1x1" or k == 1 or _pooled_shortcut(plan):
        return None
    reason = stride_break(plan.inp.height, plan.inp.width, k, "the 1x1 shortcut's stride")
    return None if reason is None else f"{plan.path}.shortcut: {reason}"


OP = register_op(ResidualLayer, plan, build, in_body=False, cost=cost, exactness=exactness)
