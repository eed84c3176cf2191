"""The per-layer equivariance report (zoo/layer_equivariance.py) and `epdo check SPEC|RUN`:
float64 round-off at every layer of shipped equivariant specs, clearly non-zero for a CNN,
the first break pointed out with the plan's reason, the warning once (check and train),
and a trained run's checkpoint checked with its own statistics."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo import load_spec
from epdo.zoo.checkpoint import BEST
from epdo.zoo.equivariance import calibrated_model, smooth_images
from epdo.zoo.layer_equivariance import LayerReport, columns_for, layer_report
from epdo.zoo.training import train

runner = CliRunner()
TOL = 1e-9


def layers_of(spec: str | dict, angles: tuple[float, ...] = ()) -> LayerReport:
    """The per-layer report of a spec (random weights, BatchNorm calibrated on 4 smooth
    images) on 2 others, in float64."""
    model, _ = calibrated_model(spec, seed=0, calibration=4)
    c, h, w = model.input_shape
    return layer_report(model, smooth_images(2, c, h, w, seed=2), angles)


report_of = functools.cache(layers_of)
"""The same for a shipped spec's name, computed once per test session."""


@pytest.mark.parametrize("name", ["seg_regular_gauss", "mnist_d16c16_gauss", "quickstart"])
def test_shipped_specs_are_exact_at_every_layer(name: str) -> None:
    report = report_of(name)
    assert report.measured_break is None and report.predicted is None
    assert report.verdict().startswith("every layer is exact under quarter turns")
    for row in report.rows:
        symmetric = [e for e, s in zip(row.errors, row.symmetric, strict=True) if s]
        assert len(symmetric) >= 3, row  # the three quarter turns at least
        assert max(symmetric) < TOL, (name, row.label, symmetric)
    assert len(report.rows) == len(load_spec(name).plan.layers)


def test_flips_stop_acting_after_the_restriction() -> None:
    report = report_of("mnist_d16c16_gauss")
    names = [c.name for c in report.columns]
    assert names == ["90°", "180°", "270°", "flip", "90°∘flip", "180°∘flip", "270°∘flip"]
    restrict = report.restricted
    assert report.rows[restrict].op == "restrict" and report.rows[restrict].group == "C16"
    flip = names.index("flip")
    assert report.rows[restrict - 1].errors[flip] < TOL
    assert report.rows[restrict].errors[flip] is None  # C16 fields: the flip does not act
    head = report.rows[-1]  # logits: measured, but the flip is no longer a symmetry
    assert head.errors[flip] > 1e-2 and not head.symmetric[flip]


def test_plain_cnn_layers_are_clearly_not_equivariant() -> None:
    report = report_of("mnist_cnn")
    for row in report.rows:
        assert min(e for e in row.errors if e is not None) > 1e-2, row
        assert not any(row.symmetric)
    assert report.measured_break is None and "C1 has no quarter turn" in report.verdict()


def test_resampled_angles_act_by_permutation_when_in_the_group() -> None:
    report = report_of("quickstart", angles=(15.0, 45.0, 90.0))
    assert [c.name for c in report.columns] == ["90°", "180°", "270°", "15°", "45°"]
    first, head = report.rows[0], report.rows[-1]
    assert first.errors[3] is None  # 15° is not in C8: it does not act on regular fields
    assert 0 < first.errors[4] < 1.0  # 45° is: permuted and resampled, compared in the disk
    assert head.errors[3] is not None and not head.symmetric[3]  # logits: invariance


def test_published_cifar_resnet_breaks_at_its_first_stride() -> None:
    """The PDO-eConvs p6 ResNet-26 as published strides on 32 px: its stem and first stage
    are exact under the half turn (C6 has no quarter turn), the first downsampling block is
    not, and the plan says why."""
    report = report_of("cifar10_pdoeconv_p6_resnet26")
    assert [c.name for c in report.columns] == ["90°", "180°", "270°"]
    half = 1
    first = next(i for i, r in enumerate(report.rows) if r.path == "layers[2]")
    assert first >= 2 and all(r.errors[half] < TOL for r in report.rows[:first])
    assert all(r.errors[0] is None for r in report.rows[:-1])  # 90° is not in C6
    assert report.measured_break == first and report.predicted.index == first
    assert report.rows[first].errors[half] > 0.1
    verdict = report.verdict()
    assert verdict.startswith("exactness under the half turn breaks first at layers[2] "
                              "(residual, 32x32 in")
    assert "layers[2].body[0]: stride 2 on a 32x32 map" in verdict


BREAKS = {
    "name": "breaks",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 16},
    "layers": [
        {"op": "pdo_conv", "fields": 2, "order": 2},
        {"op": "pdo_conv", "fields": 2, "order": 2, "stride": 2},
        {"op": "pdo_conv", "fields": 2, "order": 2},
        {"op": "head", "classes": 3},
    ],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2},
}


