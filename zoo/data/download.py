"""Downloading one archive into a file, within a size cap and a deadline.

:func:`download` streams an ``http(s)://`` or ``file:`` URL into a file and returns its md5
digest. Whatever the server does, the download ends:

- after at most :data:`DOWNLOAD_BYTES` bytes (``$EPDO_MAX_DOWNLOAD_BYTES``, default 1 GiB,
  six times the largest archive epdo fetches): a ``Content-Length`` above it is refused
  before a byte is read, and the running count is checked after every read;
- after at most :data:`DOWNLOAD_SECONDS` seconds (``$EPDO_MAX_DOWNLOAD_SECONDS``, default one
  hour) in all, connecting and headers included: a watchdog shuts the connection's socket
  down when the time is up, so a server that sends one byte every few seconds (which never
  trips the per-read timeout) is cut off too;
- a ``file:`` URL must name a regular file (a FIFO would block, ``/dev/zero`` never ends).

A full disk (``ENOSPC`` / ``EDQUOT``) is reported as such, naming the folder written
(:func:`writing_into`, through :func:`epdo.zoo.fileio.full_disk_reported`), never as a
network problem.
:func:`signals_unwind` makes SIGTERM and SIGHUP unwind the caller (so its ``finally`` /
``except BaseException`` blocks remove what was half-written) instead of killing the process
on the spot.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import socket
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..envlimits import Limit
from ..fileio import full_disk_reported
from ..values import first_line
from .errors import DataError

__all__ = ["DOWNLOAD_BYTES", "DOWNLOAD_SECONDS", "MAX_DOWNLOAD_BYTES", "MAX_DOWNLOAD_SECONDS",
           "download", "signals_unwind", "writing_into"]

MAX_DOWNLOAD_BYTES = 1 << 30
"""The default cap on one download: 1 GiB, six times CIFAR-10's 170 MB archive."""
DOWNLOAD_BYTES = Limit(MAX_DOWNLOAD_BYTES, "EPDO_MAX_DOWNLOAD_BYTES", "bytes")
"""The most bytes one download may bring."""
MAX_DOWNLOAD_SECONDS = 3600
"""The default deadline of one download: an hour (CIFAR's archive at 50 KB/s)."""
DOWNLOAD_SECONDS = Limit(MAX_DOWNLOAD_SECONDS, "EPDO_MAX_DOWNLOAD_SECONDS", "seconds")
"""The most seconds one download may take, from connecting to its last byte."""

_CHUNK = 1 << 16
_UNWOUND = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                 if hasattr(signal, name))


def download(url: str, target: Path, *, progress: bool, timeout: float, description: str,
             advice: str) -> str:
    """Stream ``url`` into the new file ``target``; returns the md5 hex digest of its bytes.

    Args:
        url: an ``http://``, ``https://`` or ``file:`` URL.
        target: the file to write (created or truncated); the caller removes it on failure.
        progress: draw a progress bar (only when stderr is a terminal).
        timeout: seconds one connect or read may wait for the server.
        description: the progress bar's label.
        advice: what to do instead, ending every network error's message.

    Raises:
        DataError: one line naming the URL (unreachable, HTTP error, too large, too slow,
            truncated) or the folder (cannot be written).
        DiskFullError: the disk of ``target`` is full (naming its folder).
        LimitSettingError: ``$EPDO_MAX_DOWNLOAD_BYTES`` / ``$EPDO_MAX_DOWNLOAD_SECONDS`` hold
            no positive whole number.
    """
    if not url.lower().startswith(("http://", "https://", "file:")):
        raise DataError(f"cannot download {url}: only http(s):// and file: URLs are "
                        f"supported; {advice}")
    limit, seconds = DOWNLOAD_BYTES.value(), DOWNLOAD_SECONDS.value()
    request = urllib.request.Request(url, headers={"User-Agent": "epdo-data-fetch"})
    received = 0
    total: int | None = None
    md5 = hashlib.md5(usedforsecurity=False)
    folder = target.parent
    with writing_into(folder):
        out = open(target, "wb")  # noqa: SIM115 - closed below, where a full disk is reported
    try:
        with _Deadline(seconds) as deadline:
            try:
                with _opener(deadline).open(request, timeout=timeout) as response:
                    total = _content_length(response)
                    if total is not None and total > limit:
                        raise _too_large(url, f"the server announces {total:,} bytes", limit,
                                         advice)
                    with _progress_bar(progress) as bar:
                        task = bar.add_task(description, total=total)
                        while chunk := response.read1(_CHUNK):
                            received += len(chunk)
                            if received > limit:
                                raise _too_large(url, f"{received:,} bytes received so far",
                                                 limit, advice)
                            with writing_into(folder):
                                out.write(chunk)
                            md5.update(chunk)
                            bar.update(task, advance=len(chunk))
            except DataError:
                raise
            except urllib.error.HTTPError as exc:
                raise DataError(f"cannot download {url}: HTTP error {exc.code} {exc.reason}; "
                                f"{advice}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException,
                    ValueError) as exc:
                if deadline.expired:
                    raise _too_slow(url, seconds, received, advice) from None
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else None
                what = (str(reason) if reason is not None
                        else f"{type(exc).__name__}: {first_line(exc)}")
                raise DataError(f"cannot download {url}: {what}; {advice}") from None
            if deadline.expired:  # the watchdog's shutdown reads as the end of the data
                raise _too_slow(url, seconds, received, advice)
        with writing_into(folder):
            out.close()
    finally:
        with contextlib.suppress(OSError):
            out.close()
    if total is not None and received != total:
        raise DataError(f"cannot download {url}: got {received:,} of {total:,} bytes; "
                        f"{advice}")
    return md5.hexdigest()


