"""MNIST-format IDX files (MNIST, Fashion-MNIST, ...): parsing, finding, loading.

An IDX file (yann.lecun.com/exdb/mnist) is a big-endian header — a 32-bit magic number
``0x0000TTDD`` (``TT`` the element type, ``0x08`` = unsigned byte; ``DD`` the number of
dimensions), then one 32-bit size per dimension — followed by the elements in C order.
Image files have magic 2051 (``0x00000803``: N x rows x columns), label files 2049
(``0x00000801``: N). Files may be gzip-compressed (detected by content, not by name).

A split is the pair ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``"train"``)
or ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (``"test"``), each optionally
``.gz`` and optionally spelled ``train-images.idx3-ubyte``. Class names are Fashion-MNIST's
when the folder's path contains "fashion" (any case), else the digits "0".."9".
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..envlimits import MAX_SETTING, whole_number
from .dataset import ImageDataset
from .errors import DataError
from .locations import DATA_ENV, DEBIAN_FASHION_MNIST, describe_roots, search_roots
from .names import DIGIT_CLASSES, FASHION_CLASSES

__all__ = [
    "IDX_FILES",
    "IMAGE_MAGIC",
    "LABEL_MAGIC",
    "gunzip",
    "idx_classes",
    "idx_count",
    "load_idx",
    "load_idx_arrays",
    "locate_idx",
    "read_idx",
]

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
#: The base names of the (images, labels) files of each split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_NUM_CLASSES = 10
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
_KINDS = {IMAGE_MAGIC: "an IDX image file", LABEL_MAGIC: "an IDX label file"}
MAX_IDX_BYTES = 4 << 30
"""The largest IDX body (records x record size) epdo reads: 4 GiB, 80x Fashion-MNIST's
training set; ``$EPDO_MAX_IDX_BYTES`` raises it."""
MAX_IDX_BYTES_ENV = "EPDO_MAX_IDX_BYTES"


def max_idx_bytes() -> int:
    """:data:`MAX_IDX_BYTES`, or ``$EPDO_MAX_IDX_BYTES`` when it is set to a positive integer."""
    text = os.environ.get(MAX_IDX_BYTES_ENV, "")
    if not text.strip():
        return MAX_IDX_BYTES
    value = whole_number(text)
    if value is None:
        raise DataError(f"${MAX_IDX_BYTES_ENV} must be a positive number of bytes, 1 to "
                        f"{MAX_SETTING:,}, got {text.strip()[:40]!r}")
    return value


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """The elements of the IDX file at ``path``, whose magic number must be ``magic``.

    Returns:
        uint8, ``(N, rows, cols)`` for images (``magic=2051``) or ``(N,)`` for labels (2049).

    Raises:
        DataError: naming the file for a wrong magic number or a short header, and the
            1-based record where the data ends for a truncated (or corrupt) gz / short file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror})", path) from None
    compressed = raw[:2] == _GZIP_MAGIC
    expected_ndim = 3 if magic == IMAGE_MAGIC else 1
    header_size = 4 + 4 * expected_ndim
    # a compressed file is inflated no further than its header announces (plus one byte, to
    # see extra data): a small crafted .gz cannot expand into gigabytes
    data, gz_problem = gunzip(raw, header_size) if compressed else (raw, None)
    if len(data) >= 4:
        found = struct.unpack(">I", data[:4])[0]
        if found != magic:
            kind = _KINDS.get(found, "not an unsigned-byte IDX file of this kind")
            raise DataError(f"wrong magic number {found} ({found:#010x}): expected {magic} for "
                            f"{_KINDS[magic]}; this is {kind}", path)
    if len(data) < header_size:
        why = gz_problem or "the file is too short"
        raise DataError(f"the header is cut off ({why}); get the file again", path)
    dims = struct.unpack(f">{expected_ndim}I", data[4:header_size])
    count = dims[0]
    record_size = int(np.prod(dims[1:], dtype=np.int64)) if expected_ndim > 1 else 1
    expected = count * record_size
    if expected > max_idx_bytes():
        raise DataError(f"the header announces {count:,} records of {record_size:,} bytes "
                        f"({expected / 2**30:.1f} GiB), more than the limit of "
                        f"{max_idx_bytes() / 2**30:.1f} GiB; set {MAX_IDX_BYTES_ENV} (bytes) "
                        "to allow more", path)
    if compressed:
        data, gz_problem = gunzip(raw, header_size + expected)
    body = memoryview(data)[header_size:]
    if len(body) < expected or (gz_problem and record_size > 0):
        record = min(len(body) // max(record_size, 1) + 1, max(count, 1))
        why = gz_problem or "the file is too short"
        raise DataError(f"the data ends inside record {record} of {count} ({why}); "
                        "get the file again", path, record)
    if len(body) > expected:
        extra = "more data" if compressed else f"{len(body) - expected} extra bytes"
        raise DataError(f"{extra} after the {count} records the header announces; get the "
                        "file again", path)
    array = np.frombuffer(body, dtype=np.uint8, count=expected)
    return array.reshape(dims).copy() if expected_ndim > 1 else array.copy()


def idx_count(path: str | os.PathLike[str], magic: int) -> int:
    """The record count in the header of an IDX file (cheap: reads a few bytes only)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == _GZIP_MAGIC:
            with gzip.open(path, "rb") as fh:
                header = fh.read(8)
        else:
            with open(path, "rb") as fh:
                header = fh.read(8)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read the header ({exc})", path) from None
    if len(header) < 8:
        raise DataError("the header is cut off; get the file again", path)
    found, count = struct.unpack(">II", header)
    if found != magic:
        raise DataError(f"wrong magic number {found}: expected {magic} for {_KINDS[magic]}", path)
    return int(count)


def gunzip(raw: bytes, limit: int | None = None) -> tuple[bytes, str | None]:
    """Decompress (possibly multi-member) gzip data as far as it goes, and never more than
    ``limit + 1`` bytes when a limit is given (one byte past it shows there is more).

    Returns what was decompressed, and ``None`` or why it stopped early (a stop at the limit
    is not a problem: the caller compares the length with what it expects).
    """
    parts: list[bytes] = []
    total = 0
    room = None if limit is None else limit + 1
    rest = raw
    while rest[:2] == _GZIP_MAGIC:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while not inflater.eof and (pending or inflater.unconsumed_tail):
                chunk = inflater.unconsumed_tail or pending[:_CHUNK]
                if not inflater.unconsumed_tail:
                    pending = pending[_CHUNK:]
                want = _CHUNK if room is None else min(_CHUNK, room - total)
                out = inflater.decompress(chunk, want)
                parts.append(out)
                total += len(out)
                if room is not None and total >= room:
                    return b"".join(parts), None
        except zlib.error as exc:
            return b"".join(parts), f"corrupt gzip data: {exc}"
        if not inflater.eof:
            return b"".join(parts), "truncated gzip file"
        rest = inflater.unused_data + pending
    return b"".join(parts), None


def _find(root: Path, base: str) -> Path | None:
    """``root/base`` in any accepted spelling (``.gz``, ``train-images.idx3-ubyte``)."""
    dotted = base.replace("-idx", ".idx")
    for name in (base, base + ".gz", dotted, dotted + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def locate_idx(split: str, data_dir: str | os.PathLike[str] | None = None,
               name: str = "idx") -> tuple[Path, Path]:
    """``(images file, labels file)`` of ``split`` from the first folder holding both."""
    roots = search_roots(name, data_dir)
    image_base, label_base = IDX_FILES[split]
    for root in roots:
        images, labels = _find(root, image_base), _find(root, label_base)
        if images is not None and labels is not None:
            return images, labels
    raise DataError(
        f"IDX {split} data not found: expected {image_base} and {label_base} (or the same with "
        f".gz) in {describe_roots(roots)}. Install Fashion-MNIST with `apt-get install "
        f"dataset-fashion-mnist` (found by itself in {DEBIAN_FASHION_MNIST}), or put "
        f"MNIST-format files in a folder and pass --data-dir DIR or set {DATA_ENV}=DIR"
    )


def idx_classes(folder: str | os.PathLike[str]) -> list[str]:
    """Fashion-MNIST's class names when ``folder``'s path mentions "fashion", else digits."""
    text = str(Path(folder).expanduser().absolute()).lower()
    return list(FASHION_CLASSES) if "fashion" in text else list(DIGIT_CLASSES)


def load_idx_arrays(split: str, data_dir: str | os.PathLike[str] | None = None,
                    name: str = "idx") -> tuple[np.ndarray, np.ndarray, Path]:
    """``(images (N, H, W) uint8, labels (N,) int64, folder)`` of ``split``, validated."""
    images_path, labels_path = locate_idx(split, data_dir, name)
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{len(labels)} labels, but {images_path} holds {len(images)} images; "
                        "the two files do not belong together", labels_path)
    bad = np.flatnonzero(labels >= _NUM_CLASSES)
    if bad.size:
        raise DataError(f"label {int(labels[bad[0]])} is out of range 0..{_NUM_CLASSES - 1}",
                        labels_path, int(bad[0]) + 1)
    return images, labels.astype(np.int64), images_path.parent


def load_idx(split: str, data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Split ``split`` of an IDX dataset: images ``(N, 1, H, W)`` float32 in [0, 1]."""
    images, labels, folder = load_idx_arrays(split, data_dir)
    tensor = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
    return ImageDataset(name="idx", split=split, images=tensor, labels=torch.from_numpy(labels),
                        classes=idx_classes(folder), source=str(folder))
