"""Benchmark of ``epdo serve``: requests/s and p50/p99 latency of single-image requests at
several concurrencies, with and without dynamic batching, and the server's overhead per
request against the in-process classifier. Measured with Triton's own client
(``tritonclient.http``, binary tensors) on loopback.

Usage (from the repository root; the ``serve`` and ``dev`` extras installed)::

    python scripts/bench_serve.py                               # quickstart, mnist_regular_gauss
    python scripts/bench_serve.py --specs quickstart --requests 200 --threads 2

Each spec is exported (random weights; the graph is what a trained model's is) to ONNX,
served three times (``--max-batch 1``: no batching; ``--max-batch 32 --max-delay-ms 0``:
requests that queue while a batch runs join the next; ``--max-batch 32 --max-delay-ms 5``:
the first request of a batch also waits up to 5 ms for others), and hit by 1, 8 and 32
client threads (in this process, on the same machine), ``--requests`` requests each level.
The in-process figure is ``Classifier.predict`` of one image, median of the same number of
calls. Prints one JSON object and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as httpclient

MODES = {"no batching": ("--max-batch", "1", "--max-delay-ms", "0"),
         "batching, no delay": ("--max-batch", "32", "--max-delay-ms", "0"),
         "batching, 5 ms delay": ("--max-batch", "32", "--max-delay-ms", "5")}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model: Path, threads: int, options: tuple[str, ...]) -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "epdo.cli", "serve", f"m={model}", "--port",
                             str(port), "--provider", "cpu", "--threads", str(threads),
                             *options], stderr=subprocess.DEVNULL)
    url = f"127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpclient.InferenceServerClient(url).is_server_ready():
                return proc, url
        except Exception:  # not listening yet
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def _load(url: str, image: np.ndarray, concurrency: int, requests: int) -> dict[str, float]:
    def one(_: int) -> float:
        client = httpclient.InferenceServerClient(url, network_timeout=300)
        tensor = httpclient.InferInput("images", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        start = time.perf_counter()
        client.infer("m", [tensor])
        return time.perf_counter() - start

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: one request per client
        start = time.perf_counter()
        latencies = sorted(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    return {"requests_per_s": requests / wall,
            "p50_ms": 1e3 * latencies[len(latencies) // 2],
            "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def bench_spec(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import torch

    from epdo.exporters.export import export_model
    from epdo.exporters.runtime import load_classifier
    from epdo.zoo import build_model, load_spec

    torch.manual_seed(0)
    spec = load_spec(name)
    model = build_model(spec).eval()
    path = folder / f"{name}.onnx"
    export_model((model, spec), "onnx", path, real_images=0)
    image = np.random.default_rng(0).random((1, *model.input_shape), dtype=np.float32)
    clf = load_classifier(path, "cpu", threads=args.threads)
    for _ in range(5):
        clf.predict(image)
    times = []
    for _ in range(args.requests):
        start = time.perf_counter()
        clf.predict(image)
        times.append(time.perf_counter() - start)
    in_process_ms = 1e3 * statistics.median(times)
    out: dict[str, Any] = {"in_process_ms": in_process_ms}
    for mode, options in MODES.items():
        proc, url = _serve(path, args.threads, options)
        try:
            for concurrency in args.concurrency:
                out[f"{mode}, c={concurrency}"] = _load(url, image, concurrency, args.requests)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    out["overhead_ms"] = out["no batching, c=1"]["p50_ms"] - in_process_ms
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=["quickstart", "mnist_regular_gauss"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: bench_spec(name, args, Path(tmp)) for name in args.specs}
    print(json.dumps(results, indent=2))
    print("\n| spec | mode | concurrency | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for name, figures in results.items():
        for key, value in figures.items():
            if isinstance(value, dict):
                mode, concurrency = key.rsplit(", c=", 1)
                print(f"| {name} | {mode} | {concurrency} | {value['requests_per_s']:.1f} | "
                      f"{value['p50_ms']:.2f} | {value['p99_ms']:.2f} |")
        print(f"| {name} | in-process predict, 1 image | - | "
              f"{1e3 / figures['in_process_ms']:.1f} | {figures['in_process_ms']:.2f} | - |")


if __name__ == "__main__":
    main()