@contextlib.contextmanager
def writing_into(folder: Path) -> Iterator[None]:
    """Report an OS error met inside the block, a write into ``folder``, in one line naming
    the folder: a full disk (or quota) as :class:`~epdo.zoo.fileio.DiskFullError`, anything
    else as a :class:`DataError` quoting the system's reason."""
    try:
        with full_disk_reported(folder):
            yield
    except OSError as exc:
        raise DataError(f"cannot write there ({exc.strerror or first_line(exc)}); pass "
                        "another --dest", folder) from None


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` (exit
    143 / 129, as a shell reports a process they killed), so the ``finally`` and ``except
    BaseException`` blocks inside remove what was half-written; a second signal during that
    cleanup is ignored. Only a signal whose handler is the default (kill at once) is taken
    over, and only in the main thread; the previous handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def unwind(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise SystemExit(128 + signum)

    previous = {}
    for number in _UNWOUND:
        if signal.getsignal(number) is signal.SIG_DFL:
            previous[number] = signal.signal(number, unwind)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _Deadline:
    """A watchdog: when ``seconds`` have passed, every socket it watches is shut down (a
    blocked read then returns), and ``expired`` is set."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(min(seconds, threading.TIMEOUT_MAX), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the time is up (at once if it already is)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    """End both directions of ``sock`` (a TLS socket too: its descriptor, not its session),
    waking a thread blocked reading it."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched(connection: type[http.client.HTTPConnection],
             deadline: _Deadline) -> Callable[..., http.client.HTTPConnection]:
    """A factory of ``connection`` objects whose sockets ``deadline`` watches."""
    def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        conn = connection(*args, **kwargs)
        create = conn._create_connection  # what HTTPConnection.connect opens its socket with

        def create_watched(*a: Any, **k: Any) -> socket.socket:
            sock = create(*a, **k)
            deadline.watch(sock)
            return sock

        conn._create_connection = create_watched  # type: ignore[method-assign]
        return conn
    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    """``http://`` with the sockets under a :class:`_Deadline`."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """``https://`` with the sockets under a :class:`_Deadline` (default TLS checks)."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPSConnection, self._deadline), req,
                            context=self._context)


class _FileHandler(urllib.request.FileHandler):
    """``file:`` URLs naming a regular file only (a FIFO would block the open, a device
    such as ``/dev/zero`` would never end)."""

    def open_local_file(self, req: urllib.request.Request) -> Any:
        path = urllib.request.url2pathname(req.selector)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise urllib.error.URLError(exc.strerror or first_line(exc)) from None
        if not stat.S_ISREG(mode):
            raise urllib.error.URLError(f"{path} is not a regular file")
        return super().open_local_file(req)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's usual opener (proxies, redirects), its sockets watched by ``deadline``."""
    handlers: list[urllib.request.BaseHandler] = [_HTTPHandler(deadline), _FileHandler()]
    if hasattr(http.client, "HTTPSConnection"):
        handlers.append(_HTTPSHandler(deadline))
    return urllib.request.build_opener(*handlers)


def _content_length(response: Any) -> int | None:
    """The announced length, when it is a plain number."""
    length = str(response.headers.get("Content-Length") or "").strip()
    return int(length) if length.isascii() and length.isdigit() and len(length) < 20 else None


def _too_large(url: str, what: str, limit: int, advice: str) -> DataError:
    why = "no archive epdo fetches is that large; " if limit >= DOWNLOAD_BYTES.default else ""
    return DataError(f"cannot download {url}: {what}, more than the {limit:,} allowed ({why}"
                     f"{DOWNLOAD_BYTES.advice()}); {advice}")


def _too_slow(url: str, seconds: int, received: int, advice: str) -> DataError:
    return DataError(f"cannot download {url}: not finished after {seconds:,} s ({received:,} "
                     f"bytes received; set {DOWNLOAD_SECONDS.variable} to allow longer); "
                     f"{advice}")


def _progress_bar(enabled: bool) -> Progress:
    """A download bar on stderr, disabled unless ``enabled`` and stderr is a terminal."""
    console = Console(stderr=True)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                    disable=not (enabled and console.is_terminal))
