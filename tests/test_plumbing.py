"""Shared plumbing: atomic writes, the device resolver, the error base and the CLI's one error
path, the artifact format table, the latest checkpoint of a run folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from epdo.cli.app import handles_errors
from epdo.exporters.artifact import ArtifactError
from epdo.exporters.export import ExportError, VerificationError
from epdo.exporters.formats import FORMATS, SUFFIXES, artifact_format, format_of, suffix_of
from epdo.exporters.runtime import InputError, ServingError
from epdo.zoo.benchmark import BenchError
from epdo.zoo.benchmark import resolve_device as bench_device
from epdo.zoo.checkpoint import BEST, LAST, CheckpointError, latest_checkpoint
from epdo.zoo.data import DataError
from epdo.zoo.device import DeviceError, resolve_device
from epdo.zoo.errors import USAGE_ERROR, EpdoError
from epdo.zoo.evaluation import EvalError, parse_angles
from epdo.zoo.evaluation import resolve_device as eval_device
from epdo.zoo.fileio import atomic_open, atomic_path, atomic_write
from epdo.zoo.spec import SpecError
from epdo.zoo.training import NonFiniteLossError, TrainError
from epdo.zoo.training.device import resolve_device as train_device

# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_the_folder_and_an_ordinary_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    atomic_write(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    atomic_write(target, b"\x00\x01", fsync=True)
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(target.parent)) == ["b.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "entry.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as fh:
        fh.write(b"half")
        raise RuntimeError("disk on fire")
    with pytest.raises(KeyboardInterrupt), atomic_path(target, suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".entry.bin.")
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["entry.bin"]


# --------------------------------------------------------------------------- devices


def test_one_device_resolver_for_every_command() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    for resolve in (resolve_device, eval_device, bench_device, train_device):
        assert resolve("auto").type == want
    with pytest.raises(DeviceError, match="tpu"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="auto, cpu or cuda"):
        resolve_device("cuda:0", local_rank=0)  # a training process takes its local rank's GPU
    # each caller keeps its own error type, with the resolver's message
    for resolve, error in ((eval_device, EvalError), (bench_device, BenchError),
                           (train_device, TrainError)):
        with pytest.raises(error, match="'tpu'"):
            resolve("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_says_what_to_pass() -> None:
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu"):
            resolve_device(name)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error", "code"),
    [(SpecError, 2), (DataError, 2), (TrainError, 2), (CheckpointError, 2), (EvalError, 2),
     (BenchError, 2), (ExportError, 2), (ArtifactError, 2), (VerificationError, 1),
     (ServingError, 2), (InputError, 2), (DeviceError, 2), (NonFiniteLossError, 1)],
)
def test_every_user_facing_error_is_an_epdo_error(error: type[EpdoError], code: int) -> None:
    assert issubclass(error, EpdoError) and error.exit_code == code


def test_the_one_error_path_prints_one_literal_line(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.command()
    @handles_errors
    def boom(kind: str) -> None:
        if kind == "usage":
            raise EvalError("angles '[bold]x[/]': not a number\nsecond line")
        if kind == "failed":
            raise VerificationError("verification failed")
        if kind == "file":
            open(tmp_path / "missing.txt")  # noqa: SIM115

    runner = CliRunner()
    usage = runner.invoke(app, ["usage"])
    assert usage.exit_code == USAGE_ERROR and usage.stdout == ""
    assert usage.stderr == "error: angles '[bold]x[/]': not a number\n"
    failed = runner.invoke(app, ["failed"])
    assert failed.exit_code == 1 and failed.stderr == "error: verification failed\n"
    missing = runner.invoke(app, ["file"])
    assert missing.exit_code == USAGE_ERROR
    assert missing.stderr == f"error: {tmp_path / 'missing.txt'}: No such file or directory\n"


def test_check_takes_the_angles_of_eval() -> None:
    assert parse_angles("", option="--angles", allow_empty=True) == []
    assert parse_angles("22.5,45", option="--angles") == [22.5, 45.0]
    with pytest.raises(EvalError, match=r"^--angles 'abc': angle 'abc'"):
        parse_angles("abc", option="--angles")


# --------------------------------------------------------------------------- formats


def test_export_metadata_and_serving_share_the_suffixes() -> None:
    assert FORMATS == ("onnx", "torchscript", "pt2", "aoti")
    assert suffix_of("onnx") == ".onnx" and suffix_of("torchscript") == ".ts"
    assert suffix_of("pt2") == ".pt2" and suffix_of("aoti") == ".aoti.pt2"
    for format, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            assert format_of(f"model{suffix.upper()}") == format
            assert artifact_format(f"model{suffix}") == format
    assert format_of("model.torchscript") == "torchscript"
    assert format_of("runs/v1.2/model.pt2") == "pt2" and format_of("m.AOTI.pt2") == "aoti"
    assert format_of("model.yaml") is None and format_of(".pt2") is None
    with pytest.raises(ArtifactError, match=r"expected .onnx, .ts, .pt2 or .aoti.pt2"):
        artifact_format("model.yaml")


# --------------------------------------------------------------------------- checkpoints


def test_latest_checkpoint_is_the_newest_runs_best_else_last(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        latest_checkpoint(tmp_path / "runs")
    old, new = tmp_path / "runs" / "a" / "1", tmp_path / "runs" / "a" / "2"
    for run, names in ((old, (BEST, LAST)), (new, (LAST,))):
        run.mkdir(parents=True)
        for name in names:
            (run / name).write_bytes(b"")
    now = time.time()
    os.utime(old / BEST, (now - 100, now - 100))
    os.utime(old / LAST, (now - 100, now - 100))
    assert latest_checkpoint(tmp_path / "runs") == new / LAST
    (new / BEST).write_bytes(b"")
    assert latest_checkpoint(tmp_path / "runs") == new / BEST


# --------------------------------------------------------------------------- imports


def test_cli_modules_import_alone() -> None:
    """No import cycle: each command module imports on its own, before epdo.cli.main."""
    for name in ("app", "spec_cmd", "bench_cmd", "data_cmd", "eval_cmd", "export_cmd",
                 "predict_cmd", "train_cmd", "main"):
        subprocess.run([sys.executable, "-c", f"import epdo.cli.{name}"], check=True,
                       timeout=120)
