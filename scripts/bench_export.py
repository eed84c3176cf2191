"""Benchmark: PyTorch eager against one exported format (default onnx) for one zoo model,
and the time of an export with its verification.

Usage (from the repository root)::

    python scripts/bench_export.py                          # mnist_regular_gauss, batch 64
    python scripts/bench_export.py --spec quickstart --batch 32 --threads 2 --iters 7
    python scripts/bench_export.py --format pt2

The model is randomly initialised (eval mode); timing a trained checkpoint gives the same
figures, the graph being the same. Both are timed as ``epdo bench`` times them (the same
timer and warm-up; the artifact sealed, checked and loaded as serving loads it, with epdo's
session options and ``--threads`` intra-op threads) on the same random batch. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from epdo.exporters.bench import format_throughput
from epdo.exporters.export import export_model
from epdo.exporters.formats import FORMATS, format_named
from epdo.exporters.inference import inference_model
from epdo.zoo import build_model
from epdo.zoo.benchmark import time_calls
from epdo.zoo.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="mnist_regular_gauss")
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = load_spec(args.spec)
    model = build_model(spec).eval()
    fmt = format_named(args.format)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = export_model((model, spec), fmt.name, Path(tmp) / f"{spec.name}{fmt.suffix}")
        export_total = time.perf_counter() - start
    shape = (args.batch, spec.input.channels, spec.input.height, spec.input.width)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = args.batch / time_calls(lambda: model(x), args.iters, x.device, warmup=2)
    exported = format_throughput(fmt, inference_model(model), spec, x, args.iters, args.threads)
    served = exported[f"infer_{fmt.bench_key}_images_per_s"]
    print(json.dumps({
        "spec": spec.name,
        "format": fmt.name,
        "batch": args.batch,
        "threads": args.threads,
        "torch": torch.__version__,
        "eager_images_per_s": round(eager, 1),
        "exported_images_per_s": round(served, 1),
        "exported_over_eager": round(served / eager, 2),
        "export_plus_verify_s": round(export_total, 2),
        "export_s": round(report.export_seconds, 2),
        "verify_s": round(report.verify_seconds, 2),
        "max_abs": report.max_abs,
        "agreement": report.agreement,
    }, indent=2))


if __name__ == "__main__":
    main()
