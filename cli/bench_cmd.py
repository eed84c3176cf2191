"""`epdo bench`: build, training and inference speed of a spec, against the device's matmul
(a thin layer over :func:`epdo.zoo.benchmark.run_benchmark`).

Exit codes: 0 measured; 2 an input problem (bad spec, CUDA missing, bad flags) on one line.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from epdo.cli.app import console, fail, print_json
from epdo.cli.text import literal

# (key, label, unit, format)
ROWS = (
    ("build_cold_s", "build, cold (empty cache)", "s", "{:.3f}"),
    ("build_warm_s", "build, warm", "s", "{:.3f}"),
    ("train_images_per_s", "training step (fwd + bwd + Adam)", "images/s", "{:.1f}"),
    ("train_compiled_images_per_s", "training step, torch.compile", "images/s", "{:.1f}"),
    ("train_compiled_vs_eager", "  compiled / eager, called alternately", "ratio", "{:.2f}"),
    ("train_compile_s", "torch.compile, first two steps", "s", "{:.1f}"),
    ("train_compiled_graph_breaks", "torch.compile, graph breaks", "", "{:d}"),
    ("infer_eager_images_per_s", "inference, PyTorch eager", "images/s", "{:.1f}"),
    ("exported", "", "", None),  # one row per exported format timed (_format_rows)
    ("train_peak_memory_mb", "peak memory of a training step", "MB", "{:.1f}"),
    ("flops_forward_per_image", "FLOPs per image, forward", "MFLOP", None),
    ("flops_forward_per_image_batch1", "FLOPs per image, forward at batch 1", "MFLOP", None),
    ("flops_train_step_per_image", "FLOPs per image, training step", "MFLOP", None),
    ("train_gflops", "achieved, training", "GFLOP/s", "{:.2f}"),
    ("infer_gflops", "achieved, eager inference", "GFLOP/s", "{:.2f}"),
    ("matmul_gflops", "fp32 matmul", "GFLOP/s", "{:.2f}"),
    ("train_ratio", "training / matmul", "ratio", "{:.3f}"),
    ("infer_ratio", "eager inference / matmul", "ratio", "{:.3f}"),
)


def _format_rows(data: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    """Rows for every exported format the report timed, named by the format registry: its
    images/s and its speed against eager, timed alternately with it."""
    from epdo.exporters.formats import all_formats

    rows: list[tuple[str, str, str, str | None]] = []
    for f in all_formats():
        if data.get(f"infer_{f.bench_key}_images_per_s") is None:
            continue
        rows.append((f"infer_{f.bench_key}_images_per_s",
                     f"inference, {f.title} ({data.get(f'{f.bench_key}_device', '?')})",
                     "images/s", "{:.1f}"))
        if f"{f.bench_key}_vs_eager" in data:
            rows.append((f"{f.bench_key}_vs_eager", f"  {f.name} / eager, called alternately",
                         "ratio", "{:.2f}"))
    return rows


def bench_table(data: dict[str, Any]) -> Table:
    """The figures of a report dict as a (figure, value, unit) Rich table."""
    table = Table(title=literal(f"bench {data['spec']} on {data['device']} ({data['threads']} "
                             f"threads, batch {data['batch_size']}, median of {data['iters']})"))
    table.add_column("figure", justify="left", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit", justify="left", no_wrap=True)
    rows = [row for key, *rest in ROWS
            for row in (_format_rows(data) if key == "exported" else [(key, *rest)])
            if not (row[0].startswith("train_compile") and row[0] not in data)]
    for key, label, unit, fmt in rows:
        value = data.get(key)
        if value is None:
            text = "-"
        elif fmt is None:
            text = f"{value / 1e6:.2f}"
        else:
            text = fmt.format(value)
        if key == "matmul_gflops":
            label = f"{label} (n = {data['matmul_n']})"
        table.add_row(label, text, unit)
    return table


def bench_command(
    spec: str = typer.Argument(..., help="Shipped spec name or YAML path."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per step."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda."),
    threads: int = typer.Option(None, "--threads", help="torch and onnxruntime intra-op "
                                "threads; default: torch's current setting."),
    iters: int = typer.Option(3, "--iters", help="Timed iterations (median) after a warm-up."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with every figure."),
    no_export: bool = typer.Option(False, "--no-export",
                                   help="Skip the exported formats (eager PyTorch only)."),
    slow: bool = typer.Option(False, "--all-formats", "--aoti",
                              help="Also time the formats that take minutes to build (the "
                              "AOTInductor package: compiles C++, needs a compiler)."),
    compile_step: bool = typer.Option(False, "--compile",
                                      help="Also time the training step compiled by "
                                      "torch.compile (tens of seconds to compile: generates C++)."),
) -> None:
    """Measure build time, training and inference throughput, peak memory and FLOP rates."""
    from functools import partial

    from epdo.zoo.benchmark import run_benchmark

    hook = None
    if slow and no_export:
        fail("--all-formats times exported forms; drop --no-export")
    if not no_export:
        from epdo.exporters.bench import exported_throughputs
        from epdo.exporters.formats import all_formats

        if slow:
            for fmt in all_formats():
                fmt.require()  # a missing compiler: one line, before anything is timed
        hook = partial(exported_throughputs, slow=slow)
    compiled = None
    if compile_step:
        from epdo.zoo.compiled_step import compiled_step_figures

        compiled = compiled_step_figures
    report = run_benchmark(spec, batch_size=batch_size, device=device, threads=threads,
                           iters=iters, exported=hook, compiled=compiled)
    data = report.to_dict()
    if as_json:
        print_json(data)
        return
    console.print(bench_table(data))
    for line in (f"headline: training reaches {data['train_ratio']:.3f} and eager inference "
                 f"{data['infer_ratio']:.3f} of the fp32 matmul rate "
                 f"({data['matmul_gflops']:.1f} GFLOP/s) of {data['device']}",
                 f"peak memory: {data['train_peak_memory_method']}",
                 *([f"training figures at batch {data['train_batch_size']} (BatchNorm cannot "
                    "train on one image)"]
                   if data["train_batch_size"] != data["batch_size"] else []),
                 f"stencil product: {data['stencil_product']}"):
        console.print(literal(line), highlight=False)
