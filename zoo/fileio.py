"""Atomic file writes: the one place where a file is written beside its target and renamed
over it.

A reader (another process, a crashed run being resumed) sees either the old file or the
complete new one, never a half-written one: the content goes to a temporary file in the
target's folder (same file system, so :func:`os.replace` is an atomic rename), which replaces
the target only once it is complete, and is removed if anything fails on the way.

Three levels, from the most general::

    with atomic_path("model.onnx", suffix=".tmp.onnx") as tmp:   # a writer that wants a path
        torch.onnx.export(..., tmp)
    with atomic_open("entry.npz", "wb", fsync=True) as fh:       # a writer that wants a file
        np.savez(fh, ...)
    atomic_write("summary.json", text)                           # the content at hand

and, for a caller that manages the temporary file itself, :func:`temp_file_beside` and
:func:`commit`.

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) met by any of them, or inside
:func:`full_disk_reported` around another write, is one :class:`DiskFullError` naming the
target, never a traceback; the temporary file is removed and the target keeps what it held.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import EpdoError

__all__ = ["FILE_MODE", "DiskFullError", "atomic_open", "atomic_path", "atomic_write",
           "commit", "disk_is_full", "full_disk_reported", "temp_file_beside"]

_NO_SPACE = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None))
                      if code is not None)


class DiskFullError(EpdoError):
    """A write that found no space left on the device (or the user's quota spent)."""


def disk_is_full(folder: str | os.PathLike[str], margin: int = 1 << 20) -> bool:
    """Whether the file system of ``folder`` has less than ``margin`` bytes left (for a
    writer that reports a full disk in its own words, torch's "unexpected pos")."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


@contextlib.contextmanager
def full_disk_reported(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full disk met inside the block into one :class:`DiskFullError` naming
    ``path`` (any other error passes through)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        raise DiskFullError(f"{path}: no space left on the device (nothing half-written was "
                            "kept); free some space or write elsewhere") from exc

FILE_MODE = 0o644
"""The permissions of a written file (:func:`tempfile.mkstemp` creates 0600; epdo's files —
checkpoints, artifacts, results, cache entries — are ordinary, readable files)."""

PathLike = str | os.PathLike[str]


def temp_file_beside(path: PathLike, suffix: str = ".tmp") -> Path:
    """A new, empty temporary file in ``path``'s folder, named ``.<name>.<random><suffix>``
    (hidden, and recognisably ``path``'s). Raises :class:`OSError` when the folder is not
    writable or does not exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def commit(tmp: PathLike, path: PathLike, mode: int | None = FILE_MODE) -> Path:
    """Give ``tmp`` the permissions ``mode`` (unless None) and rename it over ``path``."""
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    return Path(path)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # never hide the error that got us here
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(
    path: PathLike, *, suffix: str = ".tmp", mode: int | None = FILE_MODE, mkdir: bool = True,
) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; when the block ends normally, the file
    written there replaces ``path`` (with permissions ``mode``); when it raises, the temporary
    file is removed and the exception propagates (a full disk as :class:`DiskFullError`).
    ``mkdir`` creates ``path``'s folder first.
    """
    path = Path(path)
    with full_disk_reported(path):
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_file_beside(path, suffix)
        try:
            yield tmp
            commit(tmp, path, mode)
        except BaseException:
            _discard(tmp)
            raise


@contextlib.contextmanager
def atomic_open(
    path: PathLike, mode: str = "w", *, fsync: bool = False, encoding: str | None = None,
    suffix: str = ".tmp", mkdir: bool = True,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (``mode`` ``"w"`` or ``"wb"``; text
    is UTF-8 unless ``encoding`` says otherwise) and, when the block ends normally, flush it
    (and ``fsync`` it, if asked), close it and rename it over ``path``."""
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, suffix=suffix, mkdir=mkdir) as tmp, open(
        tmp, mode, encoding=encoding
    ) as fh:
        yield fh
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


def atomic_write(path: PathLike, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` (``str``: UTF-8 text, ``bytes``: as is) to ``path`` atomically; the
    folder is created. Returns ``path``."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", fsync=fsync) as fh:
        fh.write(data)
    return Path(path)
