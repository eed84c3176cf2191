"""Pydantic's validation errors as one located line: the key path a user wrote
(``layers[3].g``, not pydantic's ``layers.3.neural_epdo.g``) and a message that lists what
is allowed (keys, ops)."""

from __future__ import annotations

import reprlib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from ..ops import BODY_OPS, LAYER_OPS, LAYER_TYPES
from .errors import SpecError
from .locations import key_path

__all__ = ["from_validation"]


def _clean_loc(loc: tuple[Any, ...]) -> list[str | int]:
    """Drop pydantic's union tag (``layers.3.neural_epdo.g`` -> ``layers[3].g``)."""
    out: list[str | int] = []
    for i, seg in enumerate(loc):
        if seg == "[key]":
            continue
        after_index = i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] in ("layers", "body")
        if after_index and seg in LAYER_TYPES:
            continue
        if isinstance(seg, str) and _is_union_tag(seg):
            continue
        out.append(seg)
    return out


def _is_union_tag(seg: str) -> bool:
    """pydantic's name of a union member in a location (``list[float]``,
    ``literal['auto']``): never a spec key, which is a plain identifier."""
    return "[" in seg


def _without_auto_branch(errors: list[Any]) -> list[Any]:
    """The errors of a ``list | 'auto'`` value: the list branch's explain what is wrong (a
    value that is not ``auto`` was meant as numbers); the literal branch's are dropped."""
    kept = [e for e in errors
            if not any(isinstance(seg, str) and seg.startswith("literal[") for seg in e["loc"])]
    return kept or errors


def _format_path(segments: list[str | int]) -> str:
    text = ""
    for seg in segments:
        text = f"{text}[{seg}]" if isinstance(seg, int) else key_path(text, seg)
    return text


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The schema model that holds the value at pydantic location ``loc`` below ``root``."""
    model: type[BaseModel] | None = root
    for i, seg in enumerate(loc):
        if isinstance(seg, int):
            continue
        if i >= 1 and isinstance(loc[i - 1], int) and seg in LAYER_TYPES:
            model = LAYER_TYPES[seg]
            continue
        field = model.model_fields.get(seg) if model is not None else None
        if field is None:
            return None
        model = _first_model(field.annotation)
    return model


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 4, 4
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 50, 40, 50


def _short(value: Any) -> str:
    """A short repr of a value (never the whole of a large one)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a number of {value.bit_length()} bits"
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error_message(error: dict[str, Any], root: type[BaseModel]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], root)
        fields = model.model_fields if model else {}
        allowed = [f.alias or k for k, f in fields.items() if k != "op"]
        if model is root and "layers" in model.model_fields:
            allowed.insert(2, "extends")
        return f"unknown key {loc[-1]!r}; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    in_body = len(loc) >= 2 and loc[-2] == "body"
    ops = ", ".join(BODY_OPS if in_body else LAYER_OPS)
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        where = " inside a residual body" if in_body else ""
        return f"unknown op {tag!r}{where}; allowed ops: {ops}"
    if kind == "union_tag_not_found":
        return f"a layer needs an 'op' key; allowed ops: {ops}"
    if kind == "model_attributes_type" and isinstance(loc[-1], int):
        return f"a layer must be a mapping with an 'op' key, got {_short(error['input'])}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return message
    return f"{message} (got {_short(error['input'])})"


def from_validation(exc: ValidationError, root: type[BaseModel]) -> SpecError:
    """The first of ``exc``'s errors (validating a ``root`` model) as a SpecError."""
    errors = _without_auto_branch(exc.errors(include_url=False))
    first = errors[0]
    message = _error_message(first, root)
    if len(errors) > 1:
        more = len(errors) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return SpecError(message, path=_format_path(_clean_loc(first["loc"])) or None)
