"""epdo.zoo: groups, stencils, equivariant bases, layers, specs, the builder.

Public API::

    from epdo.zoo import load_spec, build_model, list_specs

    spec = load_spec("mnist_regular_gauss")      # a shipped name, a YAML path or a dict
    model = build_model(spec)                     # an nn.Module: (B, 1, 28, 28) -> (B, 10)
    model, spec = load_model("runs/quickstart/<timestamp>")  # a trained model, eval mode
"""

from .builder import ZooModel, build_model
from .checkpoint import CheckpointError, load_model
from .registry import list_specs
from .spec import Spec, SpecError, load_spec

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