def test_first_break_is_measured_and_explained_from_the_plan() -> None:
    report = layers_of(BREAKS)
    assert max(report.rows[0].errors) < TOL
    assert report.measured_break == 1 and report.predicted.path == "layers[1]"
    assert min(report.rows[1].errors) > 1e-3
    verdict = report.verdict()
    assert "breaks first at layers[1] (pdo_conv" in verdict
    assert "stride 2 on a 16x16 map" in verdict and "2 divides 16 - 1" in verdict


def test_columns_for_a_non_square_input_keep_the_shape() -> None:
    from epdo.zoo.groups import parse_group

    names = [c.name for c in columns_for(parse_group("D4"), (30.0,), square=False)]
    assert names == ["180°", "flip", "180°∘flip", "30°"]


def write_spec(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cli_check_points_out_the_break_and_warns_once(tmp_path: Path) -> None:
    path = write_spec(tmp_path, BREAKS)
    result = runner.invoke(app, ["check", str(path), "--batch", "2", "--angles", "45"])
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, result.stderr
    assert "input 16x16 is not exactly equivariant under quarter turns" in notes[0]
    assert "layers[1] (pdo_conv, 16x16 in)" in notes[0]
    assert "nearest exact sizes: 15 and 17 (sizes 2k+1" in notes[0]
    out = result.stdout
    assert "per-layer equivariance error of breaks" in out
    assert "exactness under quarter turns breaks first at layers[1]" in out
    assert "exact sizes (quarter turns, square inputs): sizes 2k+1" in out
    assert "random weights (seed 0)" in out

    data = runner.invoke(app, ["check", str(path), "--json", "--batch", "2", "--angles", ""])
    assert data.exit_code == 0, data.stderr
    report = json.loads(data.stdout)
    assert report["layers"]["measured_break"] == 1 and report["trained"] is False
    assert report["exactness"]["nearest"] == [15, 17] and report["warning"].startswith("input")
    assert [r["label"] for r in report["layers"]["rows"]] == [f"layers[{i}]" for i in range(4)]
    assert report["max_exact_error"] > 1e-3  # the logits summary says the same


def test_cli_check_of_an_exact_spec_does_not_warn() -> None:
    result = runner.invoke(app, ["check", "quickstart", "--batch", "2", "--angles", ""])
    assert result.exit_code == 0 and "note:" not in result.stderr
    assert "every layer is exact under quarter turns" in result.stdout
    assert "exact sizes (quarter turns, square inputs): multiples of 4" in result.stdout


def test_info_shows_the_rule() -> None:
    result = runner.invoke(app, ["info", "quickstart"])
    assert result.exit_code == 0
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("exact sizes (quarter turns, square inputs): multiples of 4: 4, 8,")
    data = json.loads(runner.invoke(app, ["info", "quickstart", "--json"]).stdout)
    assert data["exactness"]["exact_here"] and data["exactness"]["sizes"][:2] == [4, 8]


class Notes:
    """A progress that records the notes (and nothing else)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, line: str) -> None:
        self.notes.append(line)

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def shapes(n: int, seed: int, size: int):
    from test_train import TinySet

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.2
    for k in range(3):
        x[labels == k, 0, 2 + k : size - 2, 4:8] += 0.8
    return TinySet(x.clamp(0, 1), labels)


def test_train_warns_once_and_check_reads_the_trained_run(tmp_path: Path) -> None:
    notes = Notes()
    train(BREAKS, out=tmp_path / "breaks", data=(shapes(32, 0, 16), shapes(16, 1, 16)),
          progress=notes)
    warned = [n for n in notes.notes if "not exactly equivariant" in n]
    assert len(warned) == 1 and "layers[1]" in warned[0] and "15 and 17" in warned[0]

    exact = {**BREAKS, "name": "exact", "input": {"channels": 1, "size": 15}}
    notes = Notes()
    run = tmp_path / "exact"
    train(exact, out=run, data=(shapes(32, 0, 15), shapes(16, 1, 15)), progress=notes)
    assert not [n for n in notes.notes if "not exactly equivariant" in n]

    for target in (run, run / BEST):
        result = runner.invoke(app, ["check", str(target), "--json", "--batch", "2",
                                     "--angles", "45"])
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["trained"] and "trained weights from" in report["source"]
        assert report["layers"]["measured_break"] is None
        assert report["max_exact_error"] < TOL and report["exactness"]["exact_here"]
        assert report["warning"] is None and "note:" not in result.stderr


def test_check_refuses_a_missing_checkpoint_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "gone.pt")])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "gone.pt" in result.stderr
