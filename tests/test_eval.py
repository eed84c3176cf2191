"""Evaluation: metrics, rotated accuracy, `epdo eval` (table, --json, --plot, errors)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo import build_model, load_spec
from epdo.zoo.checkpoint import save_checkpoint
from epdo.zoo.evaluation import EvalError, EvalReport, evaluate, evaluate_checkpoint, parse_angles
from epdo.zoo.plotting import plot_angle_curves, plot_report

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["dot", "ring", "horizontal", "vertical"]

C4_SPEC = {
    "name": "tiny_c4",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 12, "mean": 0.1, "std": 0.3},
    "layers": [{"op": "pdo_conv", "fields": 4, "order": 2}, {"op": "head", "classes": 4}],
    "train": {"dataset": "sample", "data_dir": "/spec/data"},
}
CNN_SPEC = {
    "name": "tiny_cnn",
    "group": "C1",
    "input": {"channels": 1, "size": 12, "mean": 0.1, "std": 0.3},
    "layers": [{"op": "conv", "channels": 8, "kernel": 5}, {"op": "head", "classes": 4}],
    "train": {"dataset": "sample"},
}


@dataclass
class TinyDataset:
    """What evaluate() reads of an epdo.zoo.data.ImageDataset."""

    name: str
    split: str
    images: torch.Tensor  # (N, 1, 12, 12) in [0, 1]
    labels: torch.Tensor  # (N,)
    classes: list[str]
    source: str = "generated in tests/test_eval.py"


def tiny_dataset(n: int = 64, seed: int = 0, split: str = "test") -> TinyDataset:
    """Upright shapes at random places: a dot, a ring, a horizontal or a vertical bar."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 12, 12, generator=gen) * 0.1
    labels = torch.arange(n) % 4
    for i in range(n):
        r, c = (int(v) for v in torch.randint(3, 8, (2,), generator=gen))
        img = images[i, 0]
        if labels[i] == 0:
            img[r : r + 2, c : c + 2] = 1.0
        elif labels[i] == 1:
            img[r - 1 : r + 3, c - 1 : c + 3] = 1.0
            img[r : r + 2, c : c + 2] = 0.0
        elif labels[i] == 2:
            img[r, 1:11] = 1.0
        else:
            img[1:11, c] = 1.0
    return TinyDataset("tiny", split, images, labels, list(CLASSES))


