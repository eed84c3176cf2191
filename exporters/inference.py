"""The inference graph of a zoo model: plain PyTorch modules, ready to trace and export.

``inference_model(model)`` is ``model.export()``: the trained
:class:`~epdo.zoo.builder.ZooModel` rebuilt, in eval semantics, from standard modules only
(every zoo module gives its own inference form; :mod:`epdo.zoo.layers.plain` says how):

- the input is RAW images ``(B, C, H, W)`` float32 in [0, 1], as for the model itself; the
  spec's normalisation ``(x - mean) / std`` is the first op of the graph;
- every equivariant kernel is expanded ONCE from its basis into a plain ``nn.Conv2d``;
- BatchNorm (eval statistics) is folded into the preceding conv or linear layer (exact),
  or becomes a channel affine; dropout and the D_N -> C_N restriction vanish;
- the Neural ePDO keeps its structure in plain modules, its spatially varying 5x5 product
  exported as shifted multiply-adds.
"""

from __future__ import annotations

from typing import Any

from epdo.zoo.layers.plain import InferenceModel, UnsupportedModuleError


def inference_model(model: Any, spec: Any = None) -> InferenceModel:
    """The inference graph of ``model`` (a ZooModel), in eval mode; ``spec`` is the model's
    own and is not needed (kept for callers that pass it).

    The result takes raw images in [0, 1] and agrees with ``model.eval()`` up to float32
    rounding (~1e-5 relative).
    """
    export = getattr(model, "export", None)
    if export is None or not hasattr(model, "blocks"):
        raise UnsupportedModuleError(
            f"expected a zoo model with .blocks, got {type(model).__name__}"
        )
    return export()


__all__ = ["InferenceModel", "UnsupportedModuleError", "inference_model"]
