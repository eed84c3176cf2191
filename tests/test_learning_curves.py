"""scripts/learning_curves.py: per-epoch test accuracy of several specs, trained alike."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "learning_curves.py"
TINY = """
group: C4
input: {channels: 1, size: 28}
layers:
  - {op: pdo_conv, fields: 2, order: 1, pool: 4}
  - {op: head, classes: 10}
train: {dataset: sample, batch_size: 200, epochs: 5}
"""


@pytest.fixture(scope="module")
def script() -> dict:
    return runpy.run_path(str(SCRIPT))


def test_curves_for_a_spec_and_its_override(script: dict, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    out = tmp_path / "curves.json"
    code = script["main"]([str(spec), f"{spec}:kernel_basis=raw", "--epochs", "2",
                           "--json", str(out)])
    assert code == 0
    curves = json.loads(out.read_text())["curves"]
    assert [c["spec"] for c in curves] == [str(spec), f"{spec}:kernel_basis=raw"]
    for c in curves:
        assert len(c["test_acc"]) == 2 and all(0.0 <= a <= 1.0 for a in c["test_acc"])
        assert c["parameters"] > 0
    # the two parameterisations start from different weights: different curves
    assert curves[0]["train_loss"] != curves[1]["train_loss"]
    table = capsys.readouterr().out
    assert "test accuracy per epoch (sample, 2 epochs" in table and "ep  2" in table


def test_a_bad_override_is_one_line_and_exit_2(script: dict, capsys) -> None:
    assert script["main"](["quickstart:no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
