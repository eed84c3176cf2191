"""`fetch_dataset("cifar10" / "cifar100")` against a local HTTP server, and `epdo data fetch`.

The archives are tiny but real-format: gzip tars of batch dicts pickled like the originals
(tests/test_data_helpers.py), with the row-count check relaxed through ``expected_rows``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import test_data_fetch
from test_data_helpers import cifar_batch, write_cifar10, write_cifar100
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo.data import DataError, dataset_info, fetch_cifar, fetch_dataset, load_dataset

# the fixtures of tests/test_data_fetch.py: an HTTP server on 127.0.0.1, a closed port
served = test_data_fetch.served
closed_port_url = test_data_fetch.closed_port_url

CIFAR10_ROWS = {**{f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch": 3}
FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
Entry = tuple[tarfile.TarInfo, bytes | None]


def file_entry(name: str, data: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def special_entry(name: str, kind: bytes, target: str = "") -> Entry:
    """A folder, link, device or FIFO member (no data)."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o755
    return info, None


def cifar_entries(name: str, root: Path) -> list[Entry]:
    """The members of a small archive laid out like the original one (readme included)."""
    folder = (write_cifar10 if name == "cifar10" else write_cifar100)(root / "src")
    entries = [special_entry(folder.name, tarfile.DIRTYPE)]
    entries += [file_entry(f"{folder.name}/{p.name}", p.read_bytes())
                for p in sorted(folder.iterdir())]
    entries.append(file_entry(f"{folder.name}/readme.html", b"<html>CIFAR</html>"))
    return entries


