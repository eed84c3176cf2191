"""Hostile run folders, crafted checkpoints and bad command-line numbers (issue 11, classes
2 and 7): each is refused in one line with exit code 2, no traceback, nothing in the folder
changed; a run killed at any point can be resumed or restarted.

A real trainer is killed with SIGKILL in the middle of its first checkpoint write (a
subprocess whose ``torch.save`` writes half the file and waits); the other on-disk states a
kill can leave are built by hand from a finished run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
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
from epdo.zoo.checkpoint import BEST, LAST, CheckpointError, read_checkpoint
from epdo.zoo.spec import SpecError
from epdo.zoo.training import TrainError, train
from epdo.zoo.training.config import MAX_EPOCHS, check_overrides
from epdo.zoo.training.optimizer_state import load_optimizer_state
from epdo.zoo.training.rundir import LOCK, SPEC_HEADER, RunDir

TINY = {
    "name": "tiny",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 12, "mean": 0.1, "std": 0.3},
    "layers": [{"op": "pdo_conv", "fields": 2, "order": 2}, {"op": "head", "classes": 3}],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2},
}
RUN_FILES = {"spec.yaml", "metrics.jsonl", "summary.json", LAST, BEST}


@dataclass
class Split:
    images: torch.Tensor
    labels: torch.Tensor
    name: str = "tiny"
    split: str = "train"
    classes: list[str] = field(default_factory=lambda: ["bar", "row", "box"])
    source: str = "generated in tests"


def shapes(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 12, 12, generator=g)
    x[labels == 0, 0, 3:9, 5:7] = 1.0
    x[labels == 1, 0, 5:7, 3:9] = 1.0
    x[labels == 2, 0, 3:9, 3:9] = 1.0
    return Split(x, labels)


DATA = (shapes(48, 0), shapes(24, 1))


@pytest.fixture
def fake_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    import epdo.zoo.data

    def load(name, split, data_dir=None, seed=0):
        return DATA[0] if split == "train" else DATA[1]

    monkeypatch.setattr(epdo.zoo.data, "load_dataset", load, raising=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (never modified: tests copy it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(TINY, out=out, data=DATA)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def epochs_logged(folder: Path) -> list[int]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


def refused(args: list, *, names: tuple[str, ...] = ()) -> str:
    """Run the CLI; assert exit 2, one stderr line starting ``error:``, no traceback; the
    line."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- class 2: one writer

KILLED_WRITER = """\
import io, json, sys, time
import torch
from epdo.zoo.training import train

real_save = torch.save

def half_then_wait(obj, f, *args, **kwargs):  # the first checkpoint write, cut short
    if "checkpoint" not in str(f):
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    with open(f, "wb") as fh:
        fh.write(data[: len(data) // 2])
    print("writing", f, flush=True)
    time.sleep(300)

torch.save = half_then_wait
g = torch.Generator().manual_seed(0)
x, y = torch.rand(48, 1, 12, 12, generator=g), torch.randint(0, 3, (48,), generator=g)

class Split:
    images, labels, name, classes = x, y, "tiny", ["bar", "row", "box"]

train(json.loads(sys.argv[1]), out=sys.argv[2], data=(Split, Split))
"""


def test_a_second_trainer_is_refused_and_a_kill_in_the_first_checkpoint_write_recovers(
    tmp_path: Path, fake_loader
) -> None:
    script, run = tmp_path / "writer.py", tmp_path / "run"
    script.write_text(KILLED_WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), json.dumps(TINY), str(run)], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = writer.stdout.readline()
        assert line.startswith("writing"), writer.stderr.read() if not line else line
        spec_file = tmp_path / "tiny.yaml"
        spec_file.write_text(yaml.safe_dump(TINY))
        # while it runs, neither a new run nor a resume may touch its folder
        pid = f"pid {writer.pid}"
        refused(["train", spec_file, "--out", run], names=(str(run), pid, "in use"))
        refused(["train", "--resume", run], names=(str(run), pid))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    # what the kill left: the spec, one metrics line, half a checkpoint, a stale lock file
    left = {p.name for p in run.iterdir()}
    partial = [n for n in left if n.startswith(f".{BEST}.") and n.endswith(".tmp")]
    assert len(partial) == 1 and left == {"spec.yaml", "metrics.jsonl", LOCK, partial[0]}
    assert epochs_logged(run) == [1]

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    result = train(resume=resumed, data=DATA)  # no checkpoint: starts again from spec.yaml
    assert result.epochs == 1 and epochs_logged(resumed) == [1]
    assert {p.name for p in resumed.iterdir()} == RUN_FILES  # no .tmp, no lock file
    assert read_checkpoint(resumed / LAST)["epoch"] == 1

    train(TINY, out=run, data=DATA)  # a fresh start into the killed folder
    assert epochs_logged(run) == [1] and {p.name for p in run.iterdir()} == RUN_FILES


