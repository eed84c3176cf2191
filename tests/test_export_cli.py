"""`epdo export` and `epdo info ARTIFACT`: latest run, default path, --force, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.exporters import export as export_mod
from epdo.exporters.loading import read_metadata
from epdo.zoo import build_model
from epdo.zoo.checkpoint import save_checkpoint
from epdo.zoo.spec import load_spec

runner = CliRunner()


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture()
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two runs of the quickstart model under ./runs, the second one newer."""
    monkeypatch.chdir(tmp_path)
    spec = load_spec("quickstart")
    torch.manual_seed(0)
    model = build_model(spec).eval()
    old = tmp_path / "runs" / "quickstart" / "20260101-000000"
    new = tmp_path / "runs" / "quickstart" / "20260102-000000"
    save_checkpoint(old / "checkpoint-best.pt", model=model, spec=spec, epoch=1)
    save_checkpoint(new / "checkpoint-best.pt", model=model, spec=spec, epoch=2)
    save_checkpoint(new / "checkpoint-last.pt", model=model, spec=spec, epoch=3)
    os.utime(old / "checkpoint-best.pt", (1e9, 1e9))
    return new


def test_export_latest_run_default_path_and_force(runs: Path) -> None:
    result = runner.invoke(app, ["export"])
    assert result.exit_code == 0, result.stderr
    assert "20260102-000000/checkpoint-best.pt" in result.stderr
    target = runs / "quickstart.onnx"
    assert target.is_file() and "max abs error" in result.stdout
    assert read_metadata(target)["epdo.spec_name"] == "quickstart"

    again = runner.invoke(app, ["export", str(runs)])
    assert again.exit_code == 2 and "--force" in one_line_error(again)
    forced = runner.invoke(app, ["export", str(runs), "--force", "--json"])
    assert forced.exit_code == 0
    assert json.loads(forced.stdout)["passed"] is True

    ts = runner.invoke(app, ["export", str(runs / "checkpoint-last.pt"), "--format",
                             "torchscript", "-o", "out/model.ts"])
    assert ts.exit_code == 0, ts.stderr
    assert read_metadata(Path("out/model.ts"))["epdo.verification"]["format"] == "torchscript"


def test_info_shows_artifact_metadata(runs: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["export", str(runs), "-o", "m.onnx"]).exit_code == 0
    table = runner.invoke(app, ["info", "m.onnx"])
    assert table.exit_code == 0
    for text in ("quickstart", "C8", "opset 17", "(batch, 1, 28, 28)", "T-shirt/top", "100.0%"):
        assert text in table.stdout
    data = json.loads(runner.invoke(app, ["info", "m.onnx", "--json"]).stdout)
    assert data["epdo.input_shape"] == [1, 28, 28]
    Path("bad.onnx").write_bytes(Path("m.onnx").read_bytes()[:500])
    bad = runner.invoke(app, ["info", "bad.onnx"])
    assert bad.exit_code == 2 and "bad.onnx" in one_line_error(bad)


def test_export_errors(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = runner.invoke(app, ["export", "nowhere.pt"])
    assert missing.exit_code == 2 and "nowhere.pt" in one_line_error(missing)
    fmt = runner.invoke(app, ["export", str(runs), "--format", "tflite"])
    assert fmt.exit_code == 2 and "tflite" in one_line_error(fmt)
    opset = runner.invoke(app, ["export", str(runs), "--opset", "12"])
    assert opset.exit_code == 2 and "opset" in one_line_error(opset)
    empty = runner.invoke(app, ["export", "--runs", "elsewhere"])
    assert empty.exit_code == 2 and "no checkpoint" in one_line_error(empty)

    real_runner = export_mod._runner

    def broken(path: Path, fmt: object):
        run = real_runner(path, fmt)
        return lambda x: run(x) * 2 + 1

    monkeypatch.setattr(export_mod, "_runner", broken)
    failed = runner.invoke(app, ["export", str(runs)])
    assert failed.exit_code == 1 and "verification failed" in one_line_error(failed)
    assert not (runs / "quickstart.onnx").exists()
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]