def write_tar_gz(path: Path, entries: list[Entry]) -> bytes:
    """``path`` as a gzip tar of ``entries``; returns its bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def replace_entry(entries: list[Entry], member: str, new: Entry | None) -> list[Entry]:
    """``entries`` with the one named ``member`` replaced by ``new`` (dropped when None)."""
    out = [e for e in entries if e[0].name != member]
    assert len(out) == len(entries) - 1
    return out if new is None else [*out, new]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones included) with its bytes (None: a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def fetch(name: str, url: str, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("expected_rows", None)
    return fetch_dataset(name, url=url, dest=dest, progress=False, timeout=10, **kwargs)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_fetch_cifar_unpacks_a_good_archive_where_the_loader_reads_it(served, tmp_path: Path,
                                                                       name: str) -> None:
    base, www = served
    write_tar_gz(www / "archive.tar.gz", cifar_entries(name, tmp_path))
    dest = tmp_path / "store"
    path = fetch(name, f"{base}/archive.tar.gz", dest)
    assert path == dest / FOLDER[name]
    assert [p.name for p in dest.iterdir()] == [FOLDER[name]]  # no archive, no temp files
    assert "readme.html" not in os.listdir(path)  # only the expected members are written
    original = tmp_path / "src" / FOLDER[name]
    assert snapshot(path) == snapshot(original)
    test = load_dataset(name, "test", data_dir=dest)
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    batch = pickle.loads((original / ("test_batch" if name == "cifar10" else "test")).read_bytes())
    assert test.labels.tolist() == batch[label_key]
    assert test.images.shape == (len(batch[label_key]), 3, 32, 32)
    assert len(load_dataset(name, "train", data_dir=dest)) == (20 if name == "cifar10" else 7)
    assert dataset_info(name, dest)["status"] == "found"


def test_fetch_cifar_url_from_env_default_dest_and_row_counts(served, tmp_path: Path,
                                                              monkeypatch) -> None:
    base, www = served
    write_tar_gz(www / "mirror.tar.gz", cifar_entries("cifar10", tmp_path))
    monkeypatch.setenv("EPDO_CIFAR10_URL", f"{base}/mirror.tar.gz")
    monkeypatch.setenv("EPDO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EPDO_DATA", raising=False)
    home = tmp_path / "cache" / "data" / "cifar10"
    with pytest.raises(DataError) as err:  # the genuine 10,000 rows per batch are required
        fetch_dataset("cifar10", progress=False, timeout=10)
    text = str(err.value)
    assert "4 images, expected 10,000" in text and "cifar-10-batches-py/data_batch_1" in text
    assert f"{base}/mirror.tar.gz" in text and not home.exists()
    path = fetch_dataset("cifar10", progress=False, timeout=10, expected_rows=CIFAR10_ROWS)
    assert path == home / "cifar-10-batches-py"
    assert len(load_dataset("cifar10", "train")) == 20  # found where fetch put it


def test_fetch_cifar_replaces_an_existing_folder_only_after_the_checks(served, tmp_path: Path):
    base, www = served
    write_tar_gz(www / "good.tar.gz", cifar_entries("cifar10", tmp_path / "new"))
    write_tar_gz(www / "bad.tar.gz", replace_entry(cifar_entries("cifar10", tmp_path / "bad"),
                                                   "cifar-10-batches-py/test_batch", None))
    dest = tmp_path / "store"
    old = write_cifar10(dest, per_batch=2)
    (old / "notes.txt").write_text("mine")
    before = snapshot(dest)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/test_batch"):
        fetch("cifar10", f"{base}/bad.tar.gz", dest)
    assert snapshot(dest) == before  # nothing lost, nothing half-written, no temp files
    fetch("cifar10", f"{base}/good.tar.gz", dest)
    assert snapshot(dest) == {"cifar-10-batches-py": None,
                              **{f"cifar-10-batches-py/{k}": v for k, v in
                                 snapshot(tmp_path / "new" / "src" / FOLDER["cifar10"]).items()}}


def _bad_pixels() -> bytes:
    batch = cifar_batch(4, 10, 0, b"labels")
    batch[b"data"] = np.zeros((4, 100), dtype=np.uint8)
    return pickle.dumps(batch, protocol=2)


def _bad_labels() -> bytes:
    batch = cifar_batch(4, 10, 0, b"labels")
    batch[b"labels"][2] = 10
    return pickle.dumps(batch, protocol=2)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


BATCH = "cifar-10-batches-py/data_batch_2"
BAD_ARCHIVES = {
    "not gzip": ("not a gzip file", None),
    "truncated": ("damaged or truncated archive", None),
    "truncated trailer": ("damaged or truncated archive", None),
    "dot-dot": ("member 'cifar-10-batches-py/../../evil' has a '..' component",
                file_entry("cifar-10-batches-py/../../evil", b"x")),
    "absolute": ("member '/tmp/evil' has an absolute path", file_entry("/tmp/evil", b"x")),
    "symlink": ("is a symbolic link (to '/etc/passwd')",
                special_entry(BATCH, tarfile.SYMTYPE, "/etc/passwd")),
    "hardlink": ("is a hard link", special_entry("cifar-10-batches-py/x", tarfile.LNKTYPE,
                                                 "cifar-10-batches-py/test_batch")),
    "device": ("is a device", special_entry("cifar-10-batches-py/dev", tarfile.CHRTYPE)),
    "missing": ("lacks cifar-10-batches-py/data_batch_2", None),
    "twice": (f"member {BATCH} appears twice", file_entry(BATCH, b"again")),
    "wrong shape": ("must be a uint8 array of shape (N, 3072), got (4, 100)",
                    file_entry(BATCH, _bad_pixels())),
    "label range": ("label 10 is out of range 0..9", file_entry(BATCH, _bad_labels())),
    "pickle global": ("refused to load: the pickle asks for the global posix.system",
                      file_entry(BATCH, pickle.dumps(_Evil(), protocol=2))),
    "oversized": (f"member {BATCH} is 150 bytes, more than the 100 allowed",
                  file_entry(BATCH, bytes(150))),
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_fetch_cifar_refuses_bad_archives_and_leaves_nothing(served, tmp_path: Path,
                                                             monkeypatch, case: str) -> None:
    base, www = served
    words, entry = BAD_ARCHIVES[case]
    entries = cifar_entries("cifar10", tmp_path)
    archive = www / "cifar-10-python.tar.gz"
    if case in ("missing", "wrong shape", "label range", "pickle global", "oversized"):
        entries = replace_entry(entries, BATCH, entry if case != "missing" else None)
    elif entry is not None:
        entries.append(entry)
    good = write_tar_gz(archive, entries)
    if case == "not gzip":
        archive.write_text("<html>moved</html>")
    elif case == "truncated":
        archive.write_bytes(good[: len(good) // 2])
    elif case == "truncated trailer":
        archive.write_bytes(good[:-4])  # only gzip's length field is missing
    elif case == "oversized":
        limits = {k: dict(v) for k, v in fetch_cifar.CIFAR_MAX_BYTES.items()}
        limits["cifar10"]["data_batch_2"] = 100
        monkeypatch.setattr(fetch_cifar, "CIFAR_MAX_BYTES", limits)
    dest = tmp_path / "store"
    existing = write_cifar10(dest / "kept", per_batch=2)  # a folder the fetch must not touch
    before = snapshot(dest)
    url = f"{base}/cifar-10-python.tar.gz"
    with pytest.raises(DataError) as err:
        fetch("cifar10", url, dest)
    text = str(err.value)
    assert words in text, text
    assert url in text and "\n" not in text
    assert snapshot(dest) == before  # no partial folder, no temp file
    assert existing.is_dir()


def test_fetch_cifar_checks_the_digest_of_the_official_address(served, tmp_path: Path,
                                                               monkeypatch) -> None:
    base, www = served
    write_tar_gz(www / "cifar-100-python.tar.gz", cifar_entries("cifar100", tmp_path))
    url = f"{base}/cifar-100-python.tar.gz"
    dest = tmp_path / "store"
    with pytest.raises(DataError, match="differs from the published 0{32}"):
        fetch("cifar100", url, dest, expected_md5="0" * 32)
    assert not dest.exists()
    monkeypatch.setitem(fetch_cifar.CIFAR_URLS, "cifar100", url)  # "the official address"
    with pytest.raises(DataError) as err:
        fetch_dataset("cifar100", dest=dest, progress=False, expected_rows=None, timeout=10)
    assert f"differs from the published {fetch_cifar.CIFAR_MD5['cifar100']}" in str(err.value)
    assert not dest.exists()
    digest = hashlib.md5((www / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(fetch_cifar.CIFAR_MD5, "cifar100", digest)
    path = fetch_dataset("cifar100", dest=dest, progress=False, expected_rows=None, timeout=10)
    assert len(load_dataset("cifar100", "test", data_dir=path.parent)) == 4


def test_fetch_cifar_http_error_and_offline(served, closed_port_url, tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "store"
    dest.mkdir()
    with pytest.raises(DataError) as err:
        fetch("cifar10", f"{base}/missing.tar.gz", dest)
    text = str(err.value)
    assert "HTTP error 404" in text and "cifar-10-python.tar.gz by hand" in text
    assert "cifar-10-batches-py folder in" in text and "\n" not in text
    with pytest.raises(DataError, match="cannot download"):
        fetch("cifar100", closed_port_url, dest)
    assert list(dest.iterdir()) == []


def test_fetch_other_datasets_still_explain_where_they_come_from(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="sample cannot be fetched .* ships with epdo"):
        fetch_dataset("sample", dest=tmp_path)


# --- epdo data fetch ---------------------------------------------------------------------

runner = CliRunner()


def test_cli_fetch_cifar(served, tmp_path: Path, monkeypatch) -> None:
    base, www = served
    entries = cifar_entries("cifar10", tmp_path)
    write_tar_gz(www / "good.tar.gz", entries)
    write_tar_gz(www / "link.tar.gz", replace_entry(entries, BATCH, special_entry(
        BATCH, tarfile.SYMTYPE, "/etc/passwd")))
    monkeypatch.setitem(fetch_cifar.CIFAR_ROWS, "cifar10", CIFAR10_ROWS)
    dest = tmp_path / "store"

    bad = runner.invoke(app, ["data", "fetch", "cifar10", "--url", f"{base}/link.tar.gz",
                              "--dest", str(dest)], catch_exceptions=False)
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "symbolic link" in lines[0]
    assert not dest.exists()

    good = runner.invoke(app, ["data", "fetch", "cifar10", "--url", f"{base}/good.tar.gz",
                               "--data-dir", str(dest)], catch_exceptions=False)
    assert good.exit_code == 0, good.output
    assert "cifar10: checked and saved to" in good.stdout
    info = runner.invoke(app, ["data", "info", "cifar10", "--data-dir", str(dest), "--json"])
    assert info.exit_code == 0
    record = json.loads(info.stdout)
    assert record["status"] == "found" and record["sizes"] == {"train": 20, "test": 3}