def test_the_lock_names_its_holder_and_goes_with_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = RunDir.fresh(out, "tiny")
    try:
        busy = rf"in use by another epdo train \(pid {os.getpid()}\)"
        with pytest.raises(TrainError, match=busy):
            train(TINY, out=out, data=DATA)
        assert {p.name for p in out.iterdir()} == {LOCK}
    finally:
        holder.release()
    assert not out.exists()  # created for a run that wrote nothing: removed again
    train(TINY, out=out, data=DATA)
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert (out / "spec.yaml").read_text().startswith(SPEC_HEADER)


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainError, match="expects 1x28x28"):
        train({**TINY, "input": {"channels": 1, "size": 28}}, out=out, data=DATA)
    assert not out.exists()


@pytest.mark.parametrize("content", [
    {"spec.yaml": "# my own spec\nname: mine\n"},
    {"notes.txt": "keep me", "spec.yaml": SPEC_HEADER + "name: fake\n", "data": None},
    {"metrics.jsonl": '{"epoch": 1}\n'},
])
def test_out_over_files_that_are_not_a_runs_is_refused(tmp_path, fake_loader, content) -> None:
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).mkdir() if text is None else (folder / name).write_text(text)
    before = snapshot(folder)
    line = refused(["train", spec_file, "--out", folder], names=(str(folder), "not an epdo run"))
    assert "notes.txt" in line or "spec.yaml" in line or "metrics.jsonl" in line
    assert snapshot(folder) == before and {p.name for p in folder.iterdir()} == set(content)


def test_out_over_a_file_or_a_finished_run_is_refused(tmp_path, finished, fake_loader) -> None:
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    refused(["train", spec_file, "--out", spec_file], names=(str(spec_file), "not a folder"))
    before = snapshot(finished)
    refused(["train", spec_file, "--out", finished], names=("already holds a run", "--resume"))
    assert snapshot(finished) == before


def test_a_kill_between_the_best_and_last_writes_resumes_exactly(tmp_path, finished) -> None:
    straight = train(TINY, out=tmp_path / "straight", data=DATA, epochs=2)
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    data = (run / LAST).read_bytes()
    (run / LAST).unlink()
    (run / f".{LAST}.x1y2z3.tmp").write_bytes(data[: len(data) // 3])
    (run / "summary.json").unlink()
    result = train(resume=run, epochs=2, data=DATA)
    assert epochs_logged(run) == [1, 2] and {p.name for p in run.iterdir()} == RUN_FILES
    a = torch.load(straight.run_dir / LAST, weights_only=True)["model"]
    b = torch.load(run / LAST, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result.epochs == 2


def test_resume_drops_stray_temporary_files_and_foreign_metrics_lines(tmp_path, finished) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / f".{BEST}.abc.tmp").write_bytes(b"PK\x03\x04 half")
    (run / ".spec.yaml.def.tmp").write_text("name: half")
    logged = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text('{"epoch": "abc"}\n[1, 2]\n{"epoch": null}\n' + logged)
    train(resume=run, epochs=2, data=DATA)
    assert {p.name for p in run.iterdir()} == RUN_FILES and epochs_logged(run) == [1, 2]


def test_resume_with_nothing_to_resume_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / LOCK).write_text("12345\n")  # stale: its process is gone
    line = refused(["train", "--resume", empty], names=(str(empty), "nothing to resume"))
    assert "epdo train SPEC --out" in line
    refused(["train", "--resume", tmp_path / "nope"], names=("no such run directory",))


# --------------------------------------------------------------------------- class 7: checkpoints


class Smuggled:
    def __reduce__(self):
        return (os.system, ("echo smuggled",))


class Anything:
    """Any class outside what weights_only allows."""


def _drop_five_add_one(state: dict) -> dict:
    state = dict(state)
    for key in list(state)[:5]:
        state.pop(key)
    state["intruder.weight"] = torch.zeros(2)
    return state


def _set(key, value):
    def change(ck):
        ck[key] = value(ck) if callable(value) else value
    return change


def _extra(key, value, epoch=None):
    def change(ck):
        ck["extra"] = {**ck["extra"], key: value}
        if epoch is not None:
            ck["epoch"] = epoch
    return change


def _optimizer(change_state):
    def change(ck):
        opt = ck["optimizer"]
        opt = {"state": dict(opt["state"]), "param_groups": [dict(g) for g in opt["param_groups"]]}
        change_state(opt)
        ck["optimizer"] = opt
    return change


def _first_float(state):
    return next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)


