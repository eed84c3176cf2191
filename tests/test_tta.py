"""Rotation test-time augmentation: exact invariance of a plain CNN under four-fold TTA (and
flips), a segmentation's TTA map turning with its input, TTA in evaluation, and `epdo eval`
with --tta and several runs (tables, --json, one figure, one-line refusals)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import pytest
import torch
from cli_checks import cli, refused

from epdo.zoo import build_model, load_spec
from epdo.zoo.checkpoint import save_checkpoint
from epdo.zoo.comparison import comparison_labels, evaluate_runs, tta_settings
from epdo.zoo.eval_args import EvalError, parse_tta
from epdo.zoo.evaluation import EvalReport, evaluate
from epdo.zoo.tta import RotationTTA, tta_views

CNN = {
    "name": "tta_cnn",
    "group": "C1",
    "input": {"channels": 1, "size": 12, "mean": 0.2, "std": 0.3},
    "layers": [{"op": "conv", "channels": 6, "kernel": 5, "pool": 2},
               {"op": "conv", "channels": 6, "kernel": 3},
               {"op": "head", "classes": 4}],
    "train": {"dataset": "sample"},
}
SEG_CNN = {
    "name": "tta_seg_cnn",
    "group": "C1",
    "input": {"channels": 1, "size": 12},
    "layers": [{"op": "conv", "channels": 4, "kernel": 5},
               {"op": "conv", "channels": 4, "kernel": 3},
               {"op": "dense_head", "classes": 3}],
    "train": {"dataset": "seg-sample"},
}
CLASSES = ["a", "b", "c", "d"]


def random_model(spec: dict, seed: int = 0) -> torch.nn.Module:
    """The spec's model with random weights, in float64 and eval mode."""
    torch.manual_seed(seed)
    return build_model(load_spec(spec)).double().eval()


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@dataclass
class Data:
    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = "tests/test_tta.py"


def data(n: int = 24, seg: bool = False) -> Data:
    x = images(n, seed=2).float()
    if seg:
        return Data("tiny-seg", "test", x, (x[:, 0] * 3).long().clamp(max=2), CLASSES[:3])
    return Data("tiny", "test", x, torch.arange(n) % 4, list(CLASSES))


def test_views_and_settings() -> None:
    assert [(v.degrees, v.flip) for v in tta_views(4)] == [(0, 0), (90, 0), (180, 0), (270, 0)]
    assert len(tta_views(8, flip=True)) == 16 and tta_views(3)[1].degrees == 120.0
    assert RotationTTA(torch.nn.Identity(), 4, flip=True).exact
    assert not RotationTTA(torch.nn.Identity(), 8).exact
    with pytest.raises(ValueError, match="n >= 1"):
        tta_views(0)
    assert tta_settings(None) == [(1, False)]
    assert tta_settings([1, 4, 8, 4]) == [(1, False), (4, False), (8, False)]
    assert tta_settings([4], flip=True) == [(1, False), (4, True)]
    assert tta_settings(None, flip=True) == [(1, False), (1, True)]
    assert parse_tta("4") == [4] and parse_tta(" 1, 4,8,4") == [1, 4, 8]
    for bad, needle in (("0", "at least 1"), ("7", "divide 360"), ("-4", "at least 1"),
                        ("x", "whole number"), ("4,", "whole number"), ("2.5", "whole")):
        with pytest.raises(EvalError, match=needle) as err:
            parse_tta(bad)
        assert str(err.value).startswith(f"--tta {bad!r}")


def test_four_fold_tta_makes_a_plain_cnn_exactly_invariant() -> None:
    model, x = random_model(CNN), images()
    tta = RotationTTA(model, 4)
    with torch.no_grad():
        plain, averaged = model(x), tta(x)
        for k in (1, 2, 3):
            turned = torch.rot90(x, k, dims=(-2, -1))
            assert rel(tta(turned), averaged) < 1e-13  # float64 round-off
            assert rel(model(turned), plain) > 1e-3  # the CNN alone is not invariant
        # log of averaged probabilities: a distribution, with the mean of the softmaxes
        assert torch.allclose(averaged.exp().sum(1), torch.ones(3, dtype=torch.float64))
        views = [torch.softmax(model(torch.rot90(x, k, dims=(-2, -1))), 1) for k in range(4)]
        assert rel(averaged.exp(), torch.stack(views).mean(0)) < 1e-13
        assert averaged.dtype == torch.float64
        assert rel(RotationTTA(model, 1)(x), torch.log_softmax(plain, 1)) < 1e-13


def test_tta_with_flips_is_exactly_invariant_under_flips() -> None:
    model, x = random_model(CNN, seed=3), images()
    with torch.no_grad():
        both, rotations = RotationTTA(model, 4, flip=True), RotationTTA(model, 4)
        ref = both(x)
        for dims in ((-1,), (-2,)):
            mirrored = torch.flip(x, dims=dims)
            assert rel(both(mirrored), ref) < 1e-13
            assert rel(rotations(mirrored), rotations(x)) > 1e-4  # rotations alone: not
            assert rel(both(torch.rot90(mirrored, 1, dims=(-2, -1))), ref) < 1e-13


