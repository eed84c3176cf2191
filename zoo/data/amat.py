"""Parser of the ``.amat`` text format of MNIST-rot (Larochelle et al., ICML 2007).

One image per line: 784 whitespace-separated pixel values in ``[0, 1]`` followed by the
label written as a float (``7.000000e+00``); 785 values in all. The 784 values are read as
28 rows of 28 (row-major), the convention of the reference loaders of the rotation
equivariance literature (e.g. the conversion script of Cohen & Welling's
``gconv_experiments`` and the e2cnn examples). Blank lines are skipped.

Parsing uses numpy's C text reader (about 7 s for the 50,000-row test file on one core);
only when something is wrong is the file read again line by line, to name the exact line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from .errors import DataError

__all__ = ["AMAT_COLUMNS", "AMAT_PIXELS", "count_rows", "parse_amat"]

#: Pixel values per row (a 28 x 28 image).
AMAT_PIXELS = 784
#: Values per row: the pixels, then the label.
AMAT_COLUMNS = AMAT_PIXELS + 1
_NUM_CLASSES = 10

Opener = Callable[[], BinaryIO]


def parse_amat(open_stream: Opener, file: str, hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one ``.amat`` file.

    Args:
        open_stream: returns a fresh binary stream of the file each time it is called (it is
            called again, only on error, to find the offending line).
        file: the name used in error messages.
        hint: what to do about a malformed file, appended to error messages.

    Returns:
        ``(pixels, labels)``: ``(N, 784)`` float32 in ``[0, 1]`` (row-major 28 x 28 images)
        and ``(N,)`` int64 in ``0..9``.

    Raises:
        DataError: naming ``file`` and the 1-based line for a wrong number of values, a
            non-numeric value, a pixel outside ``[0, 1]`` or a label that is not an integer in
            ``0..9``; and for an empty file.
    """
    suffix = f"; {hint}" if hint else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data"
        try:
            with open_stream() as stream:
                table = np.loadtxt(stream, dtype=np.float32, comments=None, ndmin=2)
        except ValueError as exc:
            raise _locate_syntax_error(open_stream, file, suffix, exc) from None
    if table.shape[0] == 0:
        raise DataError(f"no rows (an empty file){suffix}", file)
    if table.shape[1] != AMAT_COLUMNS:
        raise DataError(f"{table.shape[1]} values in a row, expected {AMAT_COLUMNS} (784 pixel "
                        f"values, then the label){suffix}", file, _line_of_row(open_stream, 0))

    pixels = np.ascontiguousarray(table[:, :AMAT_PIXELS])
    labels = table[:, AMAT_PIXELS]
    inside = (pixels >= 0.0) & (pixels <= 1.0)  # also False for NaN
    bad_rows = np.flatnonzero(~inside.all(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        col = int(np.flatnonzero(~inside[row])[0])
        raise DataError(f"pixel value {pixels[row, col]:g} (value {col + 1}) is outside [0, 1]"
                        f"{suffix}", file, _line_of_row(open_stream, row))
    good = (labels == np.round(labels)) & (labels >= 0) & (labels <= _NUM_CLASSES - 1)
    bad_rows = np.flatnonzero(~good)
    if bad_rows.size:
        row = int(bad_rows[0])
        raise DataError(f"label {labels[row]:g} is not an integer in 0..{_NUM_CLASSES - 1}"
                        f"{suffix}", file, _line_of_row(open_stream, row))
    return pixels, labels.astype(np.int64)


def count_rows(open_stream: Opener, file: str, hint: str = "") -> int:
    """Number of non-blank lines, cheaply: numbers are not parsed, only the first row's
    values are counted (a :class:`DataError` naming ``file`` and the line when not 785)."""
    rows = 0
    with open_stream() as stream:
        for number, line in enumerate(stream, start=1):
            if not line or line.isspace():
                continue
            rows += 1
            if rows == 1 and len(line.split()) != AMAT_COLUMNS:
                suffix = f"; {hint}" if hint else ""
                raise DataError(f"{len(line.split())} values in the row, expected "
                                f"{AMAT_COLUMNS} (784 pixel values, then the label){suffix}",
                                file, number)
    return rows


def _line_of_row(open_stream: Opener, row: int) -> int:
    """1-based line number of data row ``row`` (0-based; blank lines are not rows)."""
    seen, number = -1, 1
    with open_stream() as stream:
        for number, line in enumerate(stream, start=1):
            if line and not line.isspace():
                seen += 1
                if seen == row:
                    return number
    return number


def _locate_syntax_error(open_stream: Opener, file: str, suffix: str,
                         exc: Exception) -> DataError:
    """The first line with the wrong number of values or a non-numeric value."""
    with open_stream() as stream:
        for number, raw in enumerate(stream, start=1):
            tokens = raw.split()
            if not tokens:
                continue
            if len(tokens) != AMAT_COLUMNS:
                return DataError(f"{len(tokens)} values in the row, expected {AMAT_COLUMNS} "
                                 f"(784 pixel values, then the label){suffix}", file, number)
            for col, token in enumerate(tokens, start=1):
                text = token.decode("latin-1")
                try:
                    float(text)
                except ValueError:
                    return DataError(f"value {col} is not a number: {text[:24]!r}{suffix}",
                                     file, number)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"cannot parse the file ({first}){suffix}", file)
