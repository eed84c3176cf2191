"""A sanity limit that a user may raise with an environment variable.

Used by serving (:mod:`epdo.exporters.limits`) and by the image reader
(:mod:`epdo.zoo.data.images`): each limit is read from its variable when it is checked, so
``EPDO_MAX_IMAGE_PIXELS=400000000 epdo predict model.onnx scan.tif`` raises one for one
command, and the error that reports a limit names its variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EpdoError

__all__ = ["IMAGE_PIXELS", "MAX_IMAGE_PIXELS", "MAX_SETTING", "Limit", "LimitSettingError",
           "whole_number"]

MAX_SETTING = 1 << 62
"""The largest number a limit's variable may hold: far beyond any real limit, and small
enough that every computation with it stays exact (no overflow in numpy, torch or C)."""


def whole_number(text: str) -> int | None:
    """The whole number 1 ..  :data:`MAX_SETTING` that ``text`` writes in ASCII digits
    (surrounding blanks and ``_`` separators allowed), else None: a sign, a fraction, a
    Unicode digit such as ``²`` (``str.isdigit`` accepts it, ``int`` does not), or a number
    too long to mean anything (5000 digits would make ``int`` refuse)."""
    digits = text.strip().replace("_", "")
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        return None
    value = int(digits)
    return value if 1 <= value <= MAX_SETTING else None


class LimitSettingError(EpdoError):
    """An environment variable that should raise a limit holds no positive integer."""


@dataclass(frozen=True)
class Limit:
    """One limit: its default and the environment variable that overrides it."""

    default: int
    variable: str
    what: str

    def value(self) -> int:
        """The limit in force: ``$variable`` when it is set (a positive integer), else the
        default; LimitSettingError for anything else in the variable."""
        text = os.environ.get(self.variable, "")
        if not text.strip():
            return self.default
        value = whole_number(text)
        if value is None:
            raise LimitSettingError(f"${self.variable} must be a whole number of {self.what} "
                                    f"from 1 to {MAX_SETTING:,}, got {text[:40]!r}")
        return value

    def advice(self) -> str:
        """How to raise it, for the end of an error message."""
        return f"set {self.variable} to raise the limit"


MAX_IMAGE_PIXELS = 100_000_000
"""The most pixels (width x height, from the file's header, before anything is decoded) of
one input image: a 100 megapixel photo decodes to 300 MB of RGB. Pillow refuses more than
twice ``PIL.Image.MAX_IMAGE_PIXELS`` (~179 million) on its own; raising this limit beyond
that needs Pillow's raised too."""

IMAGE_PIXELS = Limit(MAX_IMAGE_PIXELS, "EPDO_MAX_IMAGE_PIXELS", "pixels")
"""The limit on the pixels of one input image (served or trained on)."""
