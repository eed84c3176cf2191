"""The artifact formats, one module each, registered once (:mod:`.base` says what a format
declares and does). Export, serving, bench and the command line loop over
:func:`all_formats` and never name a format.

==============  ==================  ===============================================
format          suffixes            module
==============  ==================  ===============================================
``onnx``        ``.onnx``           :mod:`.onnx` (onnxruntime, Triton; standard ops)
``torchscript`` ``.ts`` ``.pt``     :mod:`.torchscript` (torch)
                ``.torchscript``
``pt2``         ``.pt2``            :mod:`.pt2` (the ``torch.export`` program)
``aoti``        ``.aoti.pt2``       :mod:`.aoti` (its AOTInductor package: native code)
==============  ==================  ===============================================
"""

from __future__ import annotations

import importlib
import os

from ..artifact import ArtifactError
from .base import ArtifactFormat, Session, all_formats, find_format, format_named, register

_MODULES = ("onnx", "torchscript", "pt2", "aoti")
"""The format modules, in the order ``--format`` lists them; each registers itself."""
for _module in _MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["FORMATS", "SUFFIXES", "ArtifactFormat", "Session", "all_formats",
           "artifact_format", "find_format", "format_for", "format_named", "format_of",
           "register", "suffix_of"]

FORMATS: tuple[str, ...] = tuple(f.name for f in all_formats())
"""The format names, as ``epdo export --format`` takes them."""

SUFFIXES: dict[str, tuple[str, ...]] = {f.name: f.suffixes for f in all_formats()}
"""The suffixes of each format (lower case); the first is the one export writes."""


def suffix_of(name: str) -> str:
    """The suffix export gives an artifact of format ``name``."""
    return format_named(name).suffix


def format_of(path: str | os.PathLike[str]) -> str | None:
    """The name of a file's format from its suffix; None for another suffix."""
    fmt = find_format(path)
    return fmt.name if fmt else None


def format_for(path: str | os.PathLike[str]) -> ArtifactFormat:
    """The format of an artifact file; ArtifactError (one line) for an unknown suffix."""
    fmt = find_format(path)
    if fmt is None:
        name = os.path.basename(os.fspath(path)).lower()
        suffix = os.path.splitext(name)[1]
        known = [s for f in all_formats() for s in f.suffixes[:1]]
        raise ArtifactError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; "
                            f"expected {', '.join(known[:-1])} or {known[-1]}")
    return fmt


def artifact_format(path: str | os.PathLike[str]) -> str:
    """The name of an artifact file's format (:func:`format_for`)."""
    return format_for(path).name
