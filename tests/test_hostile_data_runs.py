"""Hostile run records and files that go bad mid-run (issue 20): a ``data.json`` that is too
big, made of tiny values, nested too deeply or whose classes were swapped is one line, in
bounded time and memory; an image that stops decoding while DataLoader workers read it is
the same one line as without workers, not torch's worker traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_checks import cli, refused
from PIL import Image
from test_hostile_data import tiny_spec
from torch.utils.data import DataLoader, Dataset

from epdo.zoo.data import DataError, folder_dataset
from epdo.zoo.data.folder_dataset import MAX_RECORD_BYTES, MAX_RECORD_FILES, read_record


def _folder(root: Path, per_class: int = 6) -> Path:
    for k, name in enumerate(("ant", "bee")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (14, 12), 30 * k + 9 * i).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run on a folder of images (its data.json beside it)."""
    base = tmp_path_factory.mktemp("run")
    root = _folder(base / "images")
    result = cli("train", tiny_spec(base), "--dataset", f"folder:{root}", "--out",
                 base / "run", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    return base / "run"


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run, to spoil."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


# ------------------------------------------------------------------- data.json


def test_record_with_swapped_classes_is_refused_naming_both_files(run: Path) -> None:
    record = json.loads((run / "data.json").read_text())
    assert record["classes"] == ["ant", "bee"]
    assert cli("eval", run).exit_code == 0
    record["classes"] = ["bee", "ant"]
    (run / "data.json").write_text(json.dumps(record))
    line = refused(cli("eval", run), 2, f"{run / 'data.json'}: its class names ('bee', 'ant')",
                   f"checkpoint {run / 'checkpoint-best.pt'} ('ant', 'bee')")
    assert "edited or belongs to another run" in line


@pytest.mark.parametrize("case", ["deep lists", "deep objects", "oversized", "tiny values"])
def test_hostile_records_are_one_line_through_eval(run: Path, case: str) -> None:
    path = run / "data.json"
    if case == "deep lists":
        path.write_text("[" * 200_000)
    elif case == "deep objects":
        path.write_text('{"a":' * 100_000)
    elif case == "oversized":
        with path.open("wb") as fh:  # 255 MB, sparse: nothing of it should be read
            fh.write(b'{"format": "epdo-folder-data/1", "train": [')
            fh.truncate(255 << 20)
    else:
        path.write_text('{"format":"epdo-folder-data/1","train":[' + "0," * 5_000_000 + "0]}")
    words = {"deep lists": "nested too deeply", "deep objects": "nested too deeply",
             "oversized": f"is over {MAX_RECORD_BYTES:,} bytes",
             "tiny values": "JSON values, more than a dataset record of"}
    start = time.perf_counter()
    refused(cli("eval", run), 2, str(path), words[case], "written by epdo train")
    assert time.perf_counter() - start < 10


_RECORD_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from epdo.zoo.data import DataError
    from epdo.zoo.data.folder_dataset import read_record

    def status(key):
        return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

    base = status("VmSize")
    cap = base + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    for path in sys.argv[2:]:
        start = time.perf_counter()
        try:
            outcome = "read %d files" % len(read_record(path)["train"])
        except DataError as exc:
            outcome = "error: " + str(exc)
        print(json.dumps([path, outcome, time.perf_counter() - start]), flush=True)
    print(json.dumps(["peak", status("VmPeak") - base, 0]))
""")


def _record(train: list[list], classes: list[str] | None = None) -> dict:
    return {"format": "epdo-folder-data/1", "root": "/data", "layout": "seeded split",
            "classes": classes or ["a", "b"],
            "input": {"channels": 1, "size": [8, 8], "fit": "resize"}, "seed": 0,
            "test_fraction": 0.2, "mean": [0.5], "std": [0.2], "train": train,
            "test": [["a/t.png", 0]], "skipped": []}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_records_under_a_memory_cap(tmp_path: Path) -> None:
    """The attacks cost next to nothing (before issue 20 a 255 MB record took 5 GB and 78 s),
    and records of 200,000 real-looking entries or of a million entries (refused after
    parsing) read within 256 MB."""
    files = {
        "oversized.json": None,
        "tiny.json": '{"format":"epdo-folder-data/1","train":[' + '"",' * 20_000_000 + '""]}',
        "deep.json": "[" * 200_000,
        "many.json": json.dumps(_record([["a/x.png", 0]] * (MAX_RECORD_FILES + 1))),
        "real.json": json.dumps(_record([[f"class_{i % 7}/image_{i:07d}.png", i % 2]
                                         for i in range(200_000)])),
    }
    for name, text in files.items():
        if text is None:
            with (tmp_path / name).open("wb") as fh:
                fh.truncate(MAX_RECORD_BYTES + 1)
        else:
            (tmp_path / name).write_text(text)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RECORD_SCRIPT, str(256 << 20),
                           *(str(tmp_path / n) for n in files)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    outcomes = {Path(p).name: (o, t) for p, o, t in rows if p != "peak"}
    expected = {"oversized.json": "error: ", "tiny.json": "JSON values",
                "deep.json": "nested too deeply",
                "many.json": "lists 1,000,002 files, more than a folder dataset may hold",
                "real.json": "read 200000 files"}
    for name, needle in expected.items():
        outcome, seconds = outcomes[name]
        assert needle in outcome and "\n" not in outcome, (name, outcome)
        assert seconds < (5.0 if name in ("real.json", "many.json") else 1.0), (name, seconds)
    assert rows[-1][0] == "peak" and rows[-1][1] < 256 << 20
    assert time.perf_counter() - start < 60


def test_record_listing_more_files_than_a_folder_may_hold(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_dataset, "MAX_RECORD_FILES", 3)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(_record([["a/1.png", 0], ["b/2.png", 1], ["a/3.png", 0]])))
    with pytest.raises(DataError, match=r"lists 4 files, more than a folder dataset may hold "
                       r"\(3\)"):
        read_record(path)


def test_record_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "data.json")
    with pytest.raises(DataError, match="not a regular file: a FIFO"):
        read_record(tmp_path / "data.json")


# ------------------------------------------------------------------- errors in workers


class _Failing(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        raise DataError("cannot decode the image (broken data stream)", f"/d/ant/{index}: x.png")


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_worker_data_error_arrives_as_its_own_line(workers: int) -> None:
    with pytest.raises(DataError) as caught:
        list(DataLoader(_Failing(), num_workers=workers))
    assert str(caught.value) == "/d/ant/0: x.png: cannot decode the image (broken data stream)"


def test_other_messages_are_kept_as_they_are() -> None:
    text = "Caught nothing: Original Traceback is just words here"
    assert str(DataError(text)) == text
    assert str(DataError("a\n  b", "f.png", 3)) == "f.png:3: a b"


def _corrupt_after_checking(monkeypatch: pytest.MonkeyPatch, victim: Path) -> None:
    """Every file decodes in the checking pass; ``victim`` is cut right after it."""
    original = folder_dataset.decode_files

    def decode_then_corrupt(*args, **kwargs):
        result = original(*args, **kwargs)
        victim.write_bytes(victim.read_bytes()[:40])
        return result

    monkeypatch.setattr(folder_dataset, "decode_files", decode_then_corrupt)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_file_that_goes_bad_mid_training_is_one_line(tmp_path: Path, workers: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "images")
    _corrupt_after_checking(monkeypatch, root / "ant" / "3.png")
    result = cli("train", tiny_spec(tmp_path), "--dataset", f"folder:{root}", "--out",
                 tmp_path / "run", "--device", "cpu", "--workers", workers,
                 "--memory-budget", "1")
    line = refused(result, 2, f"{root.resolve() / 'ant' / '3.png'}: not an image file Pillow "
                   "can read")
    assert "DataLoader worker" not in line and "Original Traceback" not in line


def test_file_that_goes_bad_mid_evaluation_is_one_line(run: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    record = json.loads((run / "data.json").read_text())
    victim = Path(record["root"]) / record["test"][0][0]
    saved = victim.read_bytes()
    try:
        _corrupt_after_checking(monkeypatch, victim)
        result = cli("eval", run, env={"EPDO_DATA_MEMORY": "1"})
        line = refused(result, 2, f"{victim}: not an image file Pillow can read")
        assert "DataLoader worker" not in line
    finally:
        victim.write_bytes(saved)


def test_resumed_record_is_checked_against_the_checkpoints_classes(run: Path) -> None:
    """What the trainer gets when it passes the resumed checkpoint's class names."""
    from epdo.zoo.checkpoint import read_checkpoint
    from epdo.zoo.spec import load_spec
    from epdo.zoo.training.data_setup import prepare_data
    from epdo.zoo.training.progress import NullProgress

    checkpoint = read_checkpoint(run / "checkpoint-last.pt")
    spec, classes = load_spec(checkpoint["spec"]), checkpoint["extra"]["classes"]
    settings = {"data": None, "resume": run, "skip_bad": False, "memory_budget": None,
                "workers": 0, "report": NullProgress()}
    _, data = prepare_data(spec, classes=classes, **settings)
    assert data.folder.classes == ["ant", "bee"]
    record = json.loads((run / "data.json").read_text())
    (run / "data.json").write_text(json.dumps({**record, "classes": ["bee", "ant"]}))
    with pytest.raises(DataError, match=r"data.json: its class names \('bee', 'ant'\) are not "
                       r"those of the checkpoint .*checkpoint-last.pt \('ant', 'bee'\)"):
        prepare_data(spec, classes=classes, **settings)


def test_resume_refuses_a_record_whose_classes_were_swapped(run: Path) -> None:
    """The trainer passes the resumed checkpoint's class names: a swapped record is one
    line naming both files, and the run is left as it was."""
    record = json.loads((run / "data.json").read_text())
    (run / "data.json").write_text(json.dumps({**record, "classes": ["bee", "ant"]}))
    before = sorted(p.name for p in run.iterdir())
    refused(cli("train", "--resume", run, "--epochs", "2", "--device", "cpu"), 2, "data.json",
            "checkpoint")
    assert sorted(p.name for p in run.iterdir()) == before
