"""Training runs end to end on a tiny spec and a tiny dataset: the run directory, exact
resume, checkpoints, Ctrl-C, non-finite losses, the CLI and a 2-process torchrun run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo import CheckpointError, load_model, load_spec
from epdo.zoo.checkpoint import BEST, LAST, read_checkpoint
from epdo.zoo.training import (
    EPOCH_KEYS,
    Engine,
    NonFiniteLossError,
    TrainError,
    TrainingInterrupted,
    evaluate_model,
    train,
)

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 12, "mean": 0.1, "std": 0.3},
    "layers": [
        {"op": "pdo_conv", "fields": 2, "order": 2},
        {"op": "neural_epdo", "fields": 2, "g": 2, "order": 2, "dropout": 0.2},
        {"op": "head", "classes": 3, "hidden": [6], "dropout": 0.1},
    ],
    "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "weight_decay": 1e-4,
              "augment": {"rotate": True, "flip": True, "crop_padding": 1}},
}


@dataclass
class TinySet:
    """Stand-in with the ``ImageDataset`` attributes training reads."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str = "tiny-shapes"
    split: str = "train"
    classes: list[str] = field(default_factory=lambda: ["bar", "ring", "cross"])
    source: str = "generated in tests"


def shapes(n: int, seed: int) -> TinySet:
    """12x12 images of three shapes (a bar, a ring, a cross) with noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = torch.zeros(n, 1, 12, 12)
    x[labels == 0, 0, 3:9, 5:7] = 1.0
    x[labels == 1, 0, 3:9, 3:9] = 1.0
    x[labels == 1, 0, 4:8, 4:8] = 0.0
    x[labels == 2, 0, 5:7, 3:9] = 1.0
    x[labels == 2, 0, 3:9, 5:7] = 1.0
    x = (x + 0.15 * torch.rand(x.shape, generator=g)).clamp(0.0, 1.0)
    return TinySet(x, labels)


DATA = (shapes(80, 0), shapes(40, 1))


def run_tiny(out: Path, **kwargs) -> object:
    return train(kwargs.pop("spec", TINY), out=out, data=DATA, **kwargs)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def fake_loader(monkeypatch: pytest.MonkeyPatch):
    """``load_dataset`` returning the tiny sets (for the CLI)."""

    def load(name: str, split: str, data_dir=None, seed: int = 0):
        return DATA[0] if split == "train" else DATA[1]

    import epdo.zoo.data

    monkeypatch.setattr(epdo.zoo.data, "load_dataset", load, raising=False)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory):
    """A 2-epoch run in one go (the reference for resume tests)."""
    out = tmp_path_factory.mktemp("straight")
    return run_tiny(out)


# --------------------------------------------------------------------------- run directory


def test_run_lowers_the_loss_and_writes_the_run_directory(tmp_path: Path) -> None:
    spec = {**TINY, "train": {**TINY["train"], "lr_milestones": {1: 5e-3, 2: 1e-3}}}
    result = run_tiny(tmp_path, spec=spec, epochs=3)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"spec.yaml", "metrics.jsonl", LAST, BEST, "summary.json"}

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [tuple(r) for r in records] == [EPOCH_KEYS] * 3
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == [1e-2, 5e-3, 1e-3]  # milestones at epochs 1 and 2
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert all(r["images_per_s"] > 0 and 0 <= r["test_acc"] <= 1 for r in records)

    saved = load_spec(yaml.safe_load((tmp_path / "spec.yaml").read_text()))
    assert saved.train.epochs == 3 and saved.train.lr_milestones == {1: 5e-3, 2: 1e-3}

    summary = json.loads((tmp_path / "summary.json").read_text())
    best = max(records, key=lambda r: r["test_acc"])
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    assert summary["best_test_acc"] == best["test_acc"] == result.best_test_acc
    assert summary["final"] == records[-1] and summary["parameters"] > 0
    assert summary["dataset"]["train_images"] == 80 and summary["device"].startswith("cpu")

    last = torch.load(tmp_path / LAST, weights_only=True)
    assert last["epoch"] == 3 and last["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert "torch" in last["rng"] and last["extra"]["best"]["epoch"] == best["epoch"]


def test_load_model_reproduces_the_logged_test_accuracy(straight) -> None:
    model, spec = load_model(straight.run_dir)
    assert not model.training and spec.name == "tiny"
    best = read_checkpoint(straight.run_dir / BEST)
    record = best["metrics"]
    assert record["epoch"] == straight.best_epoch
    scores = evaluate_model(model, DATA[1].images, DATA[1].labels)
    assert scores.accuracy == record["test_acc"]
    assert scores.loss == pytest.approx(record["test_loss"], rel=1e-6)


# --------------------------------------------------------------------------- exact resume


def test_resume_continues_exactly(straight, tmp_path: Path) -> None:
    first = run_tiny(tmp_path, epochs=1)
    assert first.epochs == 1
    resumed = train(resume=tmp_path, epochs=2, data=DATA)
    a = torch.load(straight.run_dir / LAST, weights_only=True)
    b = torch.load(tmp_path / LAST, weights_only=True)
    assert state_equal(a["model"], b["model"])
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    drop = ("seconds", "images_per_s")

    def same(records):
        return [{k: v for k, v in r.items() if k not in drop} for r in records]

    assert same(resumed.history) == same(straight.history)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_saves_and_resumes_mid_epoch(straight, tmp_path: Path, monkeypatch) -> None:
    real_step = Engine.step
    calls = {"n": 0}

    def step(self, x, y):
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 2 (5 steps per epoch), its second step
            raise KeyboardInterrupt
        return real_step(self, x, y)

    monkeypatch.setattr(Engine, "step", step)
    with pytest.raises(TrainingInterrupted) as info:
        run_tiny(tmp_path)
    assert (info.value.epoch, info.value.step) == (1, 1)
    saved = read_checkpoint(tmp_path / LAST)
    assert saved["epoch"] == 1 and saved["extra"]["interrupted"] and saved["extra"]["step"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"

    monkeypatch.setattr(Engine, "step", real_step)
    train(resume=tmp_path, data=DATA)
    a = torch.load(straight.run_dir / LAST, weights_only=True)
    b = torch.load(tmp_path / LAST, weights_only=True)
    assert state_equal(a["model"], b["model"])


def test_cli_ctrl_c_exits_130_with_resume_hint(tmp_path, monkeypatch, fake_loader) -> None:
    def step(self, x, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "step", step)
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(app, ["train", str(spec_file), "--out", str(tmp_path / "r")])
    assert result.exit_code == 130
    assert "resume with: epdo train --resume" in result.stderr
    assert read_checkpoint(tmp_path / "r" / LAST)["extra"]["interrupted"]


# --------------------------------------------------------------------------- failures


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    real_step = Engine.step
    calls = {"n": 0}

    def step(self, x, y):
        loss, correct, counted = real_step(self, x, y)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 8 else loss), correct, counted

    monkeypatch.setattr(Engine, "step", step)
    run_tiny(tmp_path, epochs=1)
    before = (tmp_path / LAST).read_bytes()
    with pytest.raises(NonFiniteLossError) as info:
        train(resume=tmp_path, epochs=3, data=DATA)
    err = info.value
    assert (err.epoch, err.step) == (2, 3) and "--lr" in str(err)
    assert err.checkpoint == tmp_path / LAST and (tmp_path / LAST).read_bytes() == before
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert "non-finite" in json.loads((tmp_path / "summary.json").read_text())["status"]


def test_cli_huge_learning_rate_exits_1(tmp_path, fake_loader) -> None:
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(app, ["train", str(spec_file), "--lr", "1e30", "--epochs", "3",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    assert "non-finite training loss at epoch" in result.stderr and "--lr" in result.stderr


def test_truncated_checkpoint_is_a_clear_error(straight, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    data = (straight.run_dir / LAST).read_bytes()
    (run / LAST).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(run / LAST)):
        read_checkpoint(run / LAST)
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(run / LAST) in lines[0] and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such run directory" in missing.stderr


def test_fresh_run_refuses_a_used_directory_and_bad_inputs(straight, tmp_path) -> None:
    with pytest.raises(TrainError, match="already holds a run"):
        run_tiny(straight.run_dir)
    with pytest.raises(TrainError, match="expects 1x28x28"):
        train({**TINY, "input": {"channels": 1, "size": 28}}, out=tmp_path, data=DATA)
    with pytest.raises(TrainError, match="--lr .* differs"):
        train(resume=straight.run_dir, lr=0.5, data=DATA)


def test_cli_train_prints_run_dir_and_accuracy(tmp_path, fake_loader) -> None:
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["train", str(spec_file), "--epochs", "1", "--seed", "3",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"run directory: {out}" in result.stdout
    assert "epoch 1/1" in result.stdout and "final test accuracy:" in result.stdout
    assert load_spec(yaml.safe_load((out / "spec.yaml").read_text())).train.seed == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cli_cuda_without_cuda_is_one_line(tmp_path, fake_loader) -> None:
    result = CliRunner().invoke(app, ["train", "quickstart", "--device", "cuda",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "CUDA" in result.stderr


def test_cli_missing_data_is_the_data_error_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "quickstart", "--dataset", "mnist-rot",
                                      "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and str(tmp_path) in result.stderr


# --------------------------------------------------------------------------- torchrun

LAUNCHED = """\
import sys
import torch
import epdo.zoo.data
from epdo.cli.main import app

