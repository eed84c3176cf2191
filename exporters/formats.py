"""The artifact formats, their file suffixes and where their metadata lives: one table that
export, metadata reading and serving share.

``epdo export`` writes ``<name>.onnx``, ``<name>.ts``, ``<name>.pt2`` (the ``torch.export``
program) or ``<name>.aoti.pt2`` (its AOTInductor package: compiled code); readers also take
the other suffixes TorchScript files commonly carry (``.pt``, ``.torchscript``). A name
ending in ``.aoti.pt2`` is an AOTInductor package, any other ``.pt2`` a program.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["AOTI", "FORMATS", "ONNX", "PT2", "SUFFIXES", "TORCHSCRIPT", "TS_EXTRA_FILE",
           "format_of", "suffix_of"]

ONNX, TORCHSCRIPT, PT2, AOTI = "onnx", "torchscript", "pt2", "aoti"
FORMATS = (ONNX, TORCHSCRIPT, PT2, AOTI)
"""The format names, as ``epdo export --format`` takes them."""

SUFFIXES: dict[str, tuple[str, ...]] = {
    ONNX: (".onnx",),
    TORCHSCRIPT: (".ts", ".pt", ".torchscript"),
    PT2: (".pt2",),
    AOTI: (".aoti.pt2",),
}
"""The file suffixes of each format (lower case); the first is the one export writes. The
longest suffix a name ends with wins (``.aoti.pt2`` over ``.pt2``)."""

TS_EXTRA_FILE = "epdo.json"
"""The extra file of a TorchScript, ``.pt2`` or ``.aoti.pt2`` archive that holds the
metadata (``extra/epdo.json`` in the zip; ONNX keeps it in ``metadata_props``)."""


def suffix_of(format: str) -> str:
    """The suffix export gives an artifact of ``format`` (``.onnx``, ``.ts``)."""
    return SUFFIXES[format][0]


def format_of(path: str | os.PathLike[str]) -> str | None:
    """The format of an artifact from its suffix (any case; the longest that fits); None
    for another suffix."""
    name = Path(path).name.lower()
    fits = [(len(suffix), format) for format, suffixes in SUFFIXES.items()
            for suffix in suffixes if name.endswith(suffix) and len(name) > len(suffix)]
    return max(fits)[1] if fits else None
