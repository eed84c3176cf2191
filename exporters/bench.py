"""Inference throughput of a zoo model's exported forms, for ``epdo bench``.

``exported_throughputs(model, spec, x, iters=..., threads=...)`` builds the inference graph
(:func:`epdo.exporters.inference.inference_model`: raw images in, normalisation inside) and,
for every registered format (:mod:`epdo.exporters.formats`) that is timed by default (and
with ``slow=True`` the others too: an AOTInductor package compiles for minutes), builds and
seals the artifact ``epdo export`` would write, checks and loads its bytes exactly as
serving does (:func:`epdo.exporters.loading.check_artifact`, then the format's ``load``) on
the device of ``x`` (a provider the format cannot use falls back to the CPU), and times it
as served (numpy in, numpy logits out) at the batch of ``x``: three warm-up calls
(onnxruntime grows its arena and TorchScript's profiling executor optimises over the first
runs), then the median of ``iters``.

Each format ``F`` gives ``infer_<F.bench_key>_images_per_s``, ``<F.bench_key>_device``
(where it ran) and ``<F.bench_key>_build_s`` (seconds to build and seal it); onnxruntime
also its version. With a ``reference`` (the zoo model's eager forward) it also gives
``<F.bench_key>_vs_eager``: the ratio of the two medians when the artifact and the eager
model are timed in alternating rounds, ``iters`` of each
(:func:`~epdo.zoo.benchmark.alternate_medians`), so that a machine whose speed drifts over
the run (a shared VM) moves both sides of the ratio alike. The figures are not
verified here; ``epdo export`` verifies the same artifacts.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from epdo.zoo.benchmark import alternate_medians, time_calls
from epdo.zoo.spec import Spec

from .artifact import ServingError, build_metadata
from .formats import ArtifactFormat, all_formats
from .inference import inference_model
from .loading import check_artifact

__all__ = ["exported_throughputs", "format_throughput"]

_WARMUP = 3


def _inference_graph(model: torch.nn.Module, spec: Spec) -> torch.nn.Module:
    """The inference graph, built from a CPU copy of ``model`` (the model is left as is)."""
    return inference_model(copy.deepcopy(model).cpu().eval(), spec)


def format_throughput(fmt: ArtifactFormat, graph: torch.nn.Module, spec: Spec,
                      x: torch.Tensor, iters: int, threads: int | None,
                      reference: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The figures of one format (see the module docstring) for ``graph`` at the batch of
    ``x``; ``reference`` is the eager call the format is compared with, alternately."""
    start = time.perf_counter()
    first = x[:1].detach().cpu()
    built = fmt.build(graph, torch.cat([first, first]), opset=None)
    with torch.no_grad():
        classes = [str(i) for i in range(int(graph(first).shape[1]))]
    data, _ = fmt.seal(built, build_metadata(spec, classes, {"format": fmt.name}), "benchmark")
    build = time.perf_counter() - start
    checked = check_artifact(fmt, data, "benchmark")
    provider = "cuda" if x.device.type == "cuda" else "cpu"
    try:
        session = fmt.load(data, "benchmark", checked.contents, provider, threads=threads)
    except ServingError:  # this format cannot run on the GPU here: its CPU figure
        session = fmt.load(data, "benchmark", checked.contents, "cpu", threads=threads)
    batch = np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32))
    on_gpu = any("cuda" in p.lower() for p in session.providers)
    seconds = time_calls(lambda: session.run(batch), iters,
                         torch.device("cuda" if on_gpu else "cpu"), warmup=_WARMUP)
    key = fmt.bench_key
    out = {f"infer_{key}_images_per_s": x.shape[0] / seconds,
           f"{key}_device": ", ".join(session.providers), f"{key}_build_s": build}
    if reference is not None:
        eager_s, served_s = alternate_medians(reference, lambda: session.run(batch), iters,
                                              x.device)
        out[f"{key}_vs_eager"] = eager_s / served_s
    return out


def exported_throughputs(model: torch.nn.Module, spec: Spec, x: torch.Tensor, *, iters: int,
                         threads: int | None, slow: bool = False) -> dict[str, Any]:
    """The ``run_benchmark`` hook: images/s of every format timed by default, and with
    ``slow`` of every registered format."""
    import onnxruntime as ort

    out: dict[str, Any] = {"onnxruntime_version": ort.__version__}
    model.eval()

    def eager() -> None:
        with torch.no_grad():
            model(x)

    try:
        for fmt in all_formats():
            if fmt.bench_by_default or slow:
                out.update(format_throughput(fmt, _inference_graph(model, spec), spec, x,
                                             iters, threads, reference=eager))
    finally:
        model.train()
    return out
