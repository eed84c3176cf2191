"""End to end on the embedded sample of real images: a spec file -> `epdo train` ->
`epdo eval --angles` from the run directory alone, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from epdo.cli.main import app

runner = CliRunner()

SPEC = {
    "name": "e2e",
    "group": "C4",
    "discretization": "gauss",
    "input": {"channels": 1, "size": 28},
    "layers": [
        {"op": "pdo_conv", "fields": 3, "order": 2, "pool": 2},
        {"op": "neural_epdo", "fields": 4, "g": 1, "order": 2, "pool": 2},
        {"op": "head", "classes": 10},
    ],
    "train": {"dataset": "sample-upright", "epochs": 3, "batch_size": 32, "lr": 5e-3},
}


def test_train_then_eval_on_the_embedded_sample(tmp_path: Path) -> None:
    spec = tmp_path / "e2e.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", str(spec), "--out", str(run), "--device", "cpu"])
    assert trained.exit_code == 0, trained.stdout + trained.stderr
    assert "final test accuracy" in trained.stdout
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # ten classes: chance is 0.1 +- 0.01 on 1,000 images; this tiny model reaches ~0.2 in 3 epochs
    assert len(metrics) == 3 and metrics[-1]["test_acc"] > 0.15

    evaluated = runner.invoke(app, ["eval", str(run), "--angles", "0:360:45", "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["num_images"] == 1000 and report["dataset"] == "sample-upright"
    assert abs(report["accuracy"] - max(m["test_acc"] for m in metrics)) < 1e-9
    acc = {round(a["degrees"]): a["accuracy"] for a in report["angles"]}
    # a C4-equivariant network scores exactly the same on the quarter turns
    assert acc[0] == acc[90] == acc[180] == acc[270]
    assert set(acc) == {0, 45, 90, 135, 180, 225, 270, 315}
