"""Benchmark: PyTorch eager vs onnxruntime (CPU) for one exported zoo model, and the time
of an export with its verification.

Usage (from the repository root)::

    python scripts/bench_export.py                          # mnist_regular_gauss, batch 64
    python scripts/bench_export.py --spec quickstart --batch 32 --threads 2 --runs 7

The model is randomly initialised (eval mode); timing a trained checkpoint gives the same
figures, the graph being the same. Both runtimes use ``--threads`` intra-op threads and
the same random batch; each is warmed up twice and the median of ``--runs`` runs is
reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from epdo.exporters.export import export_model
from epdo.zoo import build_model
from epdo.zoo.spec import load_spec


def median_seconds(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="mnist_regular_gauss")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = load_spec(args.spec)
    model = build_model(spec).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{spec.name}.onnx"
        t = time.perf_counter()
        report = export_model((model, spec), "onnx", path)
        export_total = time.perf_counter() - t
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(
        (args.batch, spec.input.channels, spec.input.height, spec.input.width), dtype=np.float32)
    xt = torch.from_numpy(x)

    def eager() -> object:
        with torch.no_grad():
            return model(xt)

    def onnxrt() -> object:
        return session.run(["logits"], {"images": x})

    t_eager = median_seconds(eager, args.runs)
    t_ort = median_seconds(onnxrt, args.runs)
    print(json.dumps({
        "spec": spec.name,
        "batch": args.batch,
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "eager_ms": round(1e3 * t_eager, 1),
        "onnxruntime_ms": round(1e3 * t_ort, 1),
        "eager_over_onnxruntime": round(t_eager / t_ort, 2),
        "export_plus_verify_s": round(export_total, 2),
        "export_s": round(report.export_seconds, 2),
        "verify_s": round(report.verify_seconds, 2),
        "max_abs": report.max_abs,
        "agreement": report.agreement,
    }, indent=2))


if __name__ == "__main__":
    main()
