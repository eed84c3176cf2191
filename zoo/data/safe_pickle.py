"""Loading the CIFAR pickles without trusting them.

A pickle can name any importable callable and have it called while loading (``os.system``
included), so the CIFAR files are read with :class:`RestrictedUnpickler`: it resolves only
the few globals that dicts of numpy arrays, lists and byte strings need — numpy's array
reconstruction helpers, ``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode`` limited
to latin-1 (how protocol-2 pickles written by Python 3 spell ``bytes``) — and refuses
everything else with a :class:`~epdo.zoo.data.errors.DataError` before anything is called.
Strings of Python 2 pickles (the original CIFAR files) stay ``bytes`` (``encoding="bytes"``).
"""

from __future__ import annotations

import codecs
import importlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["RestrictedUnpickler", "load_restricted"]


def _numpy_private(submodule: str, name: str) -> Callable[..., Any]:
    """``numpy._core.<submodule>.<name>`` (numpy >= 2) or ``numpy.core...`` (numpy 1.x)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to what pickle protocol 2 uses for ``bytes``."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin-1 text only")
    return text.encode("latin-1")


def _allowed() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_private("multiarray", "_reconstruct")
    scalar = _numpy_private("multiarray", "scalar")
    frombuffer = _numpy_private("numeric", "_frombuffer")
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        for module in ("multiarray", "_multiarray_umath"):
            table[(f"{package}.{module}", "_reconstruct")] = reconstruct
            table[(f"{package}.{module}", "scalar")] = scalar
        table[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds numpy arrays, dtypes and plain containers."""

    def __init__(self, file: Any, label: str) -> None:
        super().__init__(file, encoding="bytes")
        self._label = label
        self._table = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[(module, name)]
        except KeyError:
            raise DataError(f"refused to load: the pickle asks for the global {module}.{name}, "
                            "which a dataset file never needs (only numpy arrays, lists, dicts "
                            "and strings are allowed); do not use this file", self._label) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refused to load: the pickle uses persistent ids; do not use this file",
                        self._label)


def load_restricted(path: str | os.PathLike[str]) -> Any:
    """The object pickled in ``path``, loaded with :class:`RestrictedUnpickler`.

    Raises:
        DataError: naming the file, for a forbidden global, a truncated or malformed pickle,
            or an unreadable file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, str(path)).load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror or exc})", path) from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise DataError(f"not a readable pickle ({type(exc).__name__}: {exc}); get the file "
                        "again", path) from None
