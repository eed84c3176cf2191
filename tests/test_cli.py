"""The command line: list, info, check, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo import build_model

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_list_json_has_every_shipped_spec() -> None:
    result = run("list", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["mnist_regular_gauss"]["group"] == "C16"
    assert rows["mnist_d16c16_gauss"]["group"] == "D16"
    assert rows["mnist_regular_fd"]["discretization"] == "fd"
    assert rows["quickstart"]["params"] == sum(
        p.numel() for p in build_model("quickstart").parameters()
    )
    table = run("list")
    assert table.exit_code == 0 and "cifar10_pdoeconv_p8_resnet44" in table.stdout


def test_info_table_and_json() -> None:
    result = run("info", "mnist_regular_gauss", "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    model = build_model("mnist_regular_gauss")
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert [r["op"] for r in info["rows"]] == ["pdo_conv"] + ["neural_epdo"] * 5 + ["head"]
    assert info["rows"][0]["channels_out"] == 256
    assert info["rows"][3]["size_out"] == "7x7"
    assert info["flops"] == sum(r["flops"] for r in info["rows"]) > 0
    text = run("info", "specs/quickstart.yaml")
    assert text.exit_code == 0 and "neural_epdo" in text.stdout and "FLOPs" in text.stdout


def test_check_json_reports_exact_invariance() -> None:
    result = run("check", "quickstart", "--json", "--batch", "3", "--angles", "45")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["max_exact_error"] < 1e-9
    assert report["output_variation"] > 1e-2
    rows = {r["transform"]: r for r in report["rows"]}
    assert set(rows) == {"rot 90°", "rot 180°", "rot 270°", "rot 45°"}
    assert rows["rot 90°"]["cnn_error"] > 1e-2


BAD_SPEC = """\
group: C4
input: {channels: 1, size: 16}
layers:
  - {op: pdo_conv, fields: 6}
  - {op: neural_epdo, fields: 8, g: 4}
  - {op: head, classes: 10}
"""


@pytest.mark.parametrize("command", ["info", "check"])
def test_bad_spec_is_one_line_with_exit_code_2(tmp_path, command) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_SPEC)
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "bad.yaml:5" in line and "layers[1].g" in line and "allowed: 1, 2, 3, 6" in line
    assert "Traceback" not in result.stderr


def test_missing_spec_and_malformed_yaml(tmp_path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("group: C4\nlayers: [\n")
    result = runner.invoke(app, ["info", str(broken)])
    assert result.exit_code == 2 and "broken.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_angles_option() -> None:
    result = runner.invoke(app, ["check", "quickstart", "--angles", "abc"])
    assert result.exit_code == 2 and "--angles" in result.stderr


@pytest.mark.parametrize("case", ["g", "s", "reduction", "quotient", "order", "wrong type",
                                  "unknown key", "restrict", "unknown op"])
def test_every_invalid_spec_exits_2_with_one_line(tmp_path, case) -> None:
    from test_spec import CASES

    text, path, words, line = CASES[case]
    spec = tmp_path / "broken.yaml"
    spec.write_text(text)
    result = runner.invoke(app, ["info", str(spec)])
    assert result.exit_code == 2
    out = result.stderr.strip().splitlines()
    assert len(out) == 1 and "Traceback" not in result.stderr
    assert f"broken.yaml:{line}: {path}: " in out[0] and words in out[0]


def test_version_and_bare_command() -> None:
    from epdo import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"epdo {__version__}"
    bare = runner.invoke(app, [])  # the help, as a usage error
    assert bare.exit_code == 2 and "train" in bare.output and "export" in bare.output
