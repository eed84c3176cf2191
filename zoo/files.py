"""Opening the files a user names (images, artifacts, inputs) without being stalled by them.

:func:`open_regular` opens a path for reading only when it is a regular file: a FIFO, a
device (``/dev/zero``, a tape, a terminal), a socket or a directory is refused before any
read, and the open itself never waits for a FIFO's writer (``O_NONBLOCK``), so a hostile
path costs an error, never a hang. Every reader of a file epdo does not write itself opens
it here: the image reader of training, evaluation and ``epdo predict``
(:mod:`epdo.zoo.data.images`) and the artifact readers (``epdo.exporters.files`` re-exports
this module).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

__all__ = ["NotRegularFileError", "open_regular"]

_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
          | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0))


class NotRegularFileError(OSError):
    """A path that names something other than a regular file (``strerror`` says what)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "an unknown kind of file"


def _refuse(path: str | os.PathLike[str], mode: int) -> OSError:
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
    return NotRegularFileError(errno.EINVAL, f"not a regular file: {_kind(mode)}",
                               os.fspath(path))


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file (symlinks followed).

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError: as ``open`` would.
        NotRegularFileError: a FIFO, device or socket (checked before opening, and again on
            the opened descriptor, so a path swapped in between is caught too).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _refuse(path, mode)
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(path, mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
