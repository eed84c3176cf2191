"""Limits given in environment variables, a full disk and signals: each is one line (or a
clean exit), never a traceback, and nothing half-written is left beside a target."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_checks import cli, refused

from epdo.zoo.envlimits import MAX_SETTING, whole_number

FIXTURES = Path(__file__).parent / "fixtures"
EPDO = [sys.executable, "-m", "epdo.cli"]
BAD_NUMBERS = ["²", "٣", "9" * 5000, "99999999999999999999999999", "-3", "1.5", "0x10", "1e9"]


def test_whole_numbers_are_ascii_and_bounded() -> None:
    assert whole_number(" 1_000 ") == 1000 and whole_number(str(MAX_SETTING)) == MAX_SETTING
    for text in BAD_NUMBERS + ["", "0", str(MAX_SETTING + 1)]:
        assert whole_number(text) is None, text


SPEC_LIMITS = ["EPDO_MAX_SPEC_BYTES", "EPDO_MAX_SPEC_NODES", "EPDO_MAX_LAYERS",
               "EPDO_MAX_WEIGHTS", "EPDO_MAX_ACTIVATION_BYTES", "EPDO_MAX_GROUP_N"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("variable", SPEC_LIMITS)
def test_a_bad_spec_limit_setting_is_one_line(variable: str, value: str) -> None:
    refused(cli("info", "quickstart", env={variable: value}), 2, variable)


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("variable", ["EPDO_MAX_EPOCHS", "EPDO_MAX_WORKERS"])
def test_a_bad_training_limit_setting_is_one_line(variable: str, value: str,
                                                  tmp_path: Path) -> None:
    workers = ("--workers", "1") if variable == "EPDO_MAX_WORKERS" else ()
    result = cli("train", "quickstart", "--epochs", "1", *workers, "--out", tmp_path / "run",
                 env={variable: value})
    refused(result, 2, variable)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("value", ["9" * 400, "²G", "1" * 30 + "T"])
def test_a_bad_memory_budget_is_one_line(value: str, tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    for name in ("a", "b"):
        (images / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(images / name / f"{i}.png")
    refused(cli("train", "quickstart", "--dataset", f"folder:{images}", "--memory-budget",
                value, "--out", tmp_path / "run"), 2, "--memory-budget")
    refused(cli("train", "quickstart", "--dataset", f"folder:{images}", "--out",
                tmp_path / "run2", env={"EPDO_DATA_MEMORY": value}), 2, "EPDO_DATA_MEMORY")


@pytest.mark.parametrize("value", ["²", "9" * 5000])
def test_the_model_pixel_limit_refuses_bad_settings(value: str) -> None:
    refused(cli("info", FIXTURES / "legacy_model.onnx", env={"EPDO_MAX_MODEL_PIXELS": value}),
            2, "EPDO_MAX_MODEL_PIXELS")


def test_extends_path_must_name_folders(tmp_path: Path) -> None:
    base = tmp_path / "shared" / "base.yaml"
    base.parent.mkdir()
    base.write_text((Path(__file__).parents[1] / "specs" / "quickstart.yaml").read_text())
    spec = tmp_path / "mine" / "child.yaml"
    spec.parent.mkdir()
    spec.write_text(f"extends: {base}\nname: child\n")
    refused(cli("info", spec, env={"EPDO_EXTENDS_PATH": str(base)}), 2, "EPDO_EXTENDS_PATH",
            "not a folder")
    assert cli("info", spec, env={"EPDO_EXTENDS_PATH": str(base.parent)}).exit_code == 0


# --------------------------------------------------------------------------- a full disk


def _tiny_disk() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k none "
                            "/mnt 2>/dev/null || mount -t tmpfs -o size=64k none /tmp"],
                           capture_output=True, timeout=20)
    return probe.returncode == 0


needs_tiny_disk = pytest.mark.skipif(not _tiny_disk(), reason="needs unshare and tmpfs "
                                     "(a user namespace)")


def _on_full_disk(folder: Path, size_kb: int, *args: str,
                  free_kb: int = 16) -> subprocess.CompletedProcess:
    """``epdo ARGS`` with ``folder`` a fresh tmpfs of ``size_kb`` KiB (its own mount
    namespace) of which about ``free_kb`` KiB are left free; ``{disk}`` in an argument is
    the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    command = " ".join(f"'{a}'" for a in [*EPDO, *(a.replace("{disk}", str(folder))
                                                   for a in args)])
    script = (f"mount -t tmpfs -o size={size_kb}k none '{folder}' && "
              f"head -c {(size_kb - free_kb) * 1024} /dev/zero > '{folder}/filler' ; "
              f"{command}; code=$?; ls -a '{folder}' >&2; exit $code")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CI": "true"})


def _clean(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "unexpected pos" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    listing = [line for line in result.stderr.splitlines() if line.startswith(".")]
    assert not [n for n in listing if n not in (".", "..")], listing  # no temporary left


@needs_tiny_disk
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_onto_a_full_disk_is_one_line(fmt: str, tmp_path: Path) -> None:
    from epdo.exporters.formats import suffix_of

    result = _on_full_disk(tmp_path / "disk", 512, "export",
                           str(FIXTURES / "legacy_checkpoint.pt"), "--format", fmt,
                           "-o", f"{{disk}}/model{suffix_of(fmt)}", "--force")
    _clean(result, "no space left")


@needs_tiny_disk
@pytest.mark.parametrize("free_kb", [0, 4, 16, 40])
def test_training_onto_a_full_disk_is_one_line(free_kb: int, tmp_path: Path) -> None:
    """With room for nothing, for the lock and spec only, for a few files, or for all but a
    checkpoint: whichever write meets the full disk, one line."""
    result = _on_full_disk(tmp_path / "disk", 256, "train", "quickstart", "--epochs", "1",
                           "--out", "{disk}/run", free_kb=free_kb)
    _clean(result, "no space left")


@needs_tiny_disk
def test_an_eval_plot_onto_a_full_disk_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", "quickstart", "--epochs", "1", "--out", run).exit_code == 0
    result = _on_full_disk(tmp_path / "disk", 128, "eval", str(run), "--plot",
                           "{disk}/angles.png", "--angles", "0:90:45")
    _clean(result, "no space left")


# --------------------------------------------------------------------------- signals


def _start_export(target: Path) -> subprocess.Popen:
    return subprocess.Popen([*EPDO, "export", str(FIXTURES / "legacy_checkpoint.pt"),
                             "--format", "torchscript", "-o", str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("delay", [1.5, 3.0, 4.5])
def test_sigterm_during_export_leaves_nothing_beside_the_target(delay: float,
                                                                tmp_path: Path) -> None:
    target = tmp_path / "model.ts"
    proc = _start_export(target)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    left = sorted(p.name for p in tmp_path.iterdir())
    # nothing, or the whole artifact (and then perhaps its model card); never a temporary
    assert left in ([], ["model.ts"], ["model.ts", "model.ts.md"]), left
    assert proc.returncode in (0, 128 + signal.SIGTERM)


def test_a_signal_after_wrote_keeps_exit_code_zero(tmp_path: Path) -> None:
    target = tmp_path / "model.ts"
    proc = _start_export(target)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("wrote "):
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 0 and target.exists()
