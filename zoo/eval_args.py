"""What evaluation is asked for, read and checked: rotation angles as the command line
gives them (``start:stop:step`` ranges and lists, :func:`parse_angles`), the numbers of
test-time rotations (``4`` or ``1,4,8``, :func:`parse_tta`), and the error of evaluation
arguments that cannot work (:class:`EvalError`)."""

from __future__ import annotations

import math

from .errors import EpdoError

__all__ = ["MAX_ANGLES", "EvalError", "parse_angles", "parse_tta"]


class EvalError(EpdoError, ValueError):
    """Evaluation arguments that cannot work (bad angles, device, a dataset that does not fit
    the model); its ``str`` is one line that says what to change."""


def _number(text: str, what: str, spec: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise EvalError(
            f"{option} {spec!r}: {what} {text.strip()!r} is not a finite number of degrees; "
            "use start:stop:step (stop exclusive) like 0:360:15, or a list like 0,90,180"
        )
    return value


MAX_ANGLES = 720
"""The most angles one evaluation takes (every half degree of a full turn): each angle is a
full pass over the test set."""


def parse_angles(text: str, *, option: str = "angles", allow_empty: bool = False) -> list[float]:
    """Rotation angles in degrees from ``"start:stop:step"`` (stop exclusive), a comma list
    ``"0,90,180"``, or a comma list of both (``"0:90:30,180"``); duplicates dropped, order
    kept. ``parse_angles("0:360:90") == [0.0, 90.0, 180.0, 270.0]``.

    Raises :class:`EvalError` (a ValueError) with a one-line message, which starts with
    ``option`` (what the user typed the angles as, e.g. ``--angles``), on bad syntax, a
    non-positive step, an empty range or more than :data:`MAX_ANGLES` angles; on an empty
    ``text`` too, unless ``allow_empty`` (then the list is empty).
    """
    angles: list[float] = []
    items = [item.strip() for item in str(text).split(",")]
    if allow_empty and not str(text).strip():
        return []
    if not any(items):
        raise EvalError(f"{option} {text!r}: no angle given; use e.g. 0:360:15 or 0,90,180")
    for item in items:
        if not item:
            raise EvalError(f"{option} {text!r}: empty item between commas; use e.g. 0,90,180")
        parts = item.split(":")
        if len(parts) == 1:
            angles.append(_number(parts[0], "angle", text, option))
            continue
        if len(parts) != 3:
            raise EvalError(
                f"{option} {text!r}: {item!r} is not start:stop:step (stop exclusive), "
                "e.g. 0:360:15"
            )
        start = _number(parts[0], "start", text, option)
        stop = _number(parts[1], "stop", text, option)
        step = _number(parts[2], "step", text, option)
        if step <= 0:
            raise EvalError(f"{option} {text!r}: step must be positive, got {parts[2].strip()}")
        span = (stop - start) / step
        count = math.ceil(span - 1e-9) if math.isfinite(span) else MAX_ANGLES + 1
        if count < 1:
            raise EvalError(
                f"{option} {text!r}: {item!r} is empty (stop is exclusive and must exceed start)"
            )
        if len(angles) + count > MAX_ANGLES:
            raise EvalError(
                f"{option} {text!r}: more than {MAX_ANGLES} angles (each is a full pass over "
                "the test set); use a larger step"
            )
        angles.extend(round(start + i * step, 9) + 0.0 for i in range(count))
    if len(angles) > MAX_ANGLES:
        raise EvalError(f"{option} {text!r}: {len(angles):,} angles; at most {MAX_ANGLES} "
                        "(each is a full pass over the test set)")
    return list(dict.fromkeys(angles))  # duplicates dropped (values are rounded to 1e-9)


def parse_tta(text: str, *, option: str = "--tta") -> list[int]:
    """Numbers of test-time rotations from ``"4"`` or a comma list ``"1,4,8"`` (duplicates
    dropped, order kept): each n >= 1 must divide 360, so that the views are turns by whole
    degrees (multiples of 360°/n); 1 is the model alone. ``parse_tta("1,4,8") == [1, 4, 8]``.

    Raises :class:`EvalError` with a one-line message starting with ``option``.
    """
    counts: list[int] = []
    for item in (part.strip() for part in str(text).split(",")):
        try:
            n = int(item)
        except ValueError:
            raise EvalError(f"{option} {text!r}: {item!r} is not a whole number of rotations; "
                            "use e.g. 4 or 1,4,8") from None
        if n < 1 or 360 % n:
            raise EvalError(f"{option} {text!r}: {n} rotations: the number must be at least 1 "
                            "and divide 360 (turns by whole degrees), e.g. 1, 2, 4, 8, 12")
        counts.append(n)
    return list(dict.fromkeys(counts))
