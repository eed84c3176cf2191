"""`fetch_dataset` against a local HTTP server, and the `epdo data` commands."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_data_helpers import (
    TEST_AMAT,
    TRAIN_AMAT,
    amat_rows,
    amat_text,
    write_amat_pair,
    write_idx_dataset,
    write_mnist_rot_zip,
)
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo.data import DataError, fetch_dataset, load_dataset
from epdo.zoo.data import fetch as fetch_module

FIXTURE_ROWS = {"train": 5, "test": 3}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@contextlib.contextmanager
def local_server(handler: Any) -> Iterator[str]:
    """``handler`` (a request handler class or factory) served on 127.0.0.1 by a thread;
    yields the base URL and shuts the server down afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(base URL, folder)``: an HTTP server on 127.0.0.1 serving the folder's files."""
    folder = tmp_path / "www"
    folder.mkdir()
    with local_server(functools.partial(_QuietHandler, directory=str(folder))) as url:
        yield url, folder


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist_rotation_new.zip"


def test_fetch_downloads_checks_and_stores(served, tmp_path: Path) -> None:
    base, www = served
    data = write_mnist_rot_zip(www / "mnist_rotation_new.zip")
    dest = tmp_path / "store"
    path = fetch_dataset("mnist-rot", url=f"{base}/mnist_rotation_new.zip", dest=dest,
                         progress=False, expected_rows=FIXTURE_ROWS, timeout=10)
    assert path == dest / "mnist_rotation_new.zip" and path.is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["mnist_rotation_new.zip"]  # no .part
    test = load_dataset("mnist-rot", "test", data_dir=dest)
    assert test.labels.tolist() == data["test"][1].tolist()


def test_fetch_url_from_env_and_default_dest(served, tmp_path: Path, monkeypatch) -> None:
    base, www = served
    write_mnist_rot_zip(www / "elsewhere.zip")
    monkeypatch.setenv("EPDO_MNIST_ROT_URL", f"{base}/elsewhere.zip")
    monkeypatch.setenv("EPDO_CACHE_DIR", str(tmp_path / "cache"))
    path = fetch_dataset("mnist-rot", progress=False, expected_rows=None, timeout=10)
    assert path == tmp_path / "cache" / "data" / "mnist-rot" / "mnist_rotation_new.zip"
    monkeypatch.delenv("EPDO_DATA", raising=False)
    assert len(load_dataset("mnist-rot", "train")) == 5  # found where fetch put it


def test_fetch_rejects_wrong_row_counts_and_leaves_nothing(served, tmp_path: Path) -> None:
    base, www = served
    write_mnist_rot_zip(www / "mnist_rotation_new.zip")
    dest = tmp_path / "store"
    with pytest.raises(DataError) as err:
        fetch_dataset("mnist-rot", url=f"{base}/mnist_rotation_new.zip", dest=dest,
                      progress=False, timeout=10)  # the genuine 12,000 / 50,000 rows
    text = str(err.value)
    assert "5 rows, expected 12,000" in text and TRAIN_AMAT in text and "\n" not in text
    assert not dest.exists()  # made by the fetch, removed again: no partial file anywhere


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not a zip", "not a zip archive"),
        ("train only", f"lacks {TEST_AMAT}"),
        ("bad row", "value 3 is not a number"),
    ],
)
def test_fetch_structure_check_rejects_bad_archives(served, tmp_path: Path, content,
                                                    words) -> None:
    base, www = served
    archive = www / "mnist_rotation_new.zip"
    if content == "not a zip":
        archive.write_text("<html>moved</html>")
    elif content == "train only":
        write_mnist_rot_zip(archive, members=(TRAIN_AMAT,))
    else:
        pixels, labels = amat_rows(3, 0)
        lines = amat_text(pixels, labels).splitlines()
        lines[1] = " ".join(lines[1].split()[:2] + ["x"] + lines[1].split()[3:])
        write_mnist_rot_zip(archive, texts={TEST_AMAT: "\n".join(lines) + "\n"})
    dest = tmp_path / "store"
    dest.mkdir()
    url = f"{base}/mnist_rotation_new.zip"
    with pytest.raises(DataError) as err:
        fetch_dataset("mnist-rot", url=url, dest=dest, progress=False, expected_rows=None,
                      timeout=10)
    assert words in str(err.value) and url in str(err.value)
    if content == "bad row":
        assert err.value.file == f"{url}/{TEST_AMAT}" and err.value.record == 2
    assert list(dest.iterdir()) == []


