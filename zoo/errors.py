"""The common base of every error epdo reports to a user.

An :class:`EpdoError` is a problem the user can fix (a bad spec, a missing file, a
checkpoint that does not fit, an artifact that fails verification): its ``str`` is one line
that says what is wrong, where, and what to do, and ``exit_code`` is what the command line
exits with (2, a usage or input error, unless a subclass says otherwise). The CLI catches
this one class, prints the line and exits; it never needs to know the subclasses.
"""

from __future__ import annotations

USAGE_ERROR = 2
"""The exit code of a usage or input error."""


class EpdoError(Exception):
    """A user-facing error: one line of text and the exit code the CLI uses for it."""

    exit_code: int = USAGE_ERROR


__all__ = ["USAGE_ERROR", "EpdoError"]
