"""The error a spec reports: what is wrong, at which file, line and key path."""

from __future__ import annotations

import re
from typing import Any

from ..errors import EpdoError

__all__ = ["SizeError", "SpecError", "printable"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Control characters, line and paragraph separators, and the bidirectional overrides."""


def printable(text: str) -> str:
    """``text`` with every control character (:data:`_CONTROL`) written as its escape
    (``\\n``, ``\\x1b``): one line that a terminal shows as it is."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class SpecError(EpdoError, ValueError):
    """A problem with a spec, located by file, line and key path (``layers[3].g``).

    ``str(err)`` is ``file:line: path: message`` (the parts that are known), one line: a
    control character (a newline, a terminal escape) from a file name or a key is written as
    its escape.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.file = file
        self.line = line

    def located(self, file: str | None, line: int | None) -> SpecError:
        """The same error, placed at ``file:line``."""
        return SpecError(self.message, path=self.path, file=file, line=line)

    def under(self, prefix: str) -> SpecError:
        """The same error with its key path below ``prefix`` (``epochs`` -> ``train.epochs``)."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return SpecError(self.message, path=path, file=self.file, line=self.line)

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}" if self.line else self.file
        return printable(": ".join(part for part in (where, self.path, self.message) if part))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (self.message, self.path, self.file, self.line))


class SizeError(SpecError):
    """A SpecError that another input size would avoid (maps that a skip or a dense head
    joins differ in size); the planner adds the input sizes that fit."""


def _rebuild_error(message: str, path: str | None, file: str | None, line: int | None) -> SpecError:
    return SpecError(message, path=path, file=file, line=line)
