"""Downloading MNIST-rot's archive and checking it before it is used.

:func:`fetch_dataset` streams ``mnist_rotation_new.zip`` (from :data:`MNIST_ROT_URL`,
``$EPDO_MNIST_ROT_URL`` or ``url``) into a temporary file beside its destination, checks its
structure — both ``.amat`` members present, 785 values per row, pixels in [0, 1], integer
labels 0..9, 12,000 and 50,000 rows — and only then renames it into place (atomically), so
a broken or partial download is never found by the loaders. Only the standard library's
``urllib`` is used; a progress bar is drawn on stderr when it is a terminal.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .errors import DataError
from .locations import DATA_ENV, DEBIAN_FASHION_MNIST, default_data_dir
from .mnist_rot import (
    MNIST_ROT_ARCHIVE,
    MNIST_ROT_FILES,
    MNIST_ROT_URL,
    AmatSource,
    find_member,
    read_amat_source,
)
from .names import check_name

__all__ = ["MNIST_ROT_ROWS", "URL_ENV", "check_mnist_rot_archive", "fetch_dataset"]

#: Environment variable overriding the download address.
URL_ENV = "EPDO_MNIST_ROT_URL"
#: Rows of each split in the genuine archive.
MNIST_ROT_ROWS: dict[str, int] = {"train": 12_000, "test": 50_000}
_CHUNK = 1 << 16
_ELSEWHERE = {
    "idx": f"install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (it is found "
           f"in {DEBIAN_FASHION_MNIST}) or put MNIST-format IDX files in a folder",
    "rotated-idx": "it is built from the `idx` dataset: install Fashion-MNIST with `apt-get "
                   "install dataset-fashion-mnist` or put MNIST-format IDX files in a folder",
    "sample": "it ships with epdo, nothing to fetch",
    "sample-upright": "it ships with epdo, nothing to fetch",
    "cifar10": "put torchvision's cifar-10-batches-py folder in --data-dir DIR or $EPDO_DATA",
    "cifar100": "put torchvision's cifar-100-python folder in --data-dir DIR or $EPDO_DATA",
}


def fetch_dataset(name: str, url: str | None = None, dest: str | os.PathLike[str] | None = None,
                  progress: bool = True, *,
                  expected_rows: Mapping[str, int] | None | Literal["default"] = "default",
                  timeout: float = 60.0) -> Path:
    """Download dataset ``name`` (only ``"mnist-rot"`` can be), check it, store it.

    Args:
        name: ``"mnist-rot"``.
        url: where to download from; default ``$EPDO_MNIST_ROT_URL``, else
            :data:`~epdo.zoo.data.mnist_rot.MNIST_ROT_URL`.
        dest: the folder to store ``mnist_rotation_new.zip`` in (created when needed);
            default :func:`~epdo.zoo.data.locations.default_data_dir` ``("mnist-rot")``.
        progress: draw a progress bar (only when stderr is a terminal).
        expected_rows: rows required per split; ``"default"`` means :data:`MNIST_ROT_ROWS`
            (read at call time), ``None`` skips the row-count check (for small fixtures).
        timeout: seconds without an answer before giving up.

    Returns:
        The path of the stored archive.

    Raises:
        DataError: another dataset name; the download failed (offline, unreachable, HTTP
            error: one line naming the URL, the error and what to do); the archive fails the
            structure check.
    """
    check_name(name)
    if name != "mnist-rot":
        raise DataError(f"only mnist-rot can be fetched; for {name}: {_ELSEWHERE[name]}")
    url = url or os.environ.get(URL_ENV) or MNIST_ROT_URL
    rows = MNIST_ROT_ROWS if expected_rows == "default" else expected_rows
    folder = Path(dest).expanduser() if dest is not None else default_data_dir(name)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{MNIST_ROT_ARCHIVE}.", suffix=".part",
                                        dir=folder)
    except OSError as exc:
        raise DataError(f"cannot write there ({exc.strerror or exc}); pass another --dest",
                        folder) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _download(url, out, progress, timeout, folder)
        with _status(progress, "checking the archive (parsing every row)"):
            check_mnist_rot_archive(tmp, rows, label=url)
        os.chmod(tmp, 0o644)
        final = folder / MNIST_ROT_ARCHIVE
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created:
            _remove_if_empty(folder)
        raise
    return final


def check_mnist_rot_archive(path: str | os.PathLike[str],
                            expected_rows: Mapping[str, int] | None = None,
                            label: str | None = None) -> dict[str, int]:
    """Check that ``path`` is a genuine MNIST-rot archive; returns the rows per split.

    Every row of both members is parsed and validated (785 values, pixels in [0, 1],
    integer labels 0..9); with ``expected_rows`` the row counts must match. Messages name
    ``label`` (default: the path) and the member.
    """
    path = Path(path)
    label = label or str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {split: find_member(archive, f) for split, f in MNIST_ROT_FILES.items()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a zip archive ({exc}); it is not {MNIST_ROT_ARCHIVE} - check the "
                        "URL", label) from None
    missing = [MNIST_ROT_FILES[s] for s, m in members.items() if m is None]
    if missing:
        raise DataError(f"the archive lacks {' and '.join(missing)}; it is not "
                        f"{MNIST_ROT_ARCHIVE} - check the URL", label)
    counts: dict[str, int] = {}
    for split, member in members.items():
        source = AmatSource(path, member, display=f"{label}/{member}")
        _, labels = read_amat_source(source, use_cache=False)
        counts[split] = len(labels)
        want = None if expected_rows is None else expected_rows.get(split)
        if want is not None and counts[split] != want:
            raise DataError(f"{counts[split]:,} rows, expected {want:,}; the archive is "
                            "incomplete or not the original - check the URL", source.label)
    return counts


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` (made by this fetch) when nothing is in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _download(url: str, out: BinaryIO, progress: bool, timeout: float, folder: Path) -> None:
    """Stream ``url`` into ``out``; any failure becomes one :class:`DataError` line."""
    advice = (f"check the address and your connection, or download {MNIST_ROT_ARCHIVE} by hand "
              f"(from {url}) and put it in {folder}, or in a folder you pass as --data-dir DIR "
              f"or set as {DATA_ENV}=DIR")
    if not url.lower().startswith(("http://", "https://", "file:")):
        raise DataError(f"cannot download {url}: only http(s):// and file: URLs are "
                        f"supported; {advice}")
    request = urllib.request.Request(url, headers={"User-Agent": "epdo-data-fetch"})
    received = 0
    total: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with _progress_bar(progress) as bar:
                task = bar.add_task(MNIST_ROT_ARCHIVE, total=total)
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(task, advance=len(chunk))
    except urllib.error.HTTPError as exc:
        raise DataError(f"cannot download {url}: HTTP error {exc.code} {exc.reason}; "
                        f"{advice}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"cannot download {url}: {exc.reason}; {advice}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"cannot download {url}: {type(exc).__name__}: {exc}; "
                        f"{advice}") from None
    if total is not None and received != total:
        raise DataError(f"cannot download {url}: got {received:,} of {total:,} bytes; "
                        f"{advice}")


def _progress_bar(enabled: bool) -> Progress:
    """A download bar on stderr, disabled unless ``enabled`` and stderr is a terminal."""
    console = Console(stderr=True)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                    disable=not (enabled and console.is_terminal))


def _status(enabled: bool, message: str) -> contextlib.AbstractContextManager[Any]:
    """A spinner with ``message`` on stderr while a slow step runs (terminal only)."""
    console = Console(stderr=True)
    if enabled and console.is_terminal:
        return console.status(message)
    return contextlib.nullcontext()
