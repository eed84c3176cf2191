"""ONNX (``.onnx``): the inference graph in standard operators, for onnxruntime, Triton and
any other ONNX runtime.

- Written by torch's TorchScript-based ONNX exporter (input ``images (batch, C, H, W)``,
  output ``logits (batch, classes)``, or ``(batch, classes, H, W)`` for a segmentation,
  dynamic batch, opset :data:`OPSET` or newer); each
  Neural ePDO product placeholder is then expanded into standard-op loops
  (:mod:`epdo.exporters.onnx_product`).
- Metadata: ``metadata_props``, one entry per key, each value JSON-encoded.
- Digest: SHA-256 of the graph's deterministic serialization (weights included, metadata
  excluded).
- Read: the bytes parsed and checked by ``onnx.checker``; weights kept in external files
  are refused (the digest could not cover them); a metadata key given twice is refused.
- Run: onnxruntime with epdo's session options (:mod:`epdo.exporters.ort_options`), on
  the CUDA provider when asked for (``onnxruntime-gpu``), else the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..artifact import (
    ArtifactError,
    Contents,
    ExportError,
    ServingError,
    decode_props,
    first_line,
    show,
)
from .base import ArtifactFormat, Session, check_provider, register

__all__ = ["OPSET", "OnnxFormat", "graph_digest", "resolve_onnx_providers", "write_onnx"]

OPSET = 17
"""The ONNX opset epdo exports to by default, and the lowest it accepts."""
_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def graph_digest(model: Any) -> str:
    """SHA-256 of an ONNX model's graph (deterministic serialization; metadata excluded)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def write_onnx(module: Any, example: Any, path: str | os.PathLike[str], opset: int) -> None:
    """``module`` as an ONNX graph at ``path``: torch's exporter (dynamic batch, input
    ``images``, output ``logits``), then every Neural ePDO product placeholder expanded into
    standard operators."""
    import onnx
    import torch

    from ..onnx_product import expand_stencil_products

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True,
                          custom_opsets={"epdo": 1})
    proto = onnx.load(str(path))
    if expand_stencil_products(proto):
        onnx.save(proto, str(path))


def _uses_external_data(graph: Any) -> bool:
    import onnx

    def external(tensor: Any) -> bool:
        return tensor.data_location == onnx.TensorProto.EXTERNAL

    if any(external(t) for t in graph.initializer):
        return True
    for node in graph.node:
        for attr in node.attribute:
            if (attr.HasField("t") and external(attr.t)) or any(external(t)
                                                                for t in attr.tensors):
                return True
            if attr.HasField("g") and _uses_external_data(attr.g):
                return True
            if any(_uses_external_data(g) for g in attr.graphs):
                return True
    return False


def parse_onnx(data: bytes, where: Any) -> Any:
    """A checked ``ModelProto`` from bytes; ArtifactError for what is not a valid model or
    keeps weights in external files."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ArtifactError(f"{where}: not a loadable ONNX model (truncated or corrupted?): "
                            f"{first_line(exc)}") from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError
        raise ArtifactError(f"{where}: not a loadable ONNX model (invalid: "
                            f"{first_line(exc)})") from exc
    if _uses_external_data(model.graph):
        raise ArtifactError(f"{where}: the model keeps tensors in external data files, which "
                            "epdo does not load (its digest could not cover them)")
    return model


def _props(model: Any, where: Any) -> dict[str, str]:
    props: dict[str, str] = {}
    for prop in model.metadata_props:
        if prop.key in props:
            raise ArtifactError(f"{where}: metadata key {show(prop.key)} appears twice "
                                "(tampered?)")
        props[prop.key] = prop.value
    return props


def onnx_io(model: Any, where: Any) -> tuple[str, list[int | None], str, list[int | None]]:
    """``(input name, input dims, output name, output dims)``: the input ``images`` (else
    the first graph input that is no initializer) and the output ``logits`` (else the
    first); an open dimension is None."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs or not graph.output:
        raise ArtifactError(f"{where}: the ONNX graph has no input or no output")

    def pick(values: Sequence[Any], name: str) -> Any:
        return next((v for v in values if v.name == name), values[0])

    def dims(value: Any) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None
                for d in value.type.tensor_type.shape.dim]

    inp, out = pick(inputs, "images"), pick(graph.output, "logits")
    return inp.name, dims(inp), out.name, dims(out)


