"""The YAML model spec, split by job:

- :mod:`.errors`: :class:`SpecError`, located by file, line and key path;
- :mod:`.schema`: the pydantic models (:class:`Spec`, its sections; the layer schemas are
  the ops' own, :mod:`epdo.zoo.ops`);
- :mod:`.locations`: where every key sits in its YAML file;
- :mod:`.loader`: parsing, ``extends``, ``defaults``, validation and the plan
  (:func:`load_spec`);
- :mod:`.limits`: the sanity limits (file size, alias expansion, nesting, ``extends``,
  group order, layers, weights, activations) and the variables that raise them.

The names below are loaded on first use, so that :mod:`.errors` can be imported by the ops
without pulling in the schema that is built from them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import SpecError

if TYPE_CHECKING:
    from ..ops import BODY_OPS, LAYER_OPS, LAYER_TYPES, BodyLayer, Layer
    from .loader import load_spec
    from .schema import AugmentSpec, Defaults, InputSpec, Spec, TrainSpec

_WHERE = {
    "load_spec": ".loader",
    "AugmentSpec": ".schema",
    "Defaults": ".schema",
    "InputSpec": ".schema",
    "Spec": ".schema",
    "TrainSpec": ".schema",
    "BODY_OPS": "..ops",
    "LAYER_OPS": "..ops",
    "LAYER_TYPES": "..ops",
    "BodyLayer": "..ops",
    "Layer": "..ops",
}


def __getattr__(name: str) -> Any:
    """The names of :data:`_WHERE`, and every op's schema by its class name
    (``PdoConvLayer``)."""
    where = _WHERE.get(name)
    if where is not None:
        value = getattr(importlib.import_module(where, __name__), name)
    else:
        from ..ops import LAYER_TYPES

        found = [schema for schema in LAYER_TYPES.values() if schema.__name__ == name]
        if not found:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = found[0]
    globals()[name] = value
    return value


__all__ = [
    "BODY_OPS",
    "LAYER_OPS",
    "LAYER_TYPES",
    "AugmentSpec",
    "BodyLayer",
    "Defaults",
    "InputSpec",
    "Layer",
    "Spec",
    "SpecError",
    "TrainSpec",
    "load_spec",
]
