"""Inference throughput of a zoo model's exported forms, for ``epdo bench``.

``exported_throughputs(model, spec, x, iters=..., threads=...)`` builds the inference graph
(:func:`epdo.exporters.inference.inference_model`: raw images in, normalisation inside) and
times, at the batch of ``x`` (one warm-up call, or two for TorchScript whose profiling
executor optimises on its second call; then the median of ``iters``):

- TorchScript: ``torch.jit.trace`` of the inference graph, on the device of ``x``, under
  ``torch.no_grad``;
- ONNX Runtime: the graph ``epdo export`` writes (:func:`~epdo.exporters.export.write_onnx`,
  opset 17, dynamic batch, the Neural ePDO products as per-image loops) in a temporary
  file, run by onnxruntime's CPUExecutionProvider with epdo's session options
  (:mod:`.ort_options`) and ``threads`` intra-op threads (always on the CPU, whatever the
  device of ``x``).

The figures are not verified here; ``epdo export`` verifies the same graphs.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from typing import Any

import numpy as np
import torch

from epdo.zoo.benchmark import time_calls
from epdo.zoo.spec import Spec

from .export import write_onnx
from .inference import inference_model
from .ort_options import session_options

OPSET = 17


def _inference_graph(model: torch.nn.Module, spec: Spec) -> torch.nn.Module:
    """The inference graph, built from a CPU copy of ``model`` (the model is left as is)."""
    cpu = copy.deepcopy(model).cpu().eval()
    return inference_model(cpu, spec)


def torchscript_throughput(graph: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    """Images/s of the traced ``graph`` on the device of ``x``."""
    graph = graph.to(x.device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (x,), check_trace=False)
        t = time_calls(lambda: traced(x), iters, x.device, warmup=2)
    return x.shape[0] / t


def onnxruntime_throughput(graph: torch.nn.Module, x: torch.Tensor, iters: int,
                           threads: int) -> float:
    """Images/s of ``graph`` exported to ONNX and run by onnxruntime on the CPU."""
    import onnxruntime as ort

    x_cpu = x.detach().cpu()
    with tempfile.TemporaryDirectory(prefix="epdo-bench-onnx-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        write_onnx(graph.cpu(), x_cpu, path, OPSET)  # the graph `epdo export` writes
        session = ort.InferenceSession(path, session_options(threads),
                                       providers=["CPUExecutionProvider"])
    feed = {"images": x_cpu.numpy().astype(np.float32)}
    # onnxruntime grows its memory arena over the first runs at a new batch size: warm up more
    t = time_calls(lambda: session.run(["logits"], feed), iters, torch.device("cpu"), warmup=3)
    return x.shape[0] / t


def exported_throughputs(model: torch.nn.Module, spec: Spec, x: torch.Tensor, *, iters: int,
                         threads: int) -> dict[str, Any]:
    """The ``run_benchmark`` hook: TorchScript and ONNX Runtime inference images/s."""
    import onnxruntime as ort

    graph = _inference_graph(model, spec)
    ts = torchscript_throughput(graph, x, iters)
    onnx = onnxruntime_throughput(_inference_graph(model, spec), x, iters, threads)
    return {
        "infer_torchscript_images_per_s": ts,
        "infer_onnxruntime_images_per_s": onnx,
        "onnxruntime_device": "cpu",
        "onnxruntime_version": ort.__version__,
    }


__all__ = ["exported_throughputs", "onnxruntime_throughput", "torchscript_throughput"]
