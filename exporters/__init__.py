"""Exporters: ONNX / TorchScript / torch.export artifacts verified against the PyTorch model,
and serving.

``export_model`` writes a verified artifact (inference graph: kernels expanded, BatchNorm
folded, dropout gone, normalisation inside); ``read_metadata`` reads what it stores;
``OnnxClassifier`` / ``TorchScriptClassifier`` / ``PT2Classifier`` serve it. onnxruntime
is imported only when an ONNX artifact is run or verified (install the ``serve`` or
``serve-gpu`` extra).
"""

from epdo.exporters.export import ExportError, ExportReport, VerificationError, export_model
from epdo.exporters.inference import inference_model
from epdo.exporters.metadata import ArtifactError, read_metadata
from epdo.exporters.runtime import (
    OnnxClassifier,
    PT2Classifier,
    ServingError,
    TorchScriptClassifier,
    load_classifier,
)

__all__ = [
    "ArtifactError",
    "ExportError",
    "ExportReport",
    "OnnxClassifier",
    "PT2Classifier",
    "ServingError",
    "TorchScriptClassifier",
    "VerificationError",
    "export_model",
    "inference_model",
    "load_classifier",
    "read_metadata",
]
