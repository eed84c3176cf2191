"""Exporters: artifacts verified against the PyTorch model, and serving them.

``export_model`` writes a verified artifact in any registered format
(:mod:`epdo.exporters.formats`: one module per format); ``read_metadata`` reads what an
artifact stores, after every check; ``load_classifier`` serves one (a classifier or a
segmentation: ``segment_files`` writes a segmentation's masks). The names are imported
on first use, so ``import epdo.exporters.formats`` stays light (onnxruntime is imported only
when an ONNX artifact is run: install the ``serve`` or ``serve-gpu`` extra).
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "ArtifactError": "artifact",
    "ExportError": "artifact",
    "ServingError": "artifact",
    "ExportReport": "export",
    "VerificationError": "export",
    "export_model": "export",
    "inference_model": "inference",
    "read_metadata": "loading",
    "Classifier": "runtime",
    "OnnxClassifier": "runtime",
    "PT2Classifier": "runtime",
    "TorchScriptClassifier": "runtime",
    "load_classifier": "runtime",
    "segment_files": "masks",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    """The public names, imported from their modules on first use."""
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
