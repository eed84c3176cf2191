"""Segmentation training and evaluation: the objective (ignored pixels, class weights), the
scores read from the per-pixel confusion matrix, and a tiny U-Net trained on a real
``seg:`` folder through the command line, evaluated (mIoU, the angle sweep) and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from cli_checks import cli, refused
from PIL import Image

from epdo.zoo.segmentation_metrics import IGNORE, SegScores, confusion_matrix
from epdo.zoo.training.objective import Objective

CLASSES = ["background", "disk", "square"]

SPEC = {
    "name": "seg_e2e",
    "group": "C4",
    "input": {"channels": 1, "size": 16},
    "defaults": {"order": 2},
    "layers": [
        {"op": "pdo_conv", "fields": 2, "name": "e1"},
        {"op": "pool", "size": 2},
        {"op": "pdo_conv", "fields": 3},
        {"op": "upsample", "mode": "bilinear"},
        {"op": "skip", "from": "e1"},
        {"op": "pdo_conv", "fields": 2},
        {"op": "dense_head", "classes": 3},
    ],
    "train": {"dataset": "seg", "epochs": 2, "batch_size": 8, "lr": 1e-2,
              "augment": {"rotate": True}},
}


def make_seg_folder(root: Path, n: int = 24, size: int = 16, seed: int = 0) -> Path:
    """``n`` grayscale PNGs with a bright disk or square on black, their masks (class index
    per pixel, the outline's ring 255) and classes.txt."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    ys, xs = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(5, size - 5, 2)
        r = rng.integers(3, 5)
        if i % 2:
            inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r
            label = 1
        else:
            inside = (abs(ys - cy) <= r - 1) & (abs(xs - cx) <= r - 1)
            label = 2
        image = np.where(inside, 200, 10).astype(np.uint8)
        mask = np.where(inside, label, 0).astype(np.uint8)
        mask[0, :] = IGNORE  # an unlabelled row
        Image.fromarray(image, mode="L").save(root / "images" / f"s{i:02d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"s{i:02d}.png")
    return root


# --------------------------------------------------------------------------- scores


def test_scores_from_a_confusion_matrix() -> None:
    # rows true, columns predicted; class 2 neither present nor predicted
    scores = SegScores.of(torch.tensor([[6, 2, 0], [1, 3, 0], [0, 0, 0]]))
    assert scores.pixels == 12 and scores.pixel_accuracy == pytest.approx(9 / 12)
    assert scores.iou[:2] == pytest.approx([6 / 9, 3 / 6]) and scores.iou[2] is None
    assert scores.dice[:2] == pytest.approx([12 / 15, 6 / 9]) and scores.dice[2] is None
    assert scores.mean_iou == pytest.approx((6 / 9 + 3 / 6) / 2)
    out = scores.to_dict(["a", "b", "c"])
    assert out["iou"]["c"] is None and out["confusion"][0] == [6, 2, 0]


def test_the_confusion_leaves_ignored_pixels_out() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 1.0  # predicts class 1 everywhere
    target = torch.tensor([[[1, 0], [IGNORE, 2]]])
    assert confusion_matrix(logits, target, 3).tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_ignored_pixels_carry_no_loss_and_class_weights_weigh_the_mean() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    target[0, 0] = IGNORE
    per_pixel = F.cross_entropy(logits, target.clamp(max=2), reduction="none")
    keep = target != IGNORE
    plain = Objective("segment", 3)
    assert float(plain.loss(logits, target)) == pytest.approx(float(per_pixel[keep].mean()))
    w = torch.tensor([1.0, 2.0, 0.5])
    weighted = Objective("segment", 3, [1.0, 2.0, 0.5])
    wt = w[target.clamp(max=2)][keep]
    expected = float((per_pixel[keep] * wt).sum() / wt.sum())
    assert float(weighted.loss(logits, target)) == pytest.approx(expected)
    assert float(weighted.weight_sum(target)) == pytest.approx(float(wt.sum()))
    correct, counted = plain.counts(logits, target)
    assert int(counted) == int(keep.sum())
    assert int(correct) == int(((logits.argmax(1) == target) & keep).sum())


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("seg")
    folder = make_seg_folder(root / "data")
    spec = root / "seg_e2e.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    run = root / "run"
    result = cli("train", spec, "--dataset", f"seg:{folder}", "--out", run, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return spec, folder, run


def test_training_logs_miou_and_records_the_pairs(trained) -> None:
    _, folder, run = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(0.0 <= r["test_miou"] <= 1.0 for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "segment" and summary["dataset"]["classes"] == CLASSES
    best = max(records, key=lambda r: r["test_miou"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_test_miou"] == best["test_miou"]
    data = json.loads((run / "data.json").read_text())
    assert data["task"] == "segment" and len(data["train"]) + len(data["test"]) == 24


def test_eval_gives_miou_and_an_exact_quarter_turn_sweep(trained) -> None:
    _, _, run = trained
    result = cli("eval", run, "--json", "--angles", "0,90,180,45", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"] == "segment" and report["classes"] == CLASSES
    best = json.loads((run / "summary.json").read_text())["best_test_miou"]
    assert report["mean_iou"] == pytest.approx(best)
    assert sum(map(sum, report["confusion"])) == report["pixels"]
    assert report["pixels"] == 15 * 16 * 5  # the test split's labelled pixels (row 0 ignored)
    assert len(report["iou"]) == len(report["dice"]) == len(CLASSES)  # in class order
    by_angle = {a["degrees"]: a for a in report["angles"]}
    # a C4 network and its masks turn together: the same confusion, the same mIoU
    for quarter in (90, 180):
        assert by_angle[quarter]["mean_iou"] == pytest.approx(report["mean_iou"], abs=1e-12)
        assert by_angle[quarter]["correct"] == by_angle[0]["correct"]
    assert by_angle[45]["mean_iou"] is not None
    table = cli("eval", run, "--angles", "0,90", "--device", "cpu")
    assert "mIoU" in table.stdout and "Dice" in table.stdout and "disk" in table.stdout


def test_resume_reads_the_recorded_pairs(trained, tmp_path: Path) -> None:
    spec, folder, _ = trained
    run = tmp_path / "run"
    first = cli("train", spec, "--dataset", f"seg:{folder}", "--out", run, "--epochs", "1",
                "--device", "cpu")
    assert first.exit_code == 0, first.output
    before = json.loads((run / "data.json").read_text())
    (folder / "images" / "s00.png").rename(folder / "images" / "zz.png")  # the folder changed
    try:
        result = cli("train", "--resume", run, "--epochs", "2", "--device", "cpu")
        assert result.exit_code != 0 and "s00.png" in result.stderr  # its recorded pair is gone
    finally:
        (folder / "images" / "zz.png").rename(folder / "images" / "s00.png")
    result = cli("train", "--resume", run, "--epochs", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "data.json").read_text())["train"] == before["train"]


def test_a_segmentation_spec_on_image_labels_is_refused(trained, tmp_path: Path) -> None:
    spec, _, _ = trained
    result = cli("train", spec, "--dataset", "sample", "--out", tmp_path / "r",
                 "--device", "cpu")
    refused(result, 2, "dense_head", "seg-sample or seg:PATH")


def test_class_weights_must_match_the_classes(trained, tmp_path: Path) -> None:
    _, folder, _ = trained
    spec = {**SPEC, "train": {**SPEC["train"], "class_weights": [1.0, 2.0]}}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = cli("train", path, "--dataset", f"seg:{folder}", "--out", tmp_path / "r",
                 "--device", "cpu")
    refused(result, 2, "class_weights", "2 weights", "3 classes")


def test_export_and_predict_write_the_checkpoint_models_masks(trained, tmp_path: Path) -> None:
    from epdo.zoo.checkpoint import load_model

    _, folder, run = trained
    artifact = tmp_path / "seg.onnx"
    result = cli("export", run, "--format", "onnx", "--output", artifact)
    assert result.exit_code == 0, result.output
    images = sorted((folder / "images").glob("*.png"))[:6]
    out = tmp_path / "masks"
    result = cli("predict", artifact, *images, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    model, _ = load_model(run)
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255.0)
                     for p in images])[:, None]
    with torch.no_grad():
        expected = model(x).argmax(1).numpy()
    for image, want in zip(images, expected, strict=True):
        mask = Image.open(out / f"{image.stem}.png")
        assert mask.mode == "P" and mask.size == (16, 16)
        np.testing.assert_array_equal(np.asarray(mask), want)
