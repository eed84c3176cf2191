"""`epdo bench`: every figure present and positive, FLOPs equal the summary, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from epdo.cli.bench_cmd import bench_table
from epdo.cli.main import app
from epdo.zoo import build_model
from epdo.zoo.summary import summarize

runner = CliRunner()

ALWAYS = (
    "build_cold_s", "build_warm_s", "train_images_per_s", "infer_eager_images_per_s",
    "train_peak_memory_mb", "flops_forward_per_image", "flops_forward_per_image_batch1",
    "flops_train_step_per_image",
    "train_gflops", "infer_gflops", "matmul_gflops", "train_ratio", "infer_ratio",
    "threads", "batch_size",
)
EXPORTED = ("infer_torchscript_images_per_s", "infer_onnxruntime_images_per_s",
            "infer_pt2_images_per_s")

TINY = """\
name: tiny_fd
description: A tiny C4 model with finite-difference stencils (no stencil derivation).
group: C4
discretization: fd
input: {channels: 1, size: 12}
defaults: {type: regular, order: 2, g: 1, s: 1, reduction: 1}
layers:
  - {op: pdo_conv, fields: 2, pool: 2}
  - {op: neural_epdo, fields: 2}
  - {op: head, classes: 3}
"""


def _bench(*args: str) -> dict:
    threads = torch.get_num_threads()
    result = runner.invoke(app, ["bench", *args, "--batch-size", "4", "--iters", "1",
                                 "--threads", "1", "--json"])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _check_positive(data: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        assert key in data, key
        assert isinstance(data[key], int | float) and data[key] > 0, (key, data[key])


def test_bench_quickstart_no_export() -> None:
    data = _bench("quickstart", "--no-export")
    _check_positive(data, ALWAYS)
    assert data["device"] in ("cpu", "cuda")
    assert data["batch_size"] == 4 and data["threads"] == 1
    for key in EXPORTED:
        assert data[key] is None
    labels = [str(cell) for cell in bench_table(data).columns[0].cells]
    assert not any(label.startswith("inference, ") and "eager" not in label
                   for label in labels), labels  # no empty rows for formats not timed
    assert data["torch_version"] == torch.__version__
    assert data["stencil_product"] in ("fused C++ kernels (CPU)", "PyTorch ops (cpu)",
                                       "PyTorch ops (cuda)")
    # counted on one image, the forward is the summary's (FlopCounterMode + the Neural ePDO
    # products); at batch 4 the once-per-call work is shared by 4 images
    summary = summarize(build_model("quickstart")).flops
    assert data["flops_forward_per_image_batch1"] == summary
    assert 0.9 * summary < data["flops_forward_per_image"] <= summary
    # a training step costs more than a forward, and less than 4 of them plus expansions
    assert data["flops_train_step_per_image"] > 2 * data["flops_forward_per_image"]
    ratio = data["train_gflops"] / data["matmul_gflops"]
    assert data["train_ratio"] == pytest.approx(ratio)


def test_bench_reports_the_pytorch_path_when_the_kernels_are_off(monkeypatch) -> None:
    monkeypatch.setenv("EPDO_NATIVE", "0")
    data = _bench("quickstart", "--no-export", "--device", "cpu")
    assert data["stencil_product"] == "PyTorch ops (cpu)"


def test_bench_exported_tiny_spec(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    data = _bench(str(path))
    _check_positive(data, ALWAYS + EXPORTED)
    assert data["onnxruntime_version"]
    assert data["flops_forward_per_image_batch1"] == summarize(build_model(path)).flops
    ratios = [f"{key}_vs_eager" for key in ("torchscript", "onnxruntime", "pt2")]
    _check_positive(data, tuple(ratios))  # each timed alternately with the eager model
    table = bench_table(data)
    assert table.row_count >= len(ALWAYS) - 2 + len(EXPORTED) + len(ratios)
    labels = [str(cell) for cell in table.columns[0].cells]
    assert sum("/ eager, called alternately" in label for label in labels) == len(ratios)


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bench_input_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", str(tmp_path / "missing.yaml"), "--json"])
    assert result.exit_code == 2
    one_line_error(result)
    result = runner.invoke(app, ["bench", "quickstart", "--batch-size", "0"])
    assert result.exit_code == 2
    assert "batch-size" in one_line_error(result)
    result = runner.invoke(app, ["bench", "quickstart", "--device", "tpu"])
    assert result.exit_code == 2
    one_line_error(result)
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["bench", "quickstart", "--device", "cuda"])
        assert result.exit_code == 2
        assert "CUDA" in one_line_error(result)


def test_bench_at_batch_one_trains_at_two(tmp_path: Path) -> None:
    # a head with a hidden BatchNorm layer cannot train on one image: inference is timed at
    # the batch asked for, training at 2, and the report says so
    spec = tmp_path / "tiny_bn.yaml"
    spec.write_text(TINY.replace("{op: head, classes: 3}", "{op: head, classes: 3, hidden: [4]}"))
    threads = torch.get_num_threads()
    result = runner.invoke(app, ["bench", str(spec), "--batch-size", "1", "--iters", "1",
                                 "--threads", "1", "--no-export"])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "training figures at batch 2" in result.output
    result = runner.invoke(app, ["bench", str(spec), "--batch-size", "1", "--iters", "1",
                                 "--threads", "1", "--no-export", "--json"])
    torch.set_num_threads(threads)
    data = json.loads(result.stdout)
    assert data["batch_size"] == 1 and data["train_batch_size"] == 2
    _check_positive(data, ALWAYS)
    assert data["flops_forward_per_image"] == data["flops_forward_per_image_batch1"]
