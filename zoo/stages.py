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
    "pooled",
    "require_features",
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
