"""MNIST-rot (Larochelle et al., ICML 2007): finding and loading its two ``.amat`` files.

Split ``"train"`` is ``mnist_all_rotation_normalized_float_train_valid.amat`` (12,000 rows:
the customary 10,000 training + 2,000 validation images), ``"test"`` is
``mnist_all_rotation_normalized_float_test.amat`` (50,000 rows). Either file is read as
such, or straight out of the original archive ``mnist_rotation_new.zip`` (never unpacked),
from the folders of :func:`epdo.zoo.data.locations.search_roots`.

Parsed arrays are kept in epdo's cache folder (``$EPDO_CACHE_DIR`` or the user cache dir),
keyed by the file's absolute path, member, size and modification time, so only the first
load of a file pays for parsing the text (about 7 s for the test file).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..cache import cached_arrays
from .amat import count_rows, parse_amat
from .dataset import ImageDataset
from .errors import DataError
from .locations import DATA_ENV, describe_roots, search_roots
from .names import DIGIT_CLASSES

__all__ = [
    "MNIST_ROT_ARCHIVE",
    "MNIST_ROT_FILES",
    "MNIST_ROT_URL",
    "AmatSource",
    "find_member",
    "load_mnist_rot",
    "locate_mnist_rot",
    "mnist_rot_rows",
    "read_amat_source",
]

#: The canonical address of the original archive.
MNIST_ROT_URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
#: The archive's file name.
MNIST_ROT_ARCHIVE = "mnist_rotation_new.zip"
#: The ``.amat`` file of each split.
MNIST_ROT_FILES = {
    "train": "mnist_all_rotation_normalized_float_train_valid.amat",
    "test": "mnist_all_rotation_normalized_float_test.amat",
}
_HINT = "the file is damaged or not MNIST-rot's: fetch it again with `epdo data fetch mnist-rot`"
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class AmatSource:
    """An ``.amat`` file on disk (``member is None``) or a member of a zip archive;
    ``display`` overrides the name used in messages (e.g. a download URL)."""

    path: Path
    member: str | None = None
    display: str | None = None

    @property
    def label(self) -> str:
        """``display``, else ``path`` or ``archive.zip/member``: the name used in messages."""
        if self.display is not None:
            return self.display
        return f"{self.path}/{self.member}" if self.member else str(self.path)

    def open(self) -> BinaryIO:
        """A fresh binary stream of the text (the caller closes it)."""
        if self.member is None:
            return open(self.path, "rb")
        with zipfile.ZipFile(self.path) as archive:  # the member stream outlives the handle
            return archive.open(self.member)  # type: ignore[return-value]


def find_member(archive: zipfile.ZipFile, filename: str) -> str | None:
    """The member of ``archive`` whose base name is ``filename`` (shortest path), if any."""
    hits = [info.filename for info in archive.infolist()
            if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == filename
            and not info.filename.startswith("__MACOSX/")]
    return min(hits, key=len) if hits else None


def locate_mnist_rot(split: str, data_dir: str | os.PathLike[str] | None = None) -> AmatSource:
    """Where split ``split`` is read from: the first searched folder holding its ``.amat``
    file, or else the archive with that file inside.

    Raises:
        DataError: when nowhere to be found (naming the files, the folders searched and how
            to get them), or when an archive found is not a zip or lacks the file.
    """
    filename = MNIST_ROT_FILES[split]
    roots = search_roots("mnist-rot", data_dir)
    for root in roots:
        if (root / filename).is_file():
            return AmatSource(root / filename)
        archive_path = root / MNIST_ROT_ARCHIVE
        if archive_path.is_file():
            try:
                with zipfile.ZipFile(archive_path) as archive:
                    member = find_member(archive, filename)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"not a readable zip archive ({exc}); {_HINT}",
                                archive_path) from None
            if member is None:
                raise DataError(f"the archive holds no {filename}; {_HINT}", archive_path)
            return AmatSource(archive_path, member)
    other = next(f for s, f in MNIST_ROT_FILES.items() if s != split)
    raise DataError(
        f"MNIST-rot {split} split not found: expected {filename} or the archive "
        f"{MNIST_ROT_ARCHIVE} (which holds it and {other}) in {describe_roots(roots)}; get it "
        f"with `epdo data fetch mnist-rot`, or download {MNIST_ROT_URL} by hand and put it in "
        f"one of those folders, pass --data-dir DIR, or set {DATA_ENV}=DIR"
    )


def _cache_key(source: AmatSource) -> dict[str, object]:
    """What identifies the parsed content of ``source``: path, member, size, mtime."""
    try:
        stat = source.path.stat()
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror})", source.path) from None
    return {"format": 1, "path": str(source.path.resolve()), "member": source.member or "",
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_amat_source(source: AmatSource, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (N, 784) float32, labels (N,) int64)`` of ``source``, validated.

    With ``use_cache`` the parsed arrays are stored in / taken from epdo's cache folder
    (and so is the row count, for :func:`mnist_rot_rows`).
    """
    def parse() -> dict[str, np.ndarray]:
        try:
            pixels, labels = parse_amat(source.open, source.label, hint=_HINT)
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read the file ({exc}); {_HINT}", source.label) from None
        return {"pixels": pixels, "labels": labels}

    if not use_cache:
        arrays = parse()
    else:
        key = _cache_key(source)
        arrays = cached_arrays("mnist-rot", key, parse)
        cached_arrays("mnist-rot-rows", key, lambda: {"rows": np.array(len(arrays["labels"]))})
    return arrays["pixels"], arrays["labels"]


def load_mnist_rot(split: str, data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Split ``split`` of MNIST-rot: images ``(N, 1, 28, 28)`` float32 in [0, 1]."""
    source = locate_mnist_rot(split, data_dir)
    pixels, labels = read_amat_source(source)
    images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    return ImageDataset(name="mnist-rot", split=split, images=images.reshape(-1, 1, 28, 28),
                        labels=torch.from_numpy(labels.astype(np.int64)),
                        classes=list(DIGIT_CLASSES), source=source.label)


def mnist_rot_rows(source: AmatSource) -> int:
    """Number of rows of ``source`` without parsing it (for ``epdo data info``); the count
    is cached like the parsed arrays."""
    def count() -> dict[str, np.ndarray]:
        try:
            return {"rows": np.array(count_rows(source.open, source.label, _HINT))}
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read the file ({exc}); {_HINT}", source.label) from None

    return int(cached_arrays("mnist-rot-rows", _cache_key(source), count)["rows"])
