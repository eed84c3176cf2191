"""Checks of plain values read from files epdo does not trust (checkpoints, run folders),
and how such values are named in a one-line message."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["first_line", "is_finite_number", "is_int", "is_number", "shape_text", "shown",
           "type_name"]


def is_int(value: Any) -> bool:
    """A whole number (an ``int``, not a ``bool``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An ``int`` or a ``float``, not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number (:func:`is_number`) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def type_name(value: Any) -> str:
    """The name of a value's type, as a message shows it (``str``, ``list``, ...)."""
    return type(value).__name__


def shape_text(shape: tuple[int, ...]) -> str:
    """A tensor shape as ``2x3x4`` (``scalar`` for the empty shape)."""
    return "x".join(str(n) for n in shape) or "scalar"


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (ending in ``...`` when cut)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of a library's error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
