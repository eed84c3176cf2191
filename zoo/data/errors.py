"""The one error type of :mod:`epdo.zoo.data`.

Every problem with a dataset — a missing file, a malformed row, a truncated archive, a
forbidden pickle global — is raised as a single :class:`DataError` whose text is one line::

    FILE:RECORD: what is wrong; what to do

``FILE`` (a path, or ``archive.zip/member`` for a file read from inside a zip) and
``RECORD`` (a 1-based line number for text files, a 1-based record index for binary ones)
are left out when unknown. The command line prints that line and exits with code 2.

A DataError raised in a DataLoader worker (a streamed image that no longer decodes in the
middle of training or evaluation) reaches the main process as torch rebuilds it there:
``DataError("Caught DataError in DataLoader worker process N.\\nOriginal Traceback ...")``,
the worker's whole traceback as the message. The constructor recognises that form and keeps
only the original error's line (the traceback's last line, after the error's type), so the
user sees the same one line as without workers.
"""

from __future__ import annotations

import os
import re

from ..errors import EpdoError

__all__ = ["DataError"]


_WORKER_TEXT = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal "
                          r"Traceback")
_TYPE_PREFIX = re.compile(r"^[\w.]*DataError: ")


def _worker_original(message: str) -> str | None:
    """The original error's line in torch's rebuilt text of a worker's DataError (module
    docstring), or None when ``message`` is not such a text."""
    if not _WORKER_TEXT.match(message):
        return None
    lines = message.splitlines()
    for i in range(len(lines) - 1, -1, -1):  # a file name may hold a line break
        match = _TYPE_PREFIX.match(lines[i])
        if match:
            return " ".join(lines[i:])[match.end():]
    return None


class DataError(EpdoError, ValueError):
    """A dataset that cannot be found or read.

    Attributes:
        file: the offending file (``str``), or ``None`` when no single file is at fault.
        record: 1-based line (text formats) or record (binary formats) index, or ``None``.
        message: the description without the ``FILE:RECORD:`` prefix.
    """

    def __init__(self, message: str, file: str | os.PathLike[str] | None = None,
                 record: int | None = None) -> None:
        original = _worker_original(str(message))
        if original is not None:  # the file and record are in the original line
            message, file, record = original, None, None
        self.message = " ".join(str(message).split())  # always one line
        self.file = os.fspath(file) if file is not None else None
        self.record = int(record) if record is not None else None
        super().__init__(self.message)

    def __str__(self) -> str:
        prefix = ""
        if self.file is not None:
            prefix = self.file + (f":{self.record}" if self.record is not None else "") + ": "
        elif self.record is not None:
            prefix = f"record {self.record}: "
        return prefix + self.message

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str | None, int | None]]:
        # keeps the attributes when the error crosses a process boundary (DataLoader workers)
        return (type(self), (self.message, self.file, self.record))
