"""The GPU check's steps, each a subprocess with its own time limit, gathered into one JSON
report (run by ``scripts/gpu_check.sh``; every step runs even when one before it failed).

1. the CUDA-only tests (``pytest -m cuda``);
2. ``epdo bench SPEC --device cuda --json`` for three specs: eager, TorchScript, onnxruntime
   (its CUDA provider when ``onnxruntime-gpu`` is installed) and the ``.pt2`` program;
3. one epoch of ``mnist_regular_gauss`` on the embedded sample in fp32, then with AMP.

Usage: ``python scripts/gpu_report.py REPORT.json [--budget SECONDS]`` (default 540: the
whole check fits 10 minutes with the set-up).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPECS = ("quickstart", "mnist_regular_gauss", "mnist_quotient_gauss")
LIMITS = {"tests": 150, "bench": 70, "train": 80}


def run(command: list[str], limit: float) -> dict[str, Any]:
    """One step: exit code, seconds, the last lines of its output, or ``timed_out``."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(command), "timed_out": True, "seconds": limit}
    return {"command": " ".join(command), "returncode": proc.returncode,
            "seconds": round(time.perf_counter() - start, 1), "stdout": proc.stdout,
            "tail": (proc.stdout + proc.stderr).strip().splitlines()[-8:]}


def epdo(*args: str) -> list[str]:
    return [sys.executable, "-m", "epdo.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--budget", type=float, default=540.0)
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget
    left = lambda cap: max(1.0, min(cap, deadline - time.perf_counter()))  # noqa: E731

    import torch

    report: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                              "gpu": torch.cuda.get_device_name(0)
                              if torch.cuda.is_available() else None}
    try:
        import onnxruntime

        report["onnxruntime"] = onnxruntime.__version__
        report["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        report["onnxruntime"] = None
    tests = run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                 "tests"], left(LIMITS["tests"]))
    found = re.findall(r"(\d+) (passed|failed|skipped|error)", " ".join(tests.get("tail", [])))
    report["cuda_tests"] = {**{k: int(n) for n, k in found},
                            **{k: v for k, v in tests.items() if k != "stdout"}}
    report["bench"] = {}
    for spec in SPECS:
        step = run(epdo("bench", spec, "--device", "cuda", "--json", "--iters", "5"),
                   left(LIMITS["bench"]))
        try:
            data = json.loads(step.pop("stdout", "") or "null")
        except ValueError:
            data = None
        keys = [k for k in (data or {}) if k.startswith("infer_") or k.endswith("_device")
                or k in ("train_images_per_s", "train_peak_memory_mb", "device")]
        report["bench"][spec] = {k: data[k] for k in keys} if data else step
    report["train"] = {}
    runs = Path(tempfile.mkdtemp(prefix="epdo-gpu-runs-"))
    for name, flag in (("fp32", "--no-amp"), ("amp", "--amp")):
        step = run(epdo("train", "mnist_regular_gauss", "--dataset", "sample", "--epochs", "1",
                        "--device", "cuda", flag, "--out", str(runs / name)),
                   left(LIMITS["train"]))
        step.pop("stdout", None)
        summaries = sorted((runs / name).rglob("summary.json"))
        if summaries:
            step["summary"] = json.loads(summaries[-1].read_text())
        report["train"][name] = step
    shutil.rmtree(runs, ignore_errors=True)
    Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str)[:4000])


if __name__ == "__main__":
    main()