GENERIC = {  # refused wherever a checkpoint is read: eval, export, resume
    "model a string": (_set("model", "abc"), ("'model'",)),
    "epoch a string": (_set("epoch", "abc"), ("'epoch'",)),
    "epoch 1e12": (_set("epoch", 1e12), ("'epoch'",)),
    "epoch 10**12": (_set("epoch", 10**12), ("1000000000000 epochs",)),
    "epoch negative": (_set("epoch", -3), ("'epoch'",)),
    "no model": (lambda ck: ck.pop("model"), ("'model'",)),
    "no spec": (lambda ck: ck.pop("spec"), ("'spec'",)),
    "spec a string": (_set("spec", "quickstart"), ("'spec'",)),
    "metrics a list": (_set("metrics", [1, 2]), ("'metrics'",)),
    "weights missing and unexpected": (
        _set("model", lambda ck: _drop_five_add_one(ck["model"])),
        ("5 missing", "1 unexpected (intruder.weight)", "and 2 more"),
    ),
    "weight of another shape": (
        _set("model", lambda ck: {**ck["model"], _first_float(ck["model"]): torch.zeros(1, 1)}),
        ("of another shape", "1x1"),
    ),
    "NaN weights": (
        _set("model", lambda ck: {**ck["model"], _first_float(ck["model"]): torch.full_like(
            ck["model"][_first_float(ck["model"])], float("nan"))}),
        ("NaN or infinite",),
    ),
    "forbidden global": (_set("model", Smuggled()), ("system'", "code or objects")),
}
RESUME_ONLY = {  # what only a resumed run takes from a checkpoint
    "optimizer a string": (_set("optimizer", "abc"), ("'optimizer'",)),
    "optimizer step a string": (_optimizer(lambda o: o["state"].update({0: {
        "step": "abc", "exp_avg": torch.zeros(1), "exp_avg_sq": torch.zeros(1)}})),
        ("'step' of parameter 0",)),
    "optimizer moments misshapen": (_optimizer(lambda o: o["state"].update({0: {
        "step": torch.tensor(1.0), "exp_avg": torch.zeros(1), "exp_avg_sq": torch.zeros(1)}})),
        ("'exp_avg' of parameter 0",)),
    "optimizer of another kind": (_optimizer(lambda o: o["state"].update({
        0: {"momentum_buffer": torch.zeros(3)}})), ("momentum_buffer",)),
    "optimizer lr a string": (_optimizer(lambda o: o["param_groups"][0].update(lr="fast")),
                              ("lr is 'fast'",)),
    "optimizer betas short": (_optimizer(lambda o: o["param_groups"][0].update(betas=(0.9,))),
                              ("betas",)),
    "optimizer groups": (_optimizer(lambda o: o["param_groups"].append(o["param_groups"][0])),
                         ("2 parameter groups",)),
    "step a string": (_extra("step", "x"), ("'extra.step'",)),
    "step beyond the epoch": (_extra("step", 10**6, epoch=0), ("1000000 steps",)),
    "partial sums": (_extra("partial", ["a", 1, 2]), ("'extra.partial'",)),
    "best malformed": (_extra("best", {"epoch": 1, "test_acc": "high"}), ("'extra.best'",)),
    "random state": (_set("rng", {"torch": torch.zeros(3)}), ("'rng.torch'",)),
}


def craft(finished: Path, folder: Path, change) -> Path:
    shutil.copytree(finished, folder)
    ck = torch.load(finished / LAST, weights_only=True)
    change(ck)
    for name in (LAST, BEST):
        torch.save(ck, folder / name)
    return folder


@pytest.mark.parametrize("case", list(GENERIC) + list(RESUME_ONLY))
def test_crafted_checkpoints_are_one_line(case, finished, tmp_path, fake_loader) -> None:
    change, names = {**GENERIC, **RESUME_ONLY}[case]
    run = craft(finished, tmp_path / "run", change)
    before = snapshot(run)
    line = refused(["train", "--resume", run, "--epochs", "2"], names=(str(run), *names))
    if case in GENERIC:
        assert refused(["eval", run / LAST]) == line
    assert snapshot(run) == before
    assert "weights_only" not in line and "truncated or corrupted" not in line


