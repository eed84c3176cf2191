"""The one error type of :mod:`epdo.zoo.data`.

Every problem with a dataset — a missing file, a malformed row, a truncated archive, a
forbidden pickle global — is raised as a single :class:`DataError` whose text is one line::

    FILE:RECORD: what is wrong; what to do

``FILE`` (a path, or ``archive.zip/member`` for a file read from inside a zip) and
``RECORD`` (a 1-based line number for text files, a 1-based record index for binary ones)
are left out when unknown. The command line prints that line and exits with code 2.
"""

from __future__ import annotations

import os

from ..errors import EpdoError

__all__ = ["DataError"]


class DataError(EpdoError, ValueError):
    """A dataset that cannot be found or read.

    Attributes:
        file: the offending file (``str``), or ``None`` when no single file is at fault.
        record: 1-based line (text formats) or record (binary formats) index, or ``None``.
        message: the description without the ``FILE:RECORD:`` prefix.
    """

    def __init__(self, message: str, file: str | os.PathLike[str] | None = None,
                 record: int | None = None) -> None:
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
