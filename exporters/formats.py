"""The artifact formats, their file suffixes and where their metadata lives: one table that
export, metadata reading and serving share.

``epdo export`` writes ``<name>.onnx`` or ``<name>.ts``; readers also take the other suffixes
TorchScript files commonly carry (``.pt``, ``.torchscript``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FORMATS", "ONNX", "SUFFIXES", "TORCHSCRIPT", "TS_EXTRA_FILE", "format_of",
           "suffix_of"]

ONNX, TORCHSCRIPT = "onnx", "torchscript"
FORMATS = (ONNX, TORCHSCRIPT)
"""The format names, as ``epdo export --format`` takes them."""

SUFFIXES: dict[str, tuple[str, ...]] = {
    ONNX: (".onnx",),
    TORCHSCRIPT: (".ts", ".pt", ".torchscript"),
}
"""The file suffixes of each format (lower case); the first is the one export writes."""

TS_EXTRA_FILE = "epdo.json"
"""The extra file of a TorchScript archive that holds the metadata (ONNX keeps it in
``metadata_props``)."""


def suffix_of(format: str) -> str:
    """The suffix export gives an artifact of ``format`` (``.onnx``, ``.ts``)."""
    return SUFFIXES[format][0]


def format_of(path: str | os.PathLike[str]) -> str | None:
    """The format of an artifact from its suffix (any case); None for another suffix."""
    suffix = Path(path).suffix.lower()
    for format, suffixes in SUFFIXES.items():
        if suffix in suffixes:
            return format
    return None