images, labels = torch.load(sys.argv[1], weights_only=True)

class Split:
    def __init__(self, x, y):
        self.images, self.labels, self.name = x, y, "tiny-shapes"
        self.classes, self.source = ["bar", "ring", "cross"], "test"

def load_dataset(name, split, data_dir=None, seed=0):
    return Split(images[:80], labels[:80]) if split == "train" else Split(images[80:], labels[80:])

epdo.zoo.data.load_dataset = load_dataset
app(sys.argv[2:])
"""


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    torch.save((torch.cat([DATA[0].images, DATA[1].images]),
                torch.cat([DATA[0].labels, DATA[1].labels])), tmp_path / "data.pt")
    (tmp_path / "launched.py").write_text(LAUNCHED)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", str(tmp_path / "launched.py"), str(tmp_path / "data.pt"),
           "train", str(tmp_path / "tiny.yaml"), "--epochs", "1", "--device", "cpu",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert done.returncode == 0, textwrap.shorten(done.stdout + done.stderr, 3000)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    assert done.stdout.count("final test accuracy:") == 1  # rank 0 alone prints
    assert read_checkpoint(out / LAST)["epoch"] == 1


# --------------------------------------------------------------------------- more paths


def test_worker_processes_give_the_same_run(straight, tmp_path: Path) -> None:
    run_tiny(tmp_path, workers=1)
    a = torch.load(straight.run_dir / LAST, weights_only=True)
    b = torch.load(tmp_path / LAST, weights_only=True)
    assert state_equal(a["model"], b["model"])


def test_progress_lines_only_off_a_terminal(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from epdo.zoo.training import RichProgress

    plain = StringIO()
    run_tiny(tmp_path / "a", progress=RichProgress(Console(file=plain, width=200)))
    lines = plain.getvalue().splitlines()
    assert lines[0] == f"run directory: {tmp_path / 'a'}"
    assert [line.split()[:2] for line in lines[2:]] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert all("img/s" in line and "test loss" in line for line in lines[2:])
    bars = StringIO()
    console = Console(file=bars, force_terminal=True, width=200)
    run_tiny(tmp_path / "b", progress=RichProgress(console))
    assert "epoch 2/2" in bars.getvalue()


def test_real_sample_data_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pytest.importorskip("epdo.zoo.data")
    real = data.load_dataset

    def few(name, split, data_dir=None, seed=0):  # the real loader, fewer images
        ds = real(name, split, data_dir)
        ds.images, ds.labels = ds.images[:192], ds.labels[:192]
        return ds

    monkeypatch.setattr(data, "load_dataset", few)
    spec = {**TINY, "input": {"channels": 1, "size": 28},
            "layers": [{"op": "pdo_conv", "fields": 2, "order": 2, "pool": 2},
                       {"op": "neural_epdo", "fields": 2, "g": 2, "order": 2, "pool": 2},
                       {"op": "head", "classes": 10}],
            "train": {**TINY["train"], "dataset": "sample", "epochs": 1, "batch_size": 64}}
    result = train(spec, out=tmp_path)
    assert result.summary["dataset"]["name"] == "sample" and result.final["epoch"] == 1
