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
  device of ``x``);
- torch.export program (``infer_pt2_images_per_s``): the ``.pt2`` ``epdo export --format
  pt2`` writes (:class:`~epdo.exporters.pt2.ProgramWriter`, exported with a batch of 2),
  checked and loaded as :class:`~epdo.exporters.runtime.PT2Classifier` loads it, on the
  device of ``x``, under ``torch.inference_mode`` (torch's threads);
- AOTInductor package (``infer_aoti_images_per_s``, only when asked: compiling takes
  minutes): the ``.aoti.pt2`` of ``--format aoti``, loaded the same way, on the CPU.
  ``pt2_export_s`` and ``aoti_compile_s`` are the seconds it took to build them.

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


def pt2_throughput(graph: torch.nn.Module, x: torch.Tensor, iters: int, *,
                   compiled: bool = False) -> tuple[float, float]:
    """(images/s, seconds to build) of ``graph`` as the ``.pt2`` program (``compiled``:
    the ``.aoti.pt2`` AOTInductor package, run on the CPU) that ``epdo export`` writes,
    checked and loaded from its bytes as serving loads it."""
    import time

    from .pt2 import ProgramWriter, inspect_archive, load_package, load_program

    device = torch.device("cpu") if compiled else x.device
    first = x[:1].detach().cpu()
    start = time.perf_counter()
    writer = ProgramWriter(graph.cpu().eval(), torch.cat([first, first]), compiled=compiled)
    data = writer.pack(None)
    build = time.perf_counter() - start
    inspect_archive(data, "benchmark", compiled=compiled)
    module = (load_package(data, "benchmark") if compiled
              else load_program(data, "benchmark", device))
    xs = x.detach().to(device)
    with torch.inference_mode():
        t = time_calls(lambda: module(xs), iters, device, warmup=2)
    return x.shape[0] / t, build


def exported_throughputs(model: torch.nn.Module, spec: Spec, x: torch.Tensor, *, iters: int,
                         threads: int, aoti: bool = False) -> dict[str, Any]:
    """The ``run_benchmark`` hook: TorchScript, ONNX Runtime and torch.export program
    inference images/s, and with ``aoti`` the AOTInductor package's (compiles: minutes)."""
    import onnxruntime as ort

    graph = _inference_graph(model, spec)
    ts = torchscript_throughput(graph, x, iters)
    onnx = onnxruntime_throughput(_inference_graph(model, spec), x, iters, threads)
    pt2, pt2_s = pt2_throughput(_inference_graph(model, spec), x, iters)
    out = {
        "infer_torchscript_images_per_s": ts,
        "infer_onnxruntime_images_per_s": onnx,
        "onnxruntime_device": "cpu",
        "onnxruntime_version": ort.__version__,
        "infer_pt2_images_per_s": pt2,
        "pt2_device": str(x.device),
        "pt2_export_s": pt2_s,
    }
    if aoti:
        aoti_ips, aoti_s = pt2_throughput(_inference_graph(model, spec), x, iters,
                                          compiled=True)
        out.update({"infer_aoti_images_per_s": aoti_ips, "aoti_device": "cpu",
                    "aoti_compile_s": aoti_s})
    return out


__all__ = ["exported_throughputs", "onnxruntime_throughput", "pt2_throughput",
           "torchscript_throughput"]
