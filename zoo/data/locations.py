"""Where dataset files are looked for.

A loader given an explicit ``data_dir`` looks there only. Otherwise it searches, in order:

1. ``$EPDO_DATA`` when set (one folder holding the files of any dataset);
2. the dataset's own place: :func:`default_data_dir` (``mnist-rot``, ``cifar10``,
   ``cifar100``; where ``epdo data fetch`` saves), or for ``idx`` / ``rotated-idx`` the Debian
   location of Fashion-MNIST, ``/usr/share/datasets/fashion-mnist``
   (``apt-get install dataset-fashion-mnist``).

The embedded sample needs no search.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .names import check_name

__all__ = [
    "CACHE_ENV",
    "DATA_ENV",
    "DEBIAN_FASHION_MNIST",
    "default_data_dir",
    "describe_roots",
    "search_roots",
]

#: Environment variable: a folder holding dataset files, searched before the defaults.
DATA_ENV = "EPDO_DATA"
#: Environment variable of epdo's cache folder (see :mod:`epdo.zoo.cache`).
CACHE_ENV = "EPDO_CACHE_DIR"
#: Where Debian's ``dataset-fashion-mnist`` package puts the four IDX gz files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def default_data_dir(name: str) -> Path:
    """The per-user folder of dataset ``name`` (not created here).

    ``$EPDO_CACHE_DIR/data/<name>`` when ``$EPDO_CACHE_DIR`` is set, else
    ``<platformdirs user cache dir of "epdo">/data/<name>`` (``~/.cache/epdo/data/<name>`` on
    Linux). Unknown names raise :class:`~epdo.zoo.data.errors.DataError`.
    """
    check_name(name)
    override = os.environ.get(CACHE_ENV)
    base = Path(override) if override else Path(platformdirs.user_cache_dir("epdo"))
    return base.expanduser() / "data" / name


def search_roots(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order, without duplicates."""
    check_name(name)
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots: list[Path] = []
    env = os.environ.get(DATA_ENV)
    if env:
        roots.append(Path(env).expanduser())
    if name in ("idx", "rotated-idx"):
        roots.append(DEBIAN_FASHION_MNIST)
    elif name not in ("sample", "sample-upright"):
        roots.append(default_data_dir(name))
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def describe_roots(roots: list[Path]) -> str:
    """``'A, B'`` for a message (each folder marked when it does not exist)."""
    return ", ".join(str(r) + ("" if r.is_dir() else " (no such folder)") for r in roots)
