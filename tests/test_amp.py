"""Mixed precision: ``epdo train --amp`` on the CPU (bfloat16 autocast, no scaler), the
precision recorded in the run summary, and a resumed run keeping its gradient scaler."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from test_train import DATA, TINY
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo.checkpoint import LAST
from epdo.zoo.training import Precision, resolve_precision, train

CPU = torch.device("cpu")


@pytest.fixture
def tiny_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_dataset`` giving the tiny splits (for the command line)."""
    import epdo.zoo.data

    def load(name: str, split: str, data_dir=None, seed: int = 0):
        return DATA[0] if split == "train" else DATA[1]

    monkeypatch.setattr(epdo.zoo.data, "load_dataset", load, raising=False)


def test_amp_on_the_cpu_is_bfloat16_without_a_scaler() -> None:
    on = resolve_precision(True, CPU, "fp32")
    assert on.dtype == torch.bfloat16 and not on.scaler and on.name == "bf16"
    assert resolve_precision(None, CPU, "amp").dtype is None  # a spec's amp: CUDA only
    assert resolve_precision(False, CPU, "amp").dtype is None


def test_one_tiny_epoch_with_amp_on_the_cpu(tmp_path: Path, tiny_data) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(spec), "--amp", "--device", "cpu",
                                      "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["amp"] is True and summary["precision"] == "bf16"
    final = summary["final"]
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["test_loss"])
    plain = train(TINY, out=tmp_path / "fp32", data=DATA, epochs=1, device="cpu")
    assert plain.summary["amp"] is False and plain.summary["precision"] == "float32"


def test_a_resumed_run_keeps_its_gradient_scaler(tmp_path: Path, monkeypatch) -> None:
    """float16 autocast with a scaler (what a CUDA GPU without bfloat16 gets), on the CPU:
    the scaler's state saved after epoch 1 is the one epoch 2 continues from."""
    import epdo.zoo.training.trainer as trainer

    fp16 = Precision(torch.float16, scaler=True)
    monkeypatch.setattr(trainer, "resolve_precision", lambda amp, device, spec: fp16)
    train(TINY, out=tmp_path, data=DATA, epochs=1, device="cpu")
    last = tmp_path / LAST
    checkpoint = torch.load(last, weights_only=True)
    saved = checkpoint["extra"]["scaler"]
    assert saved is not None and saved["scale"] > 0
    checkpoint["extra"]["scaler"] = {**saved, "scale": 1024.0, "_growth_tracker": 3}
    torch.save(checkpoint, last)
    train(resume=tmp_path, data=DATA, epochs=2, device="cpu")
    scaler = torch.load(last, weights_only=True)["extra"]["scaler"]
    assert scaler["scale"] == 1024.0 and scaler["_growth_tracker"] == 3 + 5  # 5 steps later
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["amp"] is True and summary["precision"] == "fp16"