def test_fetch_http_error_and_offline(served, closed_port_url, tmp_path: Path) -> None:
    base, _ = served
    tmp_path = tmp_path / "store"
    tmp_path.mkdir()
    with pytest.raises(DataError) as err:
        fetch_dataset("mnist-rot", url=f"{base}/missing.zip", dest=tmp_path, progress=False,
                      timeout=10)
    assert "HTTP error 404" in str(err.value)
    with pytest.raises(DataError) as err:
        fetch_dataset("mnist-rot", url=closed_port_url, dest=tmp_path, progress=False,
                      timeout=10)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"cannot download {closed_port_url}: ")
    assert "by hand" in text and str(tmp_path) in text and "--data-dir" in text
    assert list(tmp_path.iterdir()) == []


def test_fetch_other_datasets_explains_where_they_come_from(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="idx cannot be fetched.*dataset-fashion-mnist"):
        fetch_dataset("idx", dest=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        fetch_dataset("imagenet", dest=tmp_path)


# --- epdo data ---------------------------------------------------------------------------

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_cli_fetch_success_and_errors(served, closed_port_url, tmp_path: Path,
                                      monkeypatch) -> None:
    base, www = served
    write_mnist_rot_zip(www / "mnist_rotation_new.zip")
    url = f"{base}/mnist_rotation_new.zip"
    bad = run("data", "fetch", "mnist-rot", "--url", url, "--dest", str(tmp_path / "a"))
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "expected 12,000" in lines[0]

    monkeypatch.setattr(fetch_module, "MNIST_ROT_ROWS", FIXTURE_ROWS)
    good = run("data", "fetch", "mnist-rot", "--url", url, "--data-dir", str(tmp_path / "b"))
    assert good.exit_code == 0, good.output
    assert (tmp_path / "b" / "mnist_rotation_new.zip").is_file()
    assert "checked and saved" in good.stdout

    offline = run("data", "fetch", "mnist-rot", "--url", closed_port_url, "--dest",
                  str(tmp_path / "c"))
    assert offline.exit_code == 2
    assert len(offline.stderr.strip().splitlines()) == 1 and closed_port_url in offline.stderr

    other = run("data", "fetch", "idx")
    assert other.exit_code == 2 and "cannot be fetched" in other.stderr


def test_cli_info(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("EPDO_DATA", raising=False)
    write_amat_pair(tmp_path, train=5, test=3)
    write_idx_dataset(tmp_path, train=12, test=7)
    result = run("data", "info", "mnist-rot", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["found"] and info["status"] == "found"
    assert info["sizes"] == {"train": 5, "test": 3} and info["classes"] == 10
    assert info["sources"]["test"] == str(tmp_path / TEST_AMAT)

    everything = json.loads(run("data", "info", "--data-dir", str(tmp_path), "--json").stdout)
    by_name = {r["name"]: r for r in everything}
    assert by_name["rotated-idx"]["sizes"] == {"train": 12, "test": 7}
    assert by_name["idx"]["sizes"] == {"train": 12, "test": 7}
    assert by_name["sample"]["sizes"] == {"train": 2400, "test": 1000}
    assert by_name["cifar10"]["status"] == "missing"
    assert by_name["cifar10"]["searched"] == [str(tmp_path)]

    table = run("data", "info", "--data-dir", str(tmp_path))
    assert table.exit_code == 0 and "rotated-idx" in table.stdout and "2,400" in table.stdout

    (tmp_path / TRAIN_AMAT).write_text("1 2 3\n")
    broken = run("data", "info", "mnist-rot", "--data-dir", str(tmp_path))
    assert broken.exit_code == 0 and "broken" in broken.stdout and "3 values" in broken.stdout
    missing = run("data", "info", "cifar100", "--data-dir", str(tmp_path / "none"))
    assert missing.exit_code == 0 and "cifar-100-python" in missing.stdout

    unknown = run("data", "info", "bogus")
    assert unknown.exit_code == 2 and len(unknown.stderr.strip().splitlines()) == 1
