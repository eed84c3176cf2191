"""`epdo data fetch` against hostile servers and a hostile machine (issue 20).

A local HTTP server thread plays the attacker: it trickles bytes (one every half second,
which never trips the per-read timeout), never stops sending, or announces a terabyte. Each
refusal is one line naming the URL and the setting that raises the limit, exit 2, within a
bound on time; the memory-bounded runs (in a subprocess whose address space is capped
256 MB above what it holds after its imports) are in tests/test_hostile_fetch_archives.py,
which also serves the archive bombs. A full disk names the folder; SIGTERM, SIGHUP and
Ctrl-C leave no ``.part`` file.
"""

from __future__ import annotations

import builtins
import errno
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_data_fetch import FIXTURE_ROWS, local_server
from test_data_helpers import write_mnist_rot_zip
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo.data import download as download_module
from epdo.zoo.data import fetch as fetch_module
from epdo.zoo.data import fetch_cifar

runner = CliRunner()
TRICKLE_SECONDS = 0.5


class HostileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the files of its folder, and a few hostile paths:

    - ``/slow-body``: a 10 MB Content-Length, then one byte every :data:`TRICKLE_SECONDS`;
    - ``/slow-headers``: the status line itself, one byte at a time;
    - ``/endless``: 64 KiB blocks forever, no Content-Length;
    - ``/huge``: a Content-Length of a terabyte, then nothing.
    """

    stop: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        try:
            if self.path == "/slow-body":
                self._headers(10_000_000)
                self._trickle(b"x" * 10_000_000)
            elif self.path == "/slow-headers":
                self._trickle(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
            elif self.path == "/endless":
                self._headers(None)
                block = bytes(1 << 16)
                while not self.stop.is_set():
                    self.wfile.write(block)
            elif self.path == "/huge":
                self._headers(10**12)
                self.stop.wait(30)
            else:
                super().do_GET()
        except OSError:  # the client hung up: what a refusal does
            pass

    def _headers(self, length: int | None) -> None:
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()

    def _trickle(self, data: bytes) -> None:
        for i in range(len(data)):
            if self.stop.wait(TRICKLE_SECONDS):
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(base URL, folder)``: :class:`HostileHandler` on 127.0.0.1 serving the folder."""
    folder = tmp_path / "www"
    folder.mkdir()
    stop = threading.Event()

    class Handler(HostileHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

    Handler.stop = stop
    with local_server(Handler) as url:
        try:
            yield url, folder
        finally:
            stop.set()  # release trickling handlers before the server shuts down


def refused(result: Any, *needles: str) -> str:
    """The one error line of a command that exited 2, holding every needle."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def fetch_cli(url: str, dest: Path, name: str = "mnist-rot",
              env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, ["data", "fetch", name, "--url", url, "--dest", str(dest)],
                         env=env, catch_exceptions=False)


# --------------------------------------------------------------------------- size and time

@pytest.mark.parametrize("path", ["/slow-body", "/slow-headers"])
def test_a_trickling_server_meets_the_overall_deadline(hostile, tmp_path: Path,
                                                        path: str) -> None:
    base, _ = hostile
    dest = tmp_path / "store"
    start = time.perf_counter()
    result = fetch_cli(base + path, dest, env={"EPDO_MAX_DOWNLOAD_SECONDS": "2"})
    took = time.perf_counter() - start
    refused(result, base + path, "not finished after 2 s", "EPDO_MAX_DOWNLOAD_SECONDS")
    assert took < 6, took  # the deadline, not the 60 s per-read timeout nor 10 MB / 2 per s
    assert not dest.exists()  # made by the fetch, removed: no .part anywhere


def test_the_download_size_is_capped(hostile, tmp_path: Path) -> None:
    base, _ = hostile
    cap = {"EPDO_MAX_DOWNLOAD_BYTES": "100_000"}
    start = time.perf_counter()
    announced = fetch_cli(f"{base}/huge", tmp_path / "a")  # the default cap: 1 GiB
    refused(announced, f"{base}/huge", "announces 1,000,000,000,000 bytes",
            "more than the 1,073,741,824 allowed", "EPDO_MAX_DOWNLOAD_BYTES")
    assert time.perf_counter() - start < 5  # refused from the header, not after 30 s
    endless = fetch_cli(f"{base}/endless", tmp_path / "b", env=cap)
    refused(endless, f"{base}/endless", "more than the 100,000 allowed",
            "EPDO_MAX_DOWNLOAD_BYTES")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert time.perf_counter() - start < 15


def test_a_file_url_must_name_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    start = time.perf_counter()
    for url in ("file:///dev/zero", f"file://{tmp_path / 'fifo'}"):
        refused(fetch_cli(url, tmp_path / "store"), url, "is not a regular file")
    assert time.perf_counter() - start < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_download_limits_are_raisable_and_checked(hostile, tmp_path: Path,
                                                      monkeypatch) -> None:
    base, www = hostile
    write_mnist_rot_zip(www / "mnist_rotation_new.zip")
    url = f"{base}/mnist_rotation_new.zip"
    size = (www / "mnist_rotation_new.zip").stat().st_size
    small = fetch_cli(url, tmp_path / "a", env={"EPDO_MAX_DOWNLOAD_BYTES": str(size - 1)})
    refused(small, f"announces {size:,} bytes, more than the {size - 1:,} allowed")
    for value in ("²", "9" * 5000, "-3", "lots"):
        bad = fetch_cli(url, tmp_path / "b", env={"EPDO_MAX_DOWNLOAD_SECONDS": value})
        refused(bad, "$EPDO_MAX_DOWNLOAD_SECONDS must be a")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    monkeypatch.setattr(fetch_module, "MNIST_ROT_ROWS", FIXTURE_ROWS)
    for seconds in ("30", str(1 << 62)):  # the largest setting is no timer overflow
        good = fetch_cli(url, tmp_path / seconds, env={"EPDO_MAX_DOWNLOAD_BYTES": str(size),
                                                       "EPDO_MAX_DOWNLOAD_SECONDS": seconds})
        assert good.exit_code == 0 and good.stderr == "", good.output
        assert (tmp_path / seconds / "mnist_rotation_new.zip").stat().st_size == size


# --------------------------------------------------------------------------- a full disk

class _FullDisk:
    """A file whose writes fail as on a full disk once ``room`` bytes are written."""

    def __init__(self, file: Any, room: int) -> None:
        self._file, self._room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _full_disk_open(room: int) -> Any:
    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = builtins.open(file, mode, *args, **kwargs)
        return _FullDisk(handle, room) if ("w" in mode or "x" in mode) else handle
    return fake_open


def test_a_full_disk_is_reported_as_such_naming_the_folder(hostile, tmp_path: Path,
                                                           monkeypatch) -> None:
    base, www = hostile
    write_mnist_rot_zip(www / "mnist_rotation_new.zip")
    url = f"{base}/mnist_rotation_new.zip"
    dest = tmp_path / "store"
    dest.mkdir()
    monkeypatch.setattr(download_module, "open", _full_disk_open(100), raising=False)
    line = refused(fetch_cli(url, dest), f"{dest}: no space left on the device",
                   "free some space")
    assert "check the address" not in line and "connection" not in line
    assert list(dest.iterdir()) == []  # the partial download is gone


def test_a_full_disk_while_unpacking_cifar_names_the_folder(hostile, tmp_path: Path,
                                                            monkeypatch) -> None:
    from test_data_fetch_cifar import cifar_entries, write_tar_gz

    base, www = hostile
    write_tar_gz(www / "cifar.tar.gz", cifar_entries("cifar10", tmp_path))
    dest = tmp_path / "store"
    dest.mkdir()
    monkeypatch.setattr(fetch_cifar, "open", _full_disk_open(100), raising=False)
    refused(fetch_cli(f"{base}/cifar.tar.gz", dest, name="cifar10"),
            f"{dest}: no space left on the device", "free some space")
    assert list(dest.iterdir()) == []  # neither the archive nor the half-unpacked folder


# --------------------------------------------------------------------------- signals

def _default_signals() -> None:
    """In the child, before it runs: SIGTERM, SIGHUP and SIGINT at their default handlers."""
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)


_LIBRARY_FETCH = ("import sys\nfrom epdo.zoo.data import fetch_dataset\n"
                  "fetch_dataset('mnist-rot', url=sys.argv[1], dest=sys.argv[2], "
                  f"progress=False, expected_rows={FIXTURE_ROWS!r})\n")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("how", "sig", "code"), [
    ("cli", signal.SIGTERM, 128 + signal.SIGTERM),
    ("library", signal.SIGTERM, 128 + signal.SIGTERM),
    ("library", signal.SIGHUP, 128 + signal.SIGHUP),
    ("cli", signal.SIGINT, 128 + signal.SIGINT),
])
def test_a_signal_mid_download_leaves_no_part_file(hostile, tmp_path: Path, how: str,
                                                   sig: int, code: int | None) -> None:
    base, _ = hostile
    dest = tmp_path / "store"
    dest.mkdir()
    (dest / "mine.txt").write_text("kept")
    url = f"{base}/slow-body"
    if how == "cli":
        command = [sys.executable, "-m", "epdo.cli", "data", "fetch", "mnist-rot", "--url", url,
                   "--dest", str(dest)]
    else:
        command = [sys.executable, "-c", _LIBRARY_FETCH, url, str(dest)]
    # the child starts with the default handlers, as from a shell (under nohup, SIGHUP is
    # inherited ignored, and epdo rightly leaves an ignored signal alone)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 60
        while not list(dest.glob("*.part")):  # the download has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        time.sleep(2 * TRICKLE_SECONDS)  # a few bytes in
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in stderr, stderr
    if code is not None:
        assert proc.returncode == code, (proc.returncode, stderr)
    else:
        assert proc.returncode != 0, stderr
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]  # no .part, nothing else
