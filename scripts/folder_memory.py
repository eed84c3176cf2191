"""Measure: peak memory of `epdo train` on a folder of N RGB images, held in memory (uint8)
and streamed from disk, beside a tiny folder (2,000 images: the model and a few batches).

Usage (from the repository root)::

    python scripts/folder_memory.py --images 20000 --size 96 --spec rgb_regular_gauss

It writes N RGB PNG files of SIZE x SIZE (the embedded sample's images, upscaled and tinted
per class) into a temporary folder, then runs ``epdo train SPEC --dataset folder:DIR
--epochs 1`` three times in a child process: a small folder (2,000 images, 53 MiB decoded:
the model and a few batches), the whole folder in memory (budget 8G) and streamed (budget
0). Each child is stopped with Ctrl-C ``--seconds`` after its training started (the trainer
saves and exits), so the three are measured over the same work: decoding, then training
steps. The figure is the peak resident memory (VmHWM) of the trainer plus the largest
memory its DataLoader workers had, read from /proc while it runs (workers: proportional set
size, so that pages they share with the trainer after the fork are not counted twice).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from epdo.zoo.data import load_dataset

TINTS = np.array([[1.0, 0.6, 0.6], [0.6, 1.0, 0.6], [0.6, 0.6, 1.0], [1.0, 1.0, 0.5],
                  [0.5, 1.0, 1.0], [1.0, 0.5, 1.0], [0.8, 0.8, 0.8], [1.0, 0.8, 0.5],
                  [0.5, 0.8, 1.0], [0.9, 0.6, 0.9]])


def make_folder(root: Path, n: int, size: int) -> None:
    sample = load_dataset("sample-upright", "train")
    images = (sample.images[:, 0].numpy() * 255).astype(np.uint8)
    labels = sample.labels.numpy()
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        j = i % len(labels)
        gray = Image.fromarray(images[j]).resize((size, size), Image.Resampling.BILINEAR)
        rgb = (np.asarray(gray, np.float32)[..., None] * TINTS[labels[j]]).astype(np.uint8)
        Image.fromarray(rgb).save(root / f"class{labels[j]}" / f"{i:06d}.png")


def _kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    """Proportional set size: a forked worker's pages shared with the trainer count half."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def measure(spec: str, folder: Path, budget: str, seconds: float, out: Path,
            extra: list[str]) -> dict[str, float]:
    """Peak memory (MiB) of a training run stopped ``seconds`` after it started training."""
    cmd = [sys.executable, "-m", "epdo.cli", "train", spec, "--dataset", f"folder:{folder}",
           "--epochs", "1", "--out", str(out), "--memory-budget", budget, "--device", "cpu",
           *extra]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "COLUMNS": "200"})
    workers_peak = 0
    started = time.perf_counter()
    seen_steps = False
    main_peak = 0
    while child.poll() is None:
        workers_peak = max(workers_peak, sum(_pss_kib(p) for p in _children(child.pid)))
        main_peak = max(main_peak, _kib(child.pid, "VmHWM"))
        metrics = out / "metrics.jsonl"
        if not seen_steps and out.is_dir() and (out / "spec.yaml").exists():
            seen_steps = True
            steps_started = time.perf_counter()
        if seen_steps and time.perf_counter() - steps_started > seconds:
            child.send_signal(signal.SIGINT)
            break
        if metrics.exists():
            break
        time.sleep(0.2)
    main_peak = max(main_peak, _kib(child.pid, "VmHWM"))
    output, _ = child.communicate(timeout=600)
    return {"trainer_mib": main_peak / 1024, "workers_mib": workers_peak / 1024,
            "total_mib": (main_peak + workers_peak) / 1024,
            "seconds": time.perf_counter() - started, "log_tail": output.strip()[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--spec", default="rgb_regular_gauss")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of training before the run is stopped")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        big, tiny = tmp_path / "big", tmp_path / "tiny"
        t0 = time.perf_counter()
        make_folder(big, args.images, args.size)
        make_folder(tiny, 2000, args.size)
        made = time.perf_counter() - t0
        extra = ["--input-size", str(args.size)]
        results = {
            "images": args.images, "size": args.size, "spec": args.spec,
            "decoded_dataset_mib": args.images * 3 * args.size**2 / 2**20,
            "folder_written_seconds": made,
            "tiny_in_memory": measure(args.spec, tiny, "8G", args.seconds, tmp_path / "r1", extra),
            "in_memory": measure(args.spec, big, "8G", args.seconds, tmp_path / "r2", extra),
            "streamed": measure(args.spec, big, "0", args.seconds, tmp_path / "r3",
                                extra + ["--workers", str(args.workers)]),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
