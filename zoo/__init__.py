"""epdo.zoo: groups, stencils, equivariant bases, layers, specs, the builder.

Public API::

    from epdo.zoo import load_spec, build_model, list_specs

    spec = load_spec("mnist_regular_gauss")      # a shipped name, a YAML path or a dict
    model = build_model(spec)                     # an nn.Module: (B, 1, 28, 28) -> (B, 10)
    model, spec = load_model("runs/quickstart/<timestamp>")  # a trained model, eval mode

The names are loaded on first use, so that reading a spec does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .builder import ZooModel, build_model
    from .checkpoint import CheckpointError, load_model
    from .shipped import list_specs
    from .spec import Spec, SpecError, load_spec

_WHERE = {
    "CheckpointError": ".checkpoint",
    "Spec": ".spec",
    "SpecError": ".spec",
    "ZooModel": ".builder",
    "build_model": ".builder",
    "list_specs": ".shipped",
    "load_model": ".checkpoint",
    "load_spec": ".spec",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CheckpointError",
    "Spec",
    "SpecError",
    "ZooModel",
    "build_model",
    "list_specs",
    "load_model",
    "load_spec",
]