def trained(spec_dict: dict, steps: int = 60):
    """A model of ``spec_dict`` fitted for a few full-batch Adam steps on upright images."""
    torch.manual_seed(0)
    spec = load_spec(spec_dict)
    model = build_model(spec)
    data = tiny_dataset(seed=1, split="train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):  # raw images: the model normalises them by the spec's mean, std
        opt.zero_grad()
        F.cross_entropy(model(data.images), data.labels).backward()
        opt.step()
    return model.eval(), spec


@pytest.fixture(scope="module")
def c4_model():
    return trained(C4_SPEC)


@pytest.fixture(scope="module")
def cnn_model():
    return trained(CNN_SPEC)


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """The (name, split, data_dir) of every load_dataset call; the data is the tiny set."""
    seen: list[tuple] = []

    def fake_load_dataset(name, split, data_dir=None, seed=0):
        seen.append((name, split, data_dir))
        return tiny_dataset()

    monkeypatch.setattr("epdo.zoo.evaluation.load_dataset", fake_load_dataset)
    return seen


@pytest.fixture
def run_dir(tmp_path, c4_model, calls):
    """A run directory holding the C4 model's best checkpoint."""
    model, spec = c4_model
    save_checkpoint(tmp_path / "run" / "checkpoint-best.pt", model=model, spec=spec, epoch=3)
    return tmp_path / "run"


def test_parse_angles() -> None:
    assert parse_angles("0:360:90") == [0, 90, 180, 270]
    assert parse_angles("0:360:15") == [15.0 * i for i in range(24)]
    assert parse_angles("0,90, 180") == [0, 90, 180]
    assert parse_angles("0:90:30,180,0") == [0, 30, 60, 180]
    assert parse_angles("0:360:22.5")[-1] == 337.5
    for bad in ["", "0:360", "a,b", "0:360:0", "10:0:5", "0,,90", "1:2:3:4", "inf"]:
        with pytest.raises(ValueError) as err:
            parse_angles(bad)
        assert "\n" not in str(err.value) and repr(bad) in str(err.value)


def test_metrics_are_consistent(c4_model) -> None:
    model, spec = c4_model
    data = tiny_dataset()
    report = evaluate(model, data, batch_size=10)
    conf = torch.tensor(report.confusion)
    assert conf.shape == (4, 4) and int(conf.sum()) == report.num_images == 64
    assert report.accuracy == int(conf.trace()) / 64 == report.correct / 64
    assert conf.sum(dim=1).tolist() == [16, 16, 16, 16]  # rows are the true labels
    assert report.per_class_accuracy == [int(conf[i, i]) / 16 for i in range(4)]
    with torch.no_grad():
        logits = model(data.images)  # raw images: the model normalises them itself
    assert report.loss == pytest.approx(F.cross_entropy(logits, data.labels).item(), rel=1e-5)
    assert report.accuracy == (logits.argmax(1) == data.labels).float().mean().item()
    assert report.accuracy > 0.25 and report.angles == [] and report.model == "tiny_c4"
    # the batch size does not change the result, and to_dict round-trips through JSON
    again = evaluate(model, data, batch_size=64)
    assert again.confusion == report.confusion
    assert EvalReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_c4_model_is_exactly_invariant_and_cnn_is_not(c4_model, cnn_model) -> None:
    data = tiny_dataset()
    angles = parse_angles("0:360:45")
    reports = {}
    for label, (model, _) in (("c4", c4_model), ("cnn", cnn_model)):
        reports[label] = evaluate(model, data, angles=angles)
    c4, cnn = reports["c4"], reports["cnn"]
    assert [a.degrees for a in c4.angles] == angles
    assert c4.angle_accuracy(0) == c4.accuracy
    for degrees in (90, 180, 270):
        assert c4.angle_accuracy(degrees) == c4.accuracy  # exactly, not approximately
        assert [a.loss for a in c4.angles if a.degrees == degrees][0] == pytest.approx(
            c4.loss, rel=1e-4)
    # the CNN learnt "horizontal" vs "vertical": a quarter turn swaps them
    assert cnn.accuracy > 0.9
    assert cnn.angle_accuracy(90) < cnn.accuracy - 0.2
    assert cnn.angle_accuracy(270) < cnn.accuracy - 0.2


def test_evaluate_rejects_data_that_does_not_fit(c4_model) -> None:
    model, _ = c4_model
    data = tiny_dataset()
    small = TinyDataset("small", "test", data.images[:, :, :10, :10], data.labels, CLASSES)
    with pytest.raises(EvalError, match="1x10x10"):
        evaluate(model, small)
    three = TinyDataset("three", "test", data.images, data.labels % 3, CLASSES[:3])
    with pytest.raises(EvalError, match="3 classes"):
        evaluate(model, three)


def test_evaluate_checkpoint_uses_the_spec(run_dir, calls) -> None:
    report = evaluate_checkpoint(run_dir, angles=[0, 90], device="cpu")
    assert calls == [("sample", "test", "/spec/data")]
    assert report.checkpoint.endswith("checkpoint-best.pt") and report.epoch == 3
    assert report.angles[1].accuracy == report.accuracy
    evaluate_checkpoint(run_dir / "checkpoint-best.pt", dataset="idx", device="cpu")
    evaluate_checkpoint(run_dir, data_dir="/elsewhere", device="cpu")
    assert calls[1:] == [("idx", "test", None), ("sample", "test", "/elsewhere")]


def test_cli_json_with_angles(run_dir, tmp_path) -> None:
    result = runner.invoke(app, ["eval", str(run_dir), "--angles", "0:360:90", "--json",
                                 "--device", "cpu", "--batch-size", "16",
                                 "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the plot's message goes to stderr
    assert "p.png" in result.stderr
    for key in ("model", "dataset", "split", "classes", "num_images", "loss", "accuracy",
                "error", "correct", "confusion", "per_class_accuracy", "angles", "checkpoint",
                "epoch", "device", "source", "angle_accuracy_min", "angle_accuracy_mean"):
        assert key in report, key
    assert report["model"] == "tiny_c4" and report["classes"] == CLASSES
    assert report["num_images"] == 64 == sum(map(sum, report["confusion"]))
    assert [a["degrees"] for a in report["angles"]] == [0, 90, 180, 270]
    assert set(report["angles"][0]) == {"degrees", "accuracy", "loss", "correct"}
    assert {a["accuracy"] for a in report["angles"]} == {report["accuracy"]}


def test_cli_table_and_plot(run_dir, tmp_path) -> None:
    png = tmp_path / "figs" / "eval.png"
    result = runner.invoke(app, ["eval", str(run_dir), "--angles", "0:360:30", "--plot",
                                 str(png), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for text in ("accuracy", "confusion matrix", "horizontal", "270°", "plot written to"):
        assert text in result.stdout, text
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 800
    assert [p.name for p in png.parent.iterdir()] == ["eval.png"]  # no temporary file left


def test_plot_angle_curves(c4_model, cnn_model, tmp_path) -> None:
    data = tiny_dataset()
    reports = {
        label: evaluate(m, data, angles=[0, 45, 90, 135])
        for label, (m, _) in (("Neural ePDO", c4_model), ("CNN", cnn_model))
    }
    path = plot_angle_curves(reports, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(path).shape[1] > 500
    plot_report(reports["CNN"], tmp_path / "no-angles.png")  # angles are optional here
    without = evaluate(c4_model[0], data)
    assert plot_report(without, tmp_path / "plain.png").read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="without angles"):
        plot_angle_curves({"plain": without}, tmp_path / "x.png")


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_cli_errors_are_one_line(run_dir, tmp_path) -> None:
    good = (run_dir / "checkpoint-best.pt").read_bytes()
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(b"not a checkpoint at all" * 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    for path in (corrupted, truncated):
        line = one_line_error(runner.invoke(app, ["eval", str(path)]))
        assert path.name in line and "checkpoint" in line
    line = one_line_error(runner.invoke(app, ["eval", str(tmp_path / "missing.pt")]))
    assert "missing.pt" in line
    line = one_line_error(runner.invoke(app, ["eval", str(run_dir), "--angles", "0:360"]))
    assert "start:stop:step" in line
    line = one_line_error(runner.invoke(app, ["eval", str(run_dir), "--device", "tpu"]))
    assert "tpu" in line
