"""Downloading MNIST-rot's and CIFAR's archives and checking them before they are used.

:func:`fetch_dataset` streams the archive (from its official address, an environment variable
or ``url``) into a temporary file beside its destination and checks it; only then is it put in
place (atomically), so a broken or partial download is never found by the loaders:

- ``mnist-rot``: ``mnist_rotation_new.zip`` (:data:`MNIST_ROT_URL`, ``$EPDO_MNIST_ROT_URL``);
  both ``.amat`` members present, 785 values per row, pixels in [0, 1], integer labels 0..9,
  12,000 and 50,000 rows; the zip itself is renamed into place;
- ``cifar10`` / ``cifar100``: ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``
  (:data:`~epdo.zoo.data.fetch_cifar.CIFAR_URLS`, ``$EPDO_CIFAR10_URL`` /
  ``$EPDO_CIFAR100_URL``); the md5 digest when downloaded from the official address, then
  the members, their sizes and every batch (:mod:`.fetch_cifar`); the folder the loader reads
  (``cifar-10-batches-py`` / ``cifar-100-python``) is unpacked beside it and renamed into
  place, and the archive is deleted.

The download (:mod:`.download`) is capped in size (``$EPDO_MAX_DOWNLOAD_BYTES``) and time
(``$EPDO_MAX_DOWNLOAD_SECONDS``), a full disk is reported as such, and SIGTERM / SIGHUP unwind
the fetch so that nothing half-written is left behind. The archives are checked in bounded
memory whatever they declare (:mod:`.fetch_mnist_rot`, :mod:`.fetch_cifar`). Only the standard
library's ``urllib`` is used; a progress bar is drawn on stderr when it is a terminal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from ..fileio import commit, temp_file_beside
from . import fetch_cifar
from .cifar import CIFAR_LAYOUT
from .download import download, signals_unwind, writing_into
from .errors import DataError
from .fetch_mnist_rot import MNIST_ROT_ROWS, check_mnist_rot_archive
from .locations import DATA_ENV, DEBIAN_FASHION_MNIST, default_data_dir
from .mnist_rot import MNIST_ROT_ARCHIVE, MNIST_ROT_URL
from .names import check_name

__all__ = ["FETCHABLE", "MNIST_ROT_ROWS", "URL_ENV", "check_mnist_rot_archive",
           "fetch_dataset"]

#: The datasets :func:`fetch_dataset` can download.
FETCHABLE = ("mnist-rot", "cifar10", "cifar100")
#: Environment variable overriding MNIST-rot's download address.
URL_ENV = "EPDO_MNIST_ROT_URL"
_ELSEWHERE = {
    "idx": f"install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (it is found "
           f"in {DEBIAN_FASHION_MNIST}) or put MNIST-format IDX files in a folder",
    "rotated-idx": "it is built from the `idx` dataset: install Fashion-MNIST with `apt-get "
                   "install dataset-fashion-mnist` or put MNIST-format IDX files in a folder",
    "sample": "it ships with epdo, nothing to fetch",
    "sample-upright": "it ships with epdo, nothing to fetch",
    "seg-sample": "it ships with epdo, nothing to fetch",
    "seg-sample-upright": "it ships with epdo, nothing to fetch",
}


def fetch_dataset(name: str, url: str | None = None, dest: str | os.PathLike[str] | None = None,
                  progress: bool = True, *,
                  expected_rows: Mapping[str, int] | None | Literal["default"] = "default",
                  expected_md5: str | None | Literal["default"] = "default",
                  timeout: float = 60.0) -> Path:
    """Download dataset ``name`` (one of :data:`FETCHABLE`), check it, store it.

    Args:
        name: ``"mnist-rot"``, ``"cifar10"`` or ``"cifar100"``.
        url: where to download from; default the dataset's environment variable
            (``$EPDO_MNIST_ROT_URL``, ``$EPDO_CIFAR10_URL``, ``$EPDO_CIFAR100_URL``), else its
            official address.
        dest: the folder to store the data in (created when needed); default
            :func:`~epdo.zoo.data.locations.default_data_dir` ``(name)``.
        progress: draw a progress bar (only when stderr is a terminal).
        expected_rows: rows required per split (mnist-rot) or per batch file (CIFAR);
            ``"default"`` means :data:`MNIST_ROT_ROWS` / ``fetch_cifar.CIFAR_ROWS`` (read at
            call time), ``None`` skips the row-count check (for small fixtures).
        expected_md5: the archive's md5 digest; ``"default"`` means the published one when
            ``url`` is the official CIFAR address and no digest check otherwise (a mirror is
            checked by its structure only); ``None`` skips it.
        timeout: seconds one connect or read may wait for the server; the whole download
            may take at most ``$EPDO_MAX_DOWNLOAD_SECONDS`` (default an hour) and bring at most
            ``$EPDO_MAX_DOWNLOAD_BYTES`` (default 1 GiB), see :mod:`.download`.

    Returns:
        The path of the stored archive (mnist-rot) or of the unpacked folder (CIFAR).

    Raises:
        DataError: another dataset name; the download failed (offline, unreachable, HTTP
            error, too large, too slow: one line naming the URL, the error and what to
            do); the folder cannot be written (naming it); a wrong
            digest; the archive fails the structure check. Nothing is left behind then, nor
            after SIGTERM, SIGHUP or Ctrl-C (``SystemExit(143)`` / ``(129)`` /
            ``KeyboardInterrupt`` propagate once the partial download is removed).
        DiskFullError: the disk is full (naming the folder); nothing is left behind either.
        LimitSettingError: a download limit's variable holds no positive whole number.
    """
    check_name(name)
    if name not in FETCHABLE:
        raise DataError(f"{name} cannot be fetched (only {', '.join(FETCHABLE)} can be); "
                        f"{_ELSEWHERE[name]}")
    cifar = name != "mnist-rot"
    if cifar:
        official = fetch_cifar.CIFAR_URLS[name]
        url = url or os.environ.get(fetch_cifar.CIFAR_URL_ENV[name]) or official
        archive = fetch_cifar.CIFAR_ARCHIVES[name]
        if expected_md5 == "default":
            expected_md5 = fetch_cifar.CIFAR_MD5[name] if url == official else None
    else:
        url = url or os.environ.get(URL_ENV) or MNIST_ROT_URL
        archive = MNIST_ROT_ARCHIVE
        if expected_md5 == "default":
            expected_md5 = None
    folder = Path(dest).expanduser() if dest is not None else default_data_dir(name)
    if cifar:
        advice = (f"check the address and your connection, or download {archive} by hand "
                  f"(from {url}), unpack it (tar xzf {archive}) and put its "
                  f"{CIFAR_LAYOUT[name]['folder']} folder in {folder}, or in a folder you pass "
                  f"as --data-dir DIR or set as {DATA_ENV}=DIR")
    else:
        advice = (f"check the address and your connection, or download {archive} by hand "
                  f"(from {url}) and put it in {folder}, or in a folder you pass as "
                  f"--data-dir DIR or set as {DATA_ENV}=DIR")
    with signals_unwind():  # SIGTERM / SIGHUP reach the cleanup below
        created = not folder.exists()
        tmp: Path | None = None
        try:
            with writing_into(folder):
                folder.mkdir(parents=True, exist_ok=True)
                tmp = temp_file_beside(folder / archive, suffix=".part")
            digest = download(url, tmp, progress=progress, timeout=timeout,
                              description=archive, advice=advice)
            if expected_md5 is not None and digest != expected_md5.lower():
                raise DataError(f"md5 {digest} differs from the published {expected_md5}; "
                                f"the download is damaged or not the original {archive} - try "
                                "again or check the URL", url)
            if cifar:
                with _status(progress, "checking and unpacking the archive"):
                    final = fetch_cifar.install_cifar_archive(tmp, name, folder, expected_rows,
                                                              label=url)
                tmp.unlink()
            else:
                rows = MNIST_ROT_ROWS if expected_rows == "default" else expected_rows
                with _status(progress, "checking the archive (parsing every row)"):
                    check_mnist_rot_archive(tmp, rows, label=url)
                with writing_into(folder):
                    final = commit(tmp, folder / MNIST_ROT_ARCHIVE)
        except BaseException:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
            if created:
                _remove_if_empty(folder)
            raise
    return final


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` (made by this fetch) when nothing is in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _status(enabled: bool, message: str) -> contextlib.AbstractContextManager[Any]:
    """A spinner with ``message`` on stderr while a slow step runs (terminal only)."""
    console = Console(stderr=True)
    if enabled and console.is_terminal:
        return console.status(message)
    return contextlib.nullcontext()
