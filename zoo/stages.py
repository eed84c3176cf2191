"""What a plan is made of: the :class:`Stage` between two layers and the :class:`LayerPlan`
of one layer, plus the size and type rules several ops share.

An op's planner (see :mod:`epdo.zoo.ops`) maps its input stage to its output stage and
raises :class:`~epdo.zoo.spec.errors.SpecError` with the key path when the layer cannot
follow what precedes it. This module knows nothing about tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .groups import Group, divisors
from .reps import FeatureType, FieldRep, parse_field_type
from .spec.errors import SpecError

__all__ = [
    "Cost",
    "LayerPlan",
    "ModelPlan",
    "Stage",
    "divisors",
    "field_type",
    "listing",
    "pool_break",
    "pooled",
    "require_features",
    "stride_break",
    "strided",
    "values_of",
]


@dataclass(frozen=True)
class Stage:
    """What flows between two layers: ``feature`` fields of ``group`` at ``height × width``.

    ``feature`` is None after a head: its output is ``logits`` class scores, one vector per
    image (``head``: height and width 1) or, when ``dense``, one per pixel of the
    ``height × width`` map (``dense_head``).
    """

    group: Group
    feature: FeatureType | None
    height: int
    width: int
    logits: int = 0
    dense: bool = False

    def describe(self) -> str:
        """``16x regular C16 @ 28x28``."""
        what = "logits" if self.feature is None else self.feature.name
        return f"{what} {self.group.name} @ {self.height}x{self.width}"

    def resized(self, height: int, width: int, feature: FeatureType | None = None) -> Stage:
        """The same group at another size (and, when given, with other fields)."""
        return Stage(self.group, self.feature if feature is None else feature, height, width)


@dataclass(frozen=True)
class LayerPlan:
    """One (repeated) layer with its input and output stages.

    ``body``/``shortcut``/``shortcut_stride`` are set for residual blocks (``shortcut`` is
    ``"identity"`` or ``"conv1x1"``); ``num_mid`` is the number of regular fields of a
    Neural ePDO's generator.
    """

    path: str
    op: str
    layer: Any
    inp: Stage
    out: Stage
    body: tuple[LayerPlan, ...] = ()
    shortcut: str | None = None
    shortcut_stride: int = 1
    num_mid: int | None = None


@dataclass(frozen=True)
class ModelPlan:
    """The planned network: input stage, the layers (repeats expanded), output stage."""

    input: Stage
    layers: tuple[LayerPlan, ...]
    output: Stage

    @property
    def num_classes(self) -> int | None:
        """The number of class scores the network ends with (None when it ends in fields)."""
        return self.output.logits if self.output.feature is None else None

    @property
    def task(self) -> str:
        """``segment`` when the network ends in a per-pixel head (a map of class scores the
        input's size), else ``classify``."""
        return "segment" if self.output.dense else "classify"


@dataclass(frozen=True)
class Cost:
    """What one layer costs, estimated from its plan alone (nothing is built).

    ``weights``: its weights as its inference form holds them (an equivariant kernel
    expanded to the dense kernel it exports to; BatchNorm and biases included);
    ``values``: the floats its forward pass computes for one image (its output and what it
    makes on the way: the pre-pool map, the Neural ePDO's generated stencils, ...).
    """

    weights: int = 0
    values: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.weights + other.weights, self.values + other.values)


def values_of(stage: Stage) -> int:
    """The floats of one image at ``stage``: channels x height x width, or the logits (per
    pixel for a dense head)."""
    if stage.feature is None:
        return stage.logits * (stage.height * stage.width if stage.dense else 1)
    return stage.feature.channels * stage.height * stage.width


# --------------------------------------------------------------------------- shared rules


def listing(values: Sequence[int], most: int = 24) -> str:
    """``1, 2, 4`` (the first ``most`` values, then ``...``)."""
    shown = ", ".join(str(v) for v in values[:most])
    return shown + (", ..." if len(values) > most else "")


def field_type(group: Group, name: str | list[str], path: str) -> FieldRep:
    """The field type ``name`` of ``group``; an unknown name is a SpecError at ``path``."""
    try:
        return parse_field_type(group, name)
    except ValueError as exc:
        raise SpecError(str(exc), path=path) from None


def strided(size: int, stride: int) -> int:
    """Output size of a conv with odd kernel k, padding k // 2 and ``stride``."""
    return (size - 1) // stride + 1


def stride_break(height: int, width: int, stride: int, what: str = "stride") -> str | None:
    """Why sampling every ``stride``-th pixel of a ``height x width`` map (a conv of odd kernel
    k with padding k // 2, output ``(n - 1) // stride + 1``) is not exactly equivariant under
    the grid-exact elements, or None when it is.

    Along an axis of n pixels the outputs sit at 0, s, ..., s(m - 1); a quarter or half turn
    or a flip maps pixel i to n - 1 - i (the zero padding is symmetric), so the sampled set is
    mapped onto itself exactly when s(m - 1) = n - 1, i.e. when s divides n - 1. ``what``
    names the sampling in the reason (``stride``, ``the shortcut's stride``)."""
    for n in dict.fromkeys((height, width)):
        if (n - 1) % stride:
            last = stride * ((n - 1) // stride)
            return (f"{what} {stride} on a {height}x{width} map samples pixels 0, {stride}, "
                    f"..., {last} of 0..{n - 1}, which a turn or flip does not map onto themselves "
                    f"(exact when {stride} divides {n} - 1)")
    return None


def pool_break(height: int, width: int, size: int) -> str | None:
    """Why a ``size x size`` pool with stride ``size`` (no padding, output ``n // size``) on a
    ``height x width`` map is not exactly equivariant under the grid-exact elements, or None.

    The windows cover pixels 0 .. size * (n // size) - 1 of each axis and leave out the last
    ``n % size``; a turn or flip (i -> n - 1 - i) moves the left-out pixels to the other
    side, so the pool is exact when ``size`` divides n."""
    for n in dict.fromkeys((height, width)):
        if n % size:
            left = n % size
            rows = "row and column" if left == 1 else f"{left} rows and columns"
            return (f"pool {size} on a {height}x{width} map: {n} is not a multiple of {size}, "
                    f"so the windows leave out the last {rows}, which a turn or flip moves "
                    "to the other side")
    return None


def pooled(stage: Stage, size: int | None, path: str) -> tuple[int, int]:
    """The size after a ``size`` x ``size`` pool with stride ``size`` (unchanged for None)."""
    if size is None:
        return stage.height, stage.width
    if stage.height < size or stage.width < size:
        raise SpecError(
            f"pooling by {size} would shrink {stage.height}x{stage.width} below 1x1",
            path=path,
        )
    return stage.height // size, stage.width // size


def require_features(stage: Stage, path: str) -> FeatureType:
    """The fields of ``stage``; after the head there are none, and nothing may follow."""
    if stage.feature is None:
        raise SpecError("nothing can follow the head", path=path)
    return stage.feature
