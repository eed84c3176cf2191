"""Every op (layer kind) of the zoo, one module each, registered in :data:`OPS`.

Importing this package imports every module in it (each registers its op with
:func:`~epdo.zoo.ops.base.register_op`) and then builds the two schema unions a spec
validates against: :data:`Layer` (any op) and :data:`BodyLayer` (the ops allowed inside a
residual body). An op is defined in one place; see :mod:`epdo.zoo.ops.base`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Union

from pydantic import Field

from .base import OPS, LayerSchema, Op, register_op

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base" and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")


def _union(schemas: list[type[LayerSchema]]) -> Any:
    """A pydantic union of layer schemas, chosen by ``op``."""
    return Annotated[Union[tuple(schemas)], Field(discriminator="op")]  # noqa: UP007


LAYER_OPS: tuple[str, ...] = tuple(OPS)
"""The name of every op."""
BODY_OPS: tuple[str, ...] = tuple(name for name, op in OPS.items() if op.in_body)
"""The ops allowed inside a residual body."""
LAYER_TYPES: dict[str, type[LayerSchema]] = {name: op.schema for name, op in OPS.items()}
"""The schema of every op."""

Layer = _union([OPS[name].schema for name in LAYER_OPS])
"""One entry of a spec's ``layers``."""
BodyLayer = _union([OPS[name].schema for name in BODY_OPS])
"""One entry of a residual ``body``."""

for _op in OPS.values():
    if not _op.schema.__pydantic_complete__:
        _op.schema.model_rebuild(_types_namespace={"BodyLayer": BodyLayer, "Layer": Layer})

__all__ = [
    "BODY_OPS",
    "LAYER_OPS",
    "LAYER_TYPES",
    "OPS",
    "BodyLayer",
    "Layer",
    "LayerSchema",
    "Op",
    "register_op",
]
