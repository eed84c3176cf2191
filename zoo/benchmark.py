"""`epdo bench`: how fast a zoo model builds, trains and infers, against the device's matmul.

``run_benchmark(spec, ...)`` measures, in one process on one device:

- build time: cold (an empty temporary stencil disk cache, ``$EPDO_CACHE_DIR`` pointed at a
  fresh directory, and the in-process stencil and basis caches cleared) and warm (a second
  build right after, every cache filled);
- training throughput: images/s of a full step (forward, cross-entropy, backward, Adam
  step) on random images and labels, one warm-up step, then the median of ``iters`` steps;
- eager inference throughput: eval mode under ``torch.no_grad``, one warm-up call (it
  expands and caches the kernels), the median of ``iters`` calls;
- TorchScript / ONNX Runtime / torch.export (``.pt2``, and on request AOTInductor)
  inference throughput through an optional ``exported`` hook
  (:func:`epdo.exporters.bench.exported_throughputs`; the zoo never imports the exporters);
- peak memory of one training step. CPU: the step runs in a fresh Python subprocess
  (``sys.executable``) that builds the model and creates the batch and the optimizer. On
  Linux it then reads its resident set size (``VmRSS``), resets its RSS high-water mark
  (writing 5 to ``/proc/self/clear_refs``), runs two training steps (the first creates
  Adam's state) and reads the high-water mark ``VmHWM``: the figure is ``VmHWM - VmRSS``,
  the peak growth of resident memory during the steps. Where the mark cannot be reset it
  falls back to the growth of ``ru_maxrss`` (a lifetime high-water mark, so a transient
  peak of the build can hide part of the step's; the report names the method used).
  CUDA: ``torch.cuda.max_memory_allocated`` over two training steps after
  ``reset_peak_memory_stats`` (absolute: includes parameters and optimizer state);
- FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
  products and convolutions) over the benchmarked batch and divided by its size, plus the Neural
  ePDO's elementwise 5x5 products, which the counter does not see
  (:func:`epdo.zoo.summary.extra_flops_per_block`, counted 1x for a forward and 3x for a training
  step: forward, and the gradients with respect to the input and the weights). The training
  step is counted through the Neural ePDO's definition (:func:`definition_path`): the
  arithmetic of the model, not the coefficients the fast backward regenerates. The forward
  is an eval-mode forward with cached kernels; ``flops_forward_per_image_batch1`` counts it
  on one image, as ``summarize(model).flops`` does, and is larger by the work done once per
  call (the Neural ePDO's per-forward kernel products, which a batch amortises); the
  training step is a train-mode forward plus backward, so it includes the kernel
  expansions from the bases, amortised over the batch; the optimizer step is not counted;
- the fp32 matmul rate of the same device: a square float32 matmul of n = 2048 (CPU) or
  4096 (CUDA), one warm-up, median of 3, ``2 n^3 / t``;
- achieved GFLOP/s (FLOPs per image x images/s) of training and of eager inference, and
  their ratios to the matmul rate: the headline figures, stable across noisy machines;
- which implementation of the Neural ePDO's stencil product ran (``stencil_product``: the
  fused C++ CPU kernels, or PyTorch ops where they could not be built or off the CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import bases, stencils
from .builder import ZooModel, build_model
from .device import DeviceError
from .device import resolve_device as _resolve_device
from .errors import EpdoError
from .layers.native import stencil_kernels
from .layers.stencil_product import definition_path
from .spec import Spec, load_spec
from .summary import extra_flops_per_block

MATMUL_N = {"cpu": 2048, "cuda": 4096}

ExportedHook = Callable[..., dict[str, Any]]
CompiledHook = Callable[[ZooModel, int, int, torch.device], dict[str, Any]]


class BenchError(EpdoError, ValueError):
    """An input problem (no CUDA, bad flags) reported to the user on one line."""


@dataclass
class BenchReport:
    """Every figure of one benchmark run (``None``: not measured, e.g. ``--no-export``)."""

    spec: str
    device: str
    threads: int
    batch_size: int
    iters: int
    build_cold_s: float
    build_warm_s: float
    train_images_per_s: float
    infer_eager_images_per_s: float
    train_peak_memory_mb: float
    train_peak_memory_method: str
    flops_forward_per_image: int
    flops_forward_per_image_batch1: int
    flops_train_step_per_image: int
    train_gflops: float
    infer_gflops: float
    matmul_n: int
    matmul_gflops: float
    train_ratio: float
    infer_ratio: float
    infer_torchscript_images_per_s: float | None = None
    infer_onnxruntime_images_per_s: float | None = None
    infer_pt2_images_per_s: float | None = None
    infer_aoti_images_per_s: float | None = None
    onnxruntime_device: str | None = None
    stencil_product: str | None = None
    params: int = 0
    torch_version: str = torch.__version__
    onnxruntime_version: str | None = None
    python_version: str = platform.python_version()
    machine: str = platform.machine()
    train_batch_size: int = 0
    """Images per training step: ``batch_size``, or 2 when that is 1 (BatchNorm cannot
    train on one image)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        extra = out.pop("extra")
        out.update(extra)
        return out


