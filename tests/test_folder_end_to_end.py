"""End to end on a real folder of images, through the command line: PNG files in class
subfolders (gray 28x28 from the embedded sample, and RGB copies at 36x36) -> `epdo train
--dataset folder:PATH` -> `epdo eval` -> `epdo export --format onnx` -> `epdo predict`,
whose labels are the folder names and whose probabilities are the trained model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo.checkpoint import load_model, read_checkpoint
from epdo.zoo.data import load_dataset
from epdo.zoo.data.folder_run import run_split

pytest.importorskip("onnxruntime")

runner = CliRunner()

#: four of Fashion-MNIST's classes, named as a user would name folders
CLASSES = {1: "trouser", 5: "sandal", 8: "bag", 9: "ankle boot"}
PER_CLASS = 24

SPEC = {
    "name": "folder_e2e",
    "group": "C4",
    "discretization": "gauss",
    "input": {"channels": 3, "size": 32, "mean": "auto", "std": "auto", "fit": "resize"},
    "layers": [
        {"op": "pdo_conv", "fields": 3, "order": 2, "pool": 2},
        {"op": "neural_epdo", "fields": 4, "g": 1, "order": 2, "pool": 2},
        {"op": "head", "classes": 10},
    ],
    "train": {"dataset": "folder", "epochs": 1, "batch_size": 16, "lr": 5e-3,
              "augment": {"rotate": True, "flip": True}},
}


def _make_folder(root: Path) -> None:
    """PER_CLASS gray PNGs per class, and an RGB 36x36 copy of every third one."""
    sample = load_dataset("sample-upright", "train")
    for label, name in CLASSES.items():
        folder = root / name
        folder.mkdir(parents=True)
        index = torch.nonzero(sample.labels == label).flatten()[:PER_CLASS].tolist()
        for k, i in enumerate(index):
            pixels = (sample.images[i, 0].numpy() * 255).round().astype(np.uint8)
            image = Image.fromarray(pixels, mode="L")
            image.save(folder / f"{k:03d}.png")
            if k % 3 == 0:
                image.convert("RGB").resize((36, 36), Image.Resampling.BICUBIC).save(
                    folder / f"{k:03d}_rgb36.png")


def _ok(result) -> None:
    assert result.exit_code == 0, result.stdout + result.stderr


def test_folder_train_eval_export_predict(tmp_path: Path) -> None:
    data = tmp_path / "cells"
    _make_folder(data)
    spec = tmp_path / "folder_e2e.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    run = tmp_path / "run"
    names = sorted(CLASSES.values())

    trained = runner.invoke(app, ["train", str(spec), "--dataset", f"folder:{data}", "--out",
                                  str(run), "--device", "cpu"])
    _ok(trained)
    assert "the head predicts the folder's 4 classes" in trained.stdout
    record = json.loads((run / "data.json").read_text())
    assert record["classes"] == names and record["layout"] == "seeded split"
    # a seeded, stratified 20% split of 32 images per class: 6 test images each
    assert len(record["test"]) == 4 * 6 and len(record["train"]) == 4 * 26
    checkpoint = read_checkpoint(run)
    assert checkpoint["extra"]["classes"] == names
    assert checkpoint["spec"]["input"]["mean"] == record["mean"]  # auto -> numbers

    evaluated = runner.invoke(app, ["eval", str(run), "--angles", "0:360:90", "--json"])
    _ok(evaluated)
    report = json.loads(evaluated.stdout)
    assert report["dataset"] == "folder" and report["classes"] == names
    assert report["num_images"] == 24
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert abs(report["accuracy"] - metrics["test_acc"]) < 1e-9

    artifact = tmp_path / "cells.onnx"
    _ok(runner.invoke(app, ["export", str(run), "--format", "onnx", "-o", str(artifact)]))
    files = [data / path for path, _ in record["test"]]
    predicted = runner.invoke(app, ["predict", str(artifact), *map(str, files), "--json",
                                    "--top-k", "4"])
    _ok(predicted)
    rows = json.loads(predicted.stdout)
    assert [Path(r["input"]) for r in rows] == files
    assert all(r["top_k"][0]["class"] in names for r in rows)

    # the same probabilities as the model that `epdo eval` scored, on the same files
    model, trained_spec = load_model(run)
    test = run_split(trained_spec, run / "checkpoint-best.pt", "test")
    assert test.files == [path for path, _ in record["test"]]
    with torch.no_grad():
        expected = torch.softmax(model(test.images.float() / 255), dim=1).numpy()
    served = np.array([r["logits"] for r in rows], dtype=np.float64)
    served = np.exp(served - served.max(1, keepdims=True))
    served /= served.sum(1, keepdims=True)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    top1 = [names.index(r["top_k"][0]["class"]) for r in rows]
    accuracy = np.mean(np.array(top1) == np.array([label for _, label in record["test"]]))
    assert abs(accuracy - report["accuracy"]) < 1e-9


def test_folder_resume_keeps_the_recorded_split(tmp_path: Path) -> None:
    data = tmp_path / "cells"
    _make_folder(data)
    spec = tmp_path / "folder_e2e.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "train": {**SPEC["train"], "epochs": 2}}))
    run = tmp_path / "run"
    _ok(runner.invoke(app, ["train", str(spec), "--dataset", f"folder:{data}", "--out",
                            str(run), "--device", "cpu", "--epochs", "1", "--input-size", "24",
                            "--channels", "1"]))
    before = json.loads((run / "data.json").read_text())
    assert before["input"] == {"channels": 1, "size": [24, 24], "fit": "resize"}
    # new files arrive in the folder: the resumed run still trains on the recorded ones
    extra = data / "bag" / "new.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(extra)
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    _ok(resumed)
    after = json.loads((run / "data.json").read_text())
    assert after["train"] == before["train"] and after["test"] == before["test"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    refused = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3",
                                  "--input-size", "32"])
    assert refused.exit_code == 2 and "--input-size cannot change a resumed run" in (
        refused.stderr)


def test_streamed_training_equals_training_in_memory(tmp_path: Path) -> None:
    """A memory budget smaller than the dataset streams the files through DataLoader
    workers; the run is the same, weight for weight."""
    from epdo.zoo.training import train

    data = tmp_path / "cells"
    _make_folder(data)
    spec = {**SPEC, "input": {**SPEC["input"], "size": 20}}
    kept = train(spec, dataset=f"folder:{data}", out=tmp_path / "kept", device="cpu")
    streamed = train(spec, dataset=f"folder:{data}", out=tmp_path / "streamed", device="cpu",
                     memory_budget="10K", workers=2)
    assert kept.summary["dataset"]["in_memory"] is True
    assert streamed.summary["dataset"]["in_memory"] is False
    a = read_checkpoint(kept.run_dir)["model"]
    b = read_checkpoint(streamed.run_dir)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert kept.final["test_acc"] == streamed.final["test_acc"]