def test_pickle_refusals_name_the_global_and_give_no_unsafe_advice(tmp_path) -> None:
    for name, obj in (("system", Smuggled()), ("Anything", Anything())):
        path = tmp_path / f"{name}.pt"
        torch.save({"format": "epdo-checkpoint/2", "model": obj}, path)
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
        text = str(info.value)
        assert name in text and "does not load" in text and "\n" not in text
        assert "weights_only" not in text and "truncated" not in text


class Ordered(collections.OrderedDict):
    """A mapping subclass: a global that weights_only refuses, though it looks like data."""


def test_torch_lists_every_unsafe_global_of_a_checkpoint(tmp_path, monkeypatch) -> None:
    """Where torch can list a checkpoint's unsafe globals
    (``get_unsafe_globals_in_checkpoint``), the one line names all of them; without that
    listing, the first one, from torch.load's refusal."""
    path = tmp_path / "globals.pt"
    torch.save({"format": "epdo-checkpoint/2", "model": Ordered(w=torch.zeros(1)),
                "extra": argparse.Namespace(seed=1)}, path)
    if hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        line = refused(["eval", path], names=(str(path), "Ordered", "argparse.Namespace"))
        assert "the globals " in line and "does not load" in line
        monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint")
    line = refused(["eval", path], names=(str(path), "Ordered", "does not load"))
    assert "argparse" not in line and "weights_only" not in line
    with pytest.raises(CheckpointError, match="Ordered"):
        read_checkpoint(path)


def test_truncated_and_empty_checkpoints_are_one_line(tmp_path, finished) -> None:
    data = (finished / LAST).read_bytes()
    for name, content in (("cut.pt", data[:300]), ("empty.pt", b""), ("junk.pt", b"PK\x03\x04x")):
        (tmp_path / name).write_bytes(content)
        line = refused(["eval", tmp_path / name], names=(str(tmp_path / name), "not a readable"))
        assert "weights_only" not in line


def test_genuine_optimizer_states_still_load() -> None:
    model = torch.nn.Linear(3, 2)
    for make in (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                 lambda p: torch.optim.AdamW(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)):
        opt = make(model.parameters())
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        saved = opt.state_dict()
        load_optimizer_state(make(model.parameters()), saved, "x.pt")
    # SGD without momentum as older torch saved it: a None buffer per parameter
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    old = {"state": {0: {"momentum_buffer": None}, 1: {"momentum_buffer": None}},
           "param_groups": plain.state_dict()["param_groups"]}
    load_optimizer_state(plain, old, "x.pt")


# --------------------------------------------------------------------------- class 7: numbers


@pytest.mark.parametrize(("args", "flag"), [
    (["--seed", "1e23"], "--seed"),
    (["--seed", str(10**30)], "--seed"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--epochs", str(10**12)], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "many"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--workers", "100000"], "--workers"),
    (["--device", "tpu"], "--device"),
    (["--no-such-option"], "--no-such-option"),
])
def test_bad_numbers_and_options_are_one_line_usage_errors(args, flag, tmp_path, fake_loader):
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    refused(["train", spec_file, "--out", tmp_path / "run", *args], names=(flag,))
    assert not (tmp_path / "run").exists()


def test_limits_are_raisable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises((TrainError, SpecError), match="train.seed"):
        train({**TINY, "train": {**TINY["train"], "seed": 2**64}}, data=DATA)
    with pytest.raises(TrainError, match="EPDO_MAX_EPOCHS"):
        check_overrides(epochs=MAX_EPOCHS + 1)
    monkeypatch.setenv("EPDO_MAX_EPOCHS", str(MAX_EPOCHS + 1))
    check_overrides(epochs=MAX_EPOCHS + 1)
    monkeypatch.setenv("EPDO_MAX_EPOCHS", "lots")
    with pytest.raises(TrainError, match="EPDO_MAX_EPOCHS"):
        check_overrides(epochs=2)


def test_the_console_script_prints_usage_errors_on_one_line(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("epdo")
    if not script.exists():
        pytest.skip("the epdo console script is not installed beside this Python")
    for args, flag in ((["train", "quickstart", "--epochs", "0"], "--epochs"),
                       (["--bogus"], "--bogus"), (["train", "x", "--lr"], "--lr")):
        done = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), textwrap.shorten(
            done.stderr, 500)
        assert flag in lines[0]


def test_a_folder_name_is_printed_as_it_is(tmp_path: Path, fake_loader) -> None:
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "[bold]run:100:[/]"
    result = CliRunner().invoke(app, ["train", str(spec_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"run directory: {out}\n" in result.stdout
    assert result.stdout.rstrip().endswith(f"run directory: {out}")