def test_segmentation_tta_map_turns_exactly_with_the_input() -> None:
    model, x = random_model(SEG_CNN), images()
    with torch.no_grad():
        for tta in (RotationTTA(model, 4), RotationTTA(model, 2, flip=True)):
            ref = tta(x)
            assert ref.shape == (3, 3, 12, 12)
            for k in ((1, 3) if tta.n == 4 else (2,)):
                turned = torch.rot90(x, k, dims=(-2, -1))
                assert rel(tta(turned), torch.rot90(ref, k, dims=(-2, -1))) < 1e-13
        assert rel(RotationTTA(model, 2, flip=True)(torch.flip(x, dims=(-1,))),
                   torch.flip(RotationTTA(model, 2, flip=True)(x), dims=(-1,))) < 1e-13
        plain = model(x)
        assert rel(model(torch.rot90(x, 1, dims=(-2, -1))),
                   torch.rot90(plain, 1, dims=(-2, -1))) > 1e-3
        # eight views resample the 45° ones; every pixel is still a distribution
        eight = RotationTTA(model, 8)(x)
        assert torch.allclose(eight.exp().sum(1), torch.ones(3, 12, 12, dtype=torch.float64))


def test_evaluation_with_tta_reports_views_speed_and_exact_quarter_turns() -> None:
    model, test = random_model(CNN).float(), data()
    alone = evaluate(model, test, angles=[0, 90, 180, 270, 45], batch_size=10)
    tta = evaluate(model, test, angles=[0, 90, 180, 270, 45], batch_size=10, tta=4)
    assert (alone.tta_views, tta.tta_views, tta.tta, tta.tta_flip) == (1, 4, 4, False)
    assert {a.accuracy for a in tta.angles[:4]} == {tta.accuracy}
    assert len({round(a.loss, 5) for a in tta.angles[:4]}) == 1
    for r in (alone, tta):
        assert r.images_per_second > 0 and r.seconds > 0
    out = tta.to_dict()
    assert (out["tta"], out["tta_flip"], out["tta_views"]) == (4, False, 4)
    assert out["images_per_second"] == tta.images_per_second
    assert EvalReport.from_dict(json.loads(json.dumps(out))) == tta
    seg = evaluate(random_model(SEG_CNN).float(), data(seg=True), angles=[0, 90, 270], tta=4,
                   tta_flip=True)
    assert seg.tta_views == 8 and {a.score for a in seg.angles} == {seg.mean_iou}
    wide = Data("wide", "test", torch.rand(4, 1, 12, 10), torch.arange(4), list(CLASSES))
    with pytest.raises(EvalError, match="12x10"):
        evaluate(model, wide, tta=4)
    with pytest.raises(EvalError, match="at least 1"):
        evaluate(model, test, tta=0)


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Run folders of the tiny CNN (two seeds) and of the segmentation CNN; datasets are
    the tiny sets."""
    monkeypatch.setattr("epdo.zoo.evaluation.load_dataset",
                        lambda name, split, data_dir=None, seed=0: data())
    out = {}
    for name, spec, seed in (("a", CNN, 0), ("b", CNN, 1), ("seg", SEG_CNN, 0)):
        model = random_model(spec, seed).float()
        save_checkpoint(tmp_path / name / "checkpoint-best.pt", model=model,
                        spec=load_spec(spec), epoch=2)
        out[name] = tmp_path / name
    return out


def test_evaluate_runs_and_labels(runs: dict[str, Path]) -> None:
    reports = evaluate_runs([runs["a"], runs["b"]], tta=[4], angles=[0, 90], device="cpu")
    assert [(r.tta, r.checkpoint.split("/")[-2]) for r in reports] == [
        (1, "a"), (4, "a"), (1, "b"), (4, "b")]
    assert comparison_labels(reports) == [
        "tta_cnn (a), no TTA", "tta_cnn (a), TTA x4",
        "tta_cnn (b), no TTA", "tta_cnn (b), TTA x4"]
    assert comparison_labels(reports[:1]) == ["tta_cnn"]


def test_cli_tta_json_lists_the_model_alone_and_with_tta(runs: dict[str, Path]) -> None:
    result = cli("eval", runs["a"], "--tta", "4", "--tta-flip", "--angles", "0,90", "--json",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert [(r["tta"], r["tta_flip"], r["tta_views"]) for r in reports] == [
        (1, False, 1), (4, True, 8)]
    assert all(r["images_per_second"] > 0 for r in reports)
    assert reports[1]["angles"][0]["accuracy"] == reports[1]["angles"][1]["accuracy"]
    single = json.loads(cli("eval", runs["a"], "--json", "--device", "cpu").stdout)
    assert single["tta_views"] == 1 and single["images_per_second"] > 0


def test_cli_compares_runs_in_one_table_and_one_figure(runs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    png = tmp_path / "cmp.png"
    result = cli("eval", runs["a"], runs["b"], "--angles", "0:360:90", "--tta", "1,4",
                 "--plot", png, "--device", "cpu")
    assert result.exit_code == 0, result.output
    for text in ("TTA x4", "images/s", "x4", "270°", "plot written to"):
        assert text in result.stdout, text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[1] > 600
    listed = json.loads(cli("eval", runs["a"], runs["b"], "--json", "--device", "cpu").stdout)
    assert [r["model"] for r in listed] == ["tta_cnn", "tta_cnn"]


def test_cli_refuses_bad_tta_and_comparisons_in_one_line(runs: dict[str, Path],
                                                         tmp_path: Path) -> None:
    a = runs["a"]
    refused(cli("eval", a, "--tta", "0"), 2, "--tta '0'", "at least 1")
    refused(cli("eval", a, "--tta", "7"), 2, "divide 360")
    refused(cli("eval", a, "--tta", "four"), 2, "whole number")
    refused(cli("eval", a, tmp_path / "nowhere"), 2, "nowhere")
    refused(cli("eval", a, runs["seg"]), 2, "cannot compare", "tta_seg_cnn")
    refused(cli("eval", a, a / "checkpoint-best.pt"), 2, "same checkpoint")
    refused(cli("eval", a, "--tta", "4", "--plot", tmp_path / "x.png"), 2, "--angles")
    assert not (tmp_path / "x.png").exists()