# --------------------------------------------------------------------------- helpers


def stencil_product_path(device: torch.device) -> str:
    """Which implementation of the Neural ePDO's stencil product runs on ``device``."""
    if device.type == "cpu" and stencil_kernels() is not None:
        return "fused C++ kernels (CPU)"
    return f"PyTorch ops ({device.type})"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU (:func:`epdo.zoo.device.resolve_device`);
    ``cuda`` without CUDA raises BenchError."""
    try:
        return _resolve_device(device)
    except DeviceError as exc:
        raise BenchError(str(exc)) from None


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], iters: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync_device(device)
    times = []
    for _ in range(max(1, iters)):
        start = time.perf_counter()
        fn()
        sync_device(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate_medians(first: Callable[[], Any], second: Callable[[], Any], iters: int,
                      device: torch.device, min_seconds: float = 2.0) -> tuple[float, float]:
    """Median wall times (s) of ``first()`` and ``second()`` taken in alternating rounds:
    ``iters`` rounds, or more for fast calls, until each side has run about ``min_seconds``
    (at most 500 rounds).

    A round calls its function twice and times the second call: the first absorbs the
    switch from the other side (another runtime's worker threads still spinning, caches
    holding the other's data), which would otherwise count against whichever side runs
    second."""
    times: tuple[list[float], list[float]] = ([], [])
    rounds = max(1, iters)
    done = 0
    while done < rounds:
        for fn, out in ((first, times[0]), (second, times[1])):
            fn()
            sync_device(device)
            start = time.perf_counter()
            fn()
            sync_device(device)
            out.append(time.perf_counter() - start)
        done += 1
        if done == 1:
            call = min(times[0][0], times[1][0])
            rounds = max(rounds, min(500, math.ceil(min_seconds / max(call, 1e-6) / 2)))
    return statistics.median(times[0]), statistics.median(times[1])


def matmul_gflops(device: torch.device, n: int | None = None, repeats: int = 3) -> tuple[int,
                                                                                        float]:
    """(n, GFLOP/s) of a square float32 ``n x n`` matmul on ``device``, median of ``repeats``."""
    n = n or MATMUL_N[device.type]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    with torch.no_grad():
        t = time_calls(lambda: torch.mm(a, b), repeats, device)
    return n, 2.0 * n**3 / t / 1e9


@contextlib.contextmanager
def _empty_caches() -> Iterator[None]:
    """A fresh temporary ``$EPDO_CACHE_DIR`` and empty in-process stencil/basis caches."""
    previous = os.environ.get("EPDO_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="epdo-bench-cache-") as tmp:
        os.environ["EPDO_CACHE_DIR"] = tmp
        stencils.clear_memory_cache()
        bases.clear_memory_cache()
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("EPDO_CACHE_DIR", None)
            else:
                os.environ["EPDO_CACHE_DIR"] = previous
            # the memory caches keep what was derived: the same arrays the user's cache holds


def time_build(spec: Spec) -> tuple[ZooModel, float, float]:
    """(model, cold seconds, warm seconds): the model is the warm build.

    Cold means cold only inside :func:`_empty_caches` (``run_benchmark`` calls it there).
    """
    start = time.perf_counter()
    build_model(spec)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    model = build_model(spec)
    warm = time.perf_counter() - start
    return model, cold, warm


def _extra(model: ZooModel) -> int:
    """FLOPs per image of a forward that FlopCounterMode does not see (the Neural ePDO
    products), as the modules count them."""
    was = model.training
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        extra = extra_flops_per_block(model, torch.zeros(1, *model.input_shape, device=device))
    model.train(was)
    return sum(extra)


def random_batch(model: ZooModel, batch_size: int, device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs and targets: labels (B,), or for a segmentation masks (B, H, W)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *model.input_shape, generator=gen).to(device)
    out = model.plan.output
    per_pixel = (out.height, out.width) if out.dense else ()
    classes = model.plan.num_classes or 1
    y = torch.randint(0, classes, (batch_size, *per_pixel), generator=gen).to(device)
    return x, y


def _train_step(model: ZooModel, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


def count_flops(model: ZooModel, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int, int]:
    """(forward, training step, forward at batch 1) FLOPs per image; see the module docstring.

    The first two are counted at the batch of ``x`` and divided by it; the third on one
    image, as :func:`epdo.zoo.summary.summarize` counts (it is that summary's total). They
    differ by work done once per call whatever the batch, which the batch amortises.
    """
    batch = x.shape[0]
    extra = _extra(model)
    model.eval()

    def eval_flops(inputs: torch.Tensor) -> int:
        with torch.no_grad():
            model(inputs)  # expand and cache the kernels
            counter = FlopCounterMode(display=False)
            with counter:
                model(inputs)
        return counter.get_total_flops()

    forward = eval_flops(x) // batch + extra
    forward_one = eval_flops(x[:1]) + extra
    model.train()
    counter = FlopCounterMode(display=False)
    with definition_path(), counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    train = counter.get_total_flops() // batch + 3 * extra
    return int(forward), int(train), int(forward_one)


def train_throughput(model: ZooModel, x: torch.Tensor, y: torch.Tensor, iters: int) -> float:
    """Images/s of a full Adam training step (one warm-up step, median of ``iters``)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t = time_calls(lambda: _train_step(model, opt, x, y), iters, x.device)
    model.zero_grad(set_to_none=True)
    return x.shape[0] / t


def infer_throughput(model: ZooModel, x: torch.Tensor, iters: int) -> float:
    """Images/s of an eval-mode, no-grad forward (one warm-up call, median of ``iters``)."""
    model.eval()
    with torch.no_grad():
        t = time_calls(lambda: model(x), iters, x.device)
    model.train()
    return x.shape[0] / t


# --------------------------------------------------------------------------- peak memory


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB else


def _proc_status_mb(field_name: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MB, None when unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_mb("VmHWM") is not None


def _peak_child(args_json: str) -> None:
    """Subprocess entry: build, then measure two training steps' RSS growth, print JSON."""
    args = json.loads(args_json)
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    model = build_model(args["spec"])
    device = torch.device("cpu")
    x, y = random_batch(model, args["batch_size"], device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rss = _proc_status_mb("VmRSS")
    exact = rss is not None and _reset_rss_peak()
    before = rss if exact else _maxrss_mb()
    for _ in range(2):
        _train_step(model, opt, x, y)
    after = _proc_status_mb("VmHWM") if exact else _maxrss_mb()
    method = ("cpu peak RSS growth (VmHWM reset, minus VmRSS before) over 2 training steps "
              "in a fresh subprocess" if exact else
              "cpu ru_maxrss growth over 2 training steps in a fresh subprocess")
    sys.stdout.write(json.dumps({"before_mb": before, "after_mb": after, "method": method})
                     + "\n")


def train_peak_memory_mb(spec: Spec, batch_size: int, device: torch.device,
                         threads: int) -> tuple[float, str]:
    """(MB, how it was measured) of a training step's peak memory; see the module docstring."""
    if device.type == "cuda":
        torch.manual_seed(0)
        model = build_model(spec).to(device)
        x, y = random_batch(model, batch_size, device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(2):
            _train_step(model, opt, x, y)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        del model, x, y, opt
        torch.cuda.empty_cache()
        return peak, "cuda max_memory_allocated over 2 training steps"
    args = json.dumps({"spec": spec.model_dump(mode="json"), "batch_size": batch_size,
                       "threads": threads})
    code = "import sys; from epdo.zoo.benchmark import _peak_child; _peak_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory subprocess failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["after_mb"] - result["before_mb"], result["method"]


# --------------------------------------------------------------------------- the run


MIN_TRAIN_BATCH = 2
"""The smallest training batch: BatchNorm needs two values per channel in training mode, so
``--batch-size 1`` times inference at 1 and training at 2."""


def run_benchmark(
    spec: Spec | dict[str, Any] | str | os.PathLike[str],
    batch_size: int = 64,
    device: str = "auto",
    threads: int | None = None,
    iters: int = 3,
    exported: ExportedHook | None = None,
    matmul_n: int | None = None,
    compiled: CompiledHook | None = None,
) -> BenchReport:
    """Measure ``spec`` (see the module docstring).

    Args:
        spec: a Spec, spec dict, YAML path or shipped spec name.
        batch_size: images per inference call and training step (training takes at least
            :data:`MIN_TRAIN_BATCH`).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        threads: ``torch.set_num_threads`` (and the hook's intra-op threads); default: torch's
            current setting.
        iters: timed iterations per throughput (median), after one warm-up.
        exported: optional ``hook(model, spec, x, iters=..., threads=...)`` returning
            ``{"infer_torchscript_images_per_s": ..., "infer_onnxruntime_images_per_s": ...,
            ...}``; its keys are merged into the report.
        matmul_n: size of the reference matmul; default 2048 on CPU, 4096 on CUDA.
        compiled: optional ``hook(model, batch_size, iters, device)`` timing a compiled
            training step (:func:`epdo.zoo.compiled_step.compiled_step_figures`); its keys
            go to the report's extras.

    Raises:
        BenchError: bad arguments or CUDA asked for and missing.
        SpecError: a bad spec.
    """
    if batch_size < 1:
        raise BenchError(f"--batch-size {batch_size}: must be at least 1")
    if iters < 1:
        raise BenchError(f"--iters {iters}: must be at least 1")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads {threads}: must be at least 1")
    dev = resolve_device(device)
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()

    # the whole run uses the temporary cache the cold build filled (the memory-peak
    # subprocess inherits $EPDO_CACHE_DIR), so the user's cache is neither read nor written
    with _empty_caches():
        torch.manual_seed(0)
        model, cold, warm = time_build(spec)
        model = model.to(dev)
        train_batch = max(batch_size, MIN_TRAIN_BATCH)
        xt, yt = random_batch(model, train_batch, dev)
        x = xt[:batch_size]
        flops_fwd, flops_train, flops_one = count_flops(model, xt, yt)
        if batch_size == 1:
            flops_fwd = flops_one
        train_ips = train_throughput(model, xt, yt, iters)
        extra = compiled(model, train_batch, iters, dev) if compiled is not None else {}
        infer_ips = infer_throughput(model, x, iters)
        n, mm = matmul_gflops(dev, matmul_n)
        peak, method = train_peak_memory_mb(spec, train_batch, dev, threads)
        if exported is not None:
            extra.update(exported(model, spec, x, iters=iters, threads=threads))

    train_gf = flops_train * train_ips / 1e9
    infer_gf = flops_fwd * infer_ips / 1e9
    report = BenchReport(
        spec=spec.name, device=str(dev), threads=threads, batch_size=batch_size, iters=iters,
        build_cold_s=cold, build_warm_s=warm, train_images_per_s=train_ips,
        infer_eager_images_per_s=infer_ips, train_peak_memory_mb=peak,
        train_peak_memory_method=method, flops_forward_per_image=flops_fwd,
        flops_train_step_per_image=flops_train, flops_forward_per_image_batch1=flops_one,
        train_gflops=train_gf, infer_gflops=infer_gf,
        matmul_n=n, matmul_gflops=mm, train_ratio=train_gf / mm, infer_ratio=infer_gf / mm,
        params=sum(p.numel() for p in model.parameters()),
        stencil_product=stencil_product_path(dev), train_batch_size=train_batch,
    )
    for key, value in extra.items():
        if hasattr(report, key) and key != "extra":
            setattr(report, key, value)
        else:
            report.extra[key] = value
    return report


__all__ = ["BenchError", "BenchReport", "alternate_medians", "count_flops", "matmul_gflops",
           "random_batch", "resolve_device", "run_benchmark", "sync_device", "time_build",
           "time_calls", "train_peak_memory_mb"]
