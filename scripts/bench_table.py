"""The `epdo bench` table of docs/speed.md: one `epdo bench SPEC --json` run per shipped MNIST spec,
each in its own process, printed as a Markdown table (and the raw JSON objects to a file).

Usage (from the repository root)::

    python scripts/bench_table.py                       # batch 64, 2 threads, 3 iterations
    python scripts/bench_table.py --specs quickstart mnist_cnn --json-out bench.jsonl
    python scripts/bench_table.py --neural --all-formats    # every served form of the Neural
                                                            # ePDO specs, against eager
    python scripts/bench_table.py --neural --compile        # the torch.compile'd step
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SPECS = ["mnist_regular_gauss", "mnist_regular_fd", "mnist_quotient_gauss",
         "mnist_d16c16_gauss", "mnist_pdoeconv_gauss", "mnist_cnn", "quickstart"]


def neural_specs() -> list[str]:
    """The shipped specs with Neural ePDO layers, as their specs say."""
    from epdo.zoo import list_specs, load_spec

    return [name for name in list_specs()
            if any(getattr(layer, "op", None) == "neural_epdo"
                   for layer in load_spec(name).layers)]


COLUMNS = [
    ("spec", "spec", "{}"),
    ("build cold / warm (s)", ("build_cold_s", "build_warm_s"), "{:.1f} / {:.2f}"),
    ("train img/s", "train_images_per_s", "{:.1f}"),
    ("eager img/s", "infer_eager_images_per_s", "{:.1f}"),
    ("TorchScript img/s", "infer_torchscript_images_per_s", "{:.1f}"),
    ("ORT img/s", "infer_onnxruntime_images_per_s", "{:.1f}"),
    ("ORT / eager", ("infer_onnxruntime_images_per_s", "/", "infer_eager_images_per_s"),
     "{:.2f}"),
    ("train peak MB", "train_peak_memory_mb", "{:.0f}"),
    ("GFLOP fwd / step", ("flops_forward_per_image", "flops_train_step_per_image"), None),
    ("matmul GFLOP/s", "matmul_gflops", "{:.0f}"),
    ("train ratio", "train_ratio", "{:.2f}"),
    ("eager ratio", "infer_ratio", "{:.2f}"),
]

FORMS = [("eager", "eager"), ("`.pt2`", "pt2"), ("AOTI", "aoti"), ("ORT", "onnxruntime"),
         ("TorchScript", "torchscript")]
FORM_COLUMNS = [("spec", "spec", "{}")] + [
    (f"{title} img/s" if key == "eager" else title, f"infer_{key}_images_per_s", "{:.1f}")
    for title, key in FORMS] + [
    (f"{title} / eager", f"{key}_vs_eager", "{:.2f}") for title, key in FORMS[1:]]
"""The served forms' table (``--all-formats``): every form's images/s, and its speed against
eager from the two called alternately in the same run."""
COMPILE_COLUMNS = [
    ("spec", "spec", "{}"), ("batch", "train_batch_size", "{}"),
    ("eager step img/s", "train_images_per_s", "{:.1f}"),
    ("compiled step img/s", "train_compiled_images_per_s", "{:.1f}"),
    ("compiled / eager", "train_compiled_vs_eager", "{:.2f}"),
    ("compile s", "train_compile_s", "{:.0f}"),
    ("graph breaks", "train_compiled_graph_breaks", "{}"),
]
"""The compiled training step's table (``--compile``)."""


def cell(report: dict, key, fmt) -> str:
    if key == ("flops_forward_per_image", "flops_train_step_per_image"):
        return "{:.3g} / {:.3g}".format(*(report[k] / 1e9 for k in key))
    if isinstance(key, tuple) and key[1] == "/":  # a ratio of two figures of the same run
        top, bottom = report.get(key[0]), report.get(key[2])
        return "n/a" if top is None or not bottom else fmt.format(top / bottom)
    values = [report.get(k) for k in (key if isinstance(key, tuple) else (key,))]
    if any(v is None for v in values):
        return "n/a"
    return fmt.format(*values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=SPECS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--neural", action="store_true",
                        help="the Neural ePDO specs (instead of --specs)")
    parser.add_argument("--all-formats", action="store_true",
                        help="also the AOTInductor package; print the served forms' table")
    parser.add_argument("--compile", action="store_true",
                        help="time the torch.compile'd training step (no exported forms); "
                        "print its table")
    args = parser.parse_args()
    specs = neural_specs() if args.neural else args.specs
    columns = (COMPILE_COLUMNS if args.compile else FORM_COLUMNS if args.all_formats
               else COLUMNS)
    reports = []
    for name in specs:
        cmd = [sys.executable, "-m", "epdo.cli", "bench", name, "--batch-size",
               str(args.batch_size), "--threads", str(args.threads), "--iters",
               str(args.iters), "--json"] + (["--all-formats"] if args.all_formats else [])
        cmd += ["--compile", "--no-export"] if args.compile else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        reports.append(json.loads(out))
        print(f"{name}: done", file=sys.stderr)
    if args.json_out:
        args.json_out.write_text("".join(json.dumps(r) + "\n" for r in reports))
    print("| " + " | ".join(title for title, _, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for report in reports:
        print("| " + " | ".join(cell(report, key, fmt) for _, key, fmt in columns) + " |")


if __name__ == "__main__":
    main()