def _gpu_present() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_onnx_providers(provider: str = "auto") -> list[str]:
    """onnxruntime providers for ``auto``, ``cpu`` or ``cuda``: ``auto`` prefers
    CUDAExecutionProvider when onnxruntime offers it (``onnxruntime-gpu``) and a GPU
    exists; ``cuda`` requires it (ServingError saying what to install otherwise)."""
    check_provider(provider)
    if provider == "cpu":
        return [_CPU]
    import onnxruntime

    available = onnxruntime.get_available_providers()
    has_cuda = _CUDA in available
    if provider == "cuda":
        if not has_cuda:
            raise ServingError(
                "provider 'cuda' needs CUDAExecutionProvider, which this onnxruntime lacks "
                f"(available: {', '.join(available)}); install onnxruntime-gpu instead of "
                "onnxruntime: pip install 'epdo[serve-gpu]'")
        if not _gpu_present():
            raise ServingError("provider 'cuda': onnxruntime-gpu is installed but no CUDA "
                               "GPU is visible")
        return [_CUDA, _CPU]
    return [_CUDA, _CPU] if has_cuda and _gpu_present() else [_CPU]


class OnnxSession(Session):
    """An onnxruntime session over the artifact's bytes."""

    def __init__(self, session: Any, input_name: str, output_name: str) -> None:
        self.session = session
        self.input_name, self.output_name = input_name, output_name
        self.providers = list(session.get_providers())

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


class OnnxFormat(ArtifactFormat):
    """See the module docstring."""

    name = "onnx"
    family = "onnx"
    suffixes = (".onnx",)
    title = "ONNX model"
    summary = "onnx (standard operators: onnxruntime, Triton; no torch needed to run)"
    bench_key = "onnxruntime"
    triton_platform = "onnxruntime_onnx"
    triton_file = "model.onnx"

    def build(self, graph: Any, example: Any, *, opset: int | None = None) -> Any:
        import tempfile

        import onnx

        opset = OPSET if opset is None else opset
        if opset < OPSET:
            raise ExportError(f"--opset {opset}: the exporter needs ONNX opset {OPSET} or "
                              "newer")
        with tempfile.TemporaryDirectory(prefix="epdo-onnx-") as folder:
            path = os.path.join(folder, "model.onnx")
            write_onnx(graph, example, path, opset)
            return onnx.load(path)

    def notes(self, built: Any) -> dict[str, Any]:
        return {"opset": int(next(o.version for o in built.opset_import
                                  if o.domain in ("", "ai.onnx")))}

    def seal(self, built: Any, metadata: dict[str, Any], where: Any) -> tuple[bytes, str]:
        import onnx

        digest = graph_digest(built)
        ver = {**metadata.get("epdo.verification", {}), "graph_sha256": digest}
        props = {k: json.dumps(v, sort_keys=True)
                 for k, v in {**metadata, "epdo.verification": ver}.items()}
        onnx.helper.set_model_props(built, props)
        built.producer_name = "epdo"
        onnx.checker.check_model(built)
        return built.SerializeToString(), digest

    def inspect(self, data: bytes, where: Any, *, complete: bool = True) -> Contents:
        model = parse_onnx(data, where)
        meta = decode_props(_props(model, where), where, complete=complete)
        in_name, in_dims, out_name, out_dims = onnx_io(model, where)
        if meta and len(in_dims) != 4:
            raise ArtifactError(f"{where}: the graph's input has {len(in_dims)} dimensions, "
                                "expected 4 (batch, C, H, W)")
        if meta and len(out_dims) not in (2, 4):
            raise ArtifactError(f"{where}: the graph's output has {len(out_dims)} "
                                "dimensions, expected 2 (batch, classes) or 4 (batch, "
                                "classes, H, W)")
        digest = graph_digest(model)
        return Contents(metadata=meta, digest=lambda shape: digest,
                        input_dims=tuple(in_dims[1:]) if len(in_dims) == 4 else None,
                        output_dims=tuple(out_dims[1:]) if len(out_dims) in (2, 4) else None,
                        notes={"input_name": in_name, "output_name": out_name})

    def load(self, data: bytes, where: Any, contents: Contents, provider: str, *,
             threads: int | None = None) -> Session:
        import onnxruntime

        from ..ort_options import session_options

        requested = resolve_onnx_providers(provider)
        try:
            session = onnxruntime.InferenceSession(data, sess_options=session_options(threads),
                                                   providers=requested)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ArtifactError(f"{where}: not a loadable ONNX model "
                                f"({first_line(exc)})") from exc
        if provider == "cuda" and _CUDA not in session.get_providers():
            raise ServingError("provider 'cuda': onnxruntime could not start "
                               "CUDAExecutionProvider (CUDA/cuDNN libraries missing?)")
        return OnnxSession(session, contents.notes["input_name"],
                           contents.notes["output_name"])


FORMAT = register(OnnxFormat())
