"""Checking a downloaded MNIST-rot archive while streaming it, in bounded memory.

:func:`check_mnist_rot_archive` reads ``mnist_rotation_new.zip`` and trusts nothing in it;
every refusal is one :class:`~epdo.zoo.data.errors.DataError` line, raised as early as the
fault can be seen:

- the zip's central directory is sized from its end record before :mod:`zipfile` parses it:
  at most :data:`_MAX_ENTRIES` entries and :data:`_MAX_DIRECTORY_BYTES` bytes (the original
  holds 2 entries);
- each ``.amat`` member's declared uncompressed size must fit its rows: at most
  :data:`MAX_LINE_BYTES` per row (zip's reader never returns more than the declared size);
- the text is streamed, never held whole: a line longer than :data:`MAX_LINE_BYTES` is
  refused as soon as it is read, rows are counted as they come (more than expected is
  refused at the first extra row), and the rows are parsed and validated (785 values,
  pixels in [0, 1], integer labels 0..9) in batches of at most :data:`_BATCH_BYTES`, by the
  loader's own parser (:func:`~epdo.zoo.data.amat.parse_amat`), its errors naming the line of
  the whole file.

So the memory used is a few batches, whatever the archive declares or holds.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from ..values import first_line
from .amat import AMAT_COLUMNS, parse_amat
from .errors import DataError
from .mnist_rot import MNIST_ROT_ARCHIVE, MNIST_ROT_FILES, find_member

__all__ = ["MAX_LINE_BYTES", "MNIST_ROT_ROWS", "check_mnist_rot_archive"]

#: Rows of each split in the genuine archive.
MNIST_ROT_ROWS: dict[str, int] = {"train": 12_000, "test": 50_000}
#: The longest row accepted: 785 values of up to 83 characters each (the original's rows
#: are a fraction of that).
MAX_LINE_BYTES = 1 << 16
_BATCH_BYTES = 8 << 20  # text parsed at once
_MAX_ENTRIES = 64
_MAX_DIRECTORY_BYTES = 1 << 20
_HINT = "the archive is damaged or not the original - check the URL"
# what zipfile and its decompressors raise for damaged or unsupported bytes (an unknown
# compression method or zip version: NotImplementedError; encrypted: RuntimeError)
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                RuntimeError, ValueError)


def check_mnist_rot_archive(path: str | os.PathLike[str],
                            expected_rows: Mapping[str, int] | None = None,
                            label: str | None = None) -> dict[str, int]:
    """Check that ``path`` is a genuine MNIST-rot archive; returns the rows per split.

    Every row of both members is parsed and validated while the members are streamed (see
    the module); with ``expected_rows`` the row counts must match. Messages name ``label``
    (default: the path) and the member.

    Raises:
        DataError: the first fault found, one line.
    """
    path = Path(path)
    label = label or str(path)
    not_original = f"it is not {MNIST_ROT_ARCHIVE} - check the URL"
    try:
        _check_directory(path, label, not_original)
        archive = zipfile.ZipFile(path)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"not a zip archive ({first_line(exc)}); {not_original}",
                        label) from None
    with archive:
        members = {split: find_member(archive, f) for split, f in MNIST_ROT_FILES.items()}
        missing = [MNIST_ROT_FILES[s] for s, m in members.items() if m is None]
        if missing:
            raise DataError(f"the archive lacks {' and '.join(missing)}; {not_original}", label)
        counts: dict[str, int] = {}
        for split, member in members.items():
            assert member is not None
            want = None if expected_rows is None else expected_rows.get(split)
            where = f"{label}/{member}"
            info = archive.getinfo(member)
            most = (want if want is not None else max(MNIST_ROT_ROWS.values())) * MAX_LINE_BYTES
            if info.file_size > most:
                raise DataError(f"the member declares {info.file_size:,} bytes, more than "
                                f"{most:,} ({MAX_LINE_BYTES:,} per row at most); {_HINT}",
                                where)
            try:
                with archive.open(info) as stream:
                    counts[split] = _check_rows(stream, where, want)
            except DataError:
                raise
            except _READ_ERRORS as exc:
                raise DataError(f"cannot read the member ({type(exc).__name__}: "
                                f"{first_line(exc)}); {_HINT}", where) from None
            if want is not None and counts[split] != want:
                raise DataError(f"{counts[split]:,} rows, expected {want:,}; the archive is "
                                "incomplete or not the original - check the URL", where)
    return counts


def _check_directory(path: Path, label: str, not_original: str) -> None:
    """Refuse a central directory too large for the original, from the end record that
    :mod:`zipfile` itself will follow (its zip64 form included), before it is parsed."""
    with open(path, "rb") as fh:
        end = zipfile._EndRecData(fh)  # noqa: SLF001 - exactly what ZipFile will read
    if end is None:
        return  # ZipFile refuses it as "not a zip file"
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # noqa: SLF001
    if entries > _MAX_ENTRIES or size > _MAX_DIRECTORY_BYTES:
        raise DataError(f"the zip's directory declares {entries:,} entries in {size:,} bytes "
                        f"(the original holds 2); {not_original}", label)


def _check_rows(stream: BinaryIO, where: str, want: int | None) -> int:
    """Stream one ``.amat`` member: bounded lines, rows counted, batches validated."""
    rows = 0
    batch: list[bytes] = []
    batch_bytes = 0
    start = 1  # the line number of batch[0]
    number = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise DataError(f"a line longer than {MAX_LINE_BYTES:,} bytes (a row is "
                            f"{AMAT_COLUMNS} numbers); {_HINT}", where, number)
        if not line.isspace():
            rows += 1
            if want is not None and rows > want:
                raise DataError(f"more than {want:,} rows, expected {want:,}; the archive is "
                                "not the original - check the URL", where, number)
        batch.append(line)
        batch_bytes += len(line)
        if batch_bytes >= _BATCH_BYTES:
            _check_batch(batch, start, where)
            start, batch, batch_bytes = number + 1, [], 0
    _check_batch(batch, start, where)
    if rows == 0:
        raise DataError(f"no rows (an empty file); {_HINT}", where)
    return rows


def _check_batch(lines: list[bytes], start: int, where: str) -> None:
    """Validate the rows in ``lines`` (line ``start`` onwards) with the loader's parser; an
    error names the line in the whole file."""
    if all(line.isspace() for line in lines):
        return
    text = b"".join(lines)
    if not text.endswith(b"\n"):
        text += b"\n"
    try:
        parse_amat(lambda: io.BytesIO(text), where, hint=_HINT)
    except DataError as exc:
        record = None if exc.record is None else exc.record + start - 1
        raise DataError(exc.message, where, record) from None
