"""Tiny dataset fixtures written in the real file formats (used by tests/test_data_*.py).

- ``.amat``: one image per line, 784 pixel values then the label, ``%.6e`` like MNIST-rot;
- IDX: big-endian header written with ``struct`` (magic, sizes), uint8 body, gzip or not;
- CIFAR: dicts with byte-string keys pickled exactly like the python-version batches.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

TRAIN_AMAT = "mnist_all_rotation_normalized_float_train_valid.amat"
TEST_AMAT = "mnist_all_rotation_normalized_float_test.amat"


def amat_rows(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (count, 784) float32 in [0, 1] with many zeros, labels (count,) int)``."""
    rng = np.random.default_rng(seed)
    pixels = rng.random((count, 784)).astype(np.float32)
    pixels[pixels < 0.6] = 0.0
    return pixels, rng.integers(0, 10, count)


def amat_text(pixels: np.ndarray, labels: np.ndarray) -> str:
    """The ``.amat`` text of the rows: 785 ``%.6e`` values per line."""
    lines = []
    for row, label in zip(pixels, labels, strict=True):
        lines.append(" ".join(f"{v:.6e}" for v in row) + f" {float(label):.6e}")
    return "\n".join(lines) + "\n"


def write_amat_pair(folder: Path, train: int = 5, test: int = 3) -> dict[str, tuple]:
    """Both MNIST-rot files in ``folder``; returns ``{split: (pixels, labels)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": amat_rows(train, 1), "test": amat_rows(test, 2)}
    (folder / TRAIN_AMAT).write_text(amat_text(*data["train"]))
    (folder / TEST_AMAT).write_text(amat_text(*data["test"]))
    return data


def write_mnist_rot_zip(path: Path, train: int = 5, test: int = 3, prefix: str = "",
                        members: tuple[str, ...] = (TRAIN_AMAT, TEST_AMAT),
                        texts: dict[str, str] | None = None) -> dict[str, tuple]:
    """A zip like ``mnist_rotation_new.zip`` (members optionally under ``prefix``)."""
    data = {"train": amat_rows(train, 1), "test": amat_rows(test, 2)}
    texts = dict(texts or {})
    texts.setdefault(TRAIN_AMAT, amat_text(*data["train"]))
    texts.setdefault(TEST_AMAT, amat_text(*data["test"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in members:
            archive.writestr(prefix + name, texts[name])
    return data


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: ``>I`` magic, one ``>I`` per dimension, then the uint8 elements."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def blob_images(count: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """``(count, size, size)`` uint8: centred Gaussian blobs of varying width and height,
    each with a bright off-centre spot (so rotations are visible)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] - (size - 1) / 2
    out = np.empty((count, size, size), dtype=np.uint8)
    for i in range(count):
        sigma = rng.uniform(2.5, 4.0)
        image = np.exp(-(xs**2 + ys**2) / (2 * sigma**2))
        image += 0.8 * np.exp(-((xs - 5) ** 2 + ys**2) / 2.0)
        out[i] = np.clip(image * 255 / image.max(), 0, 255).astype(np.uint8)
    return out


def write_idx_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray,
                    compress: bool = True, level: int = 6) -> tuple[Path, Path]:
    """The IDX image and label files of ``split`` in ``folder`` (gzip when ``compress``)."""
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
        data = idx_bytes(array, magic)
        path = folder / (f"{prefix}-{kind}-ubyte" + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(data, compresslevel=level, mtime=0) if compress else data)
        paths.append(path)
    return paths[0], paths[1]


def write_idx_dataset(folder: Path, train: int = 40, test: int = 15,
                      compress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A small IDX dataset of blob images; returns ``{split: (images, labels)}``."""
    data = {}
    for split, count, seed in (("train", train, 3), ("test", test, 4)):
        images = blob_images(count, seed=seed)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx_split(folder, split, images, labels, compress)
        data[split] = (images, labels)
    return data


def cifar_batch(count: int, classes: int, seed: int, label_key: bytes) -> dict:
    """A batch dict as in the python-version CIFAR files."""
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        label_key: [int(v) for v in rng.integers(0, classes, count)],
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(count)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [v // 5 for v in batch[label_key]]
    return batch


def write_cifar10(root: Path, per_batch: int = 4, protocol: int = 2) -> Path:
    """``root/cifar-10-batches-py`` with five training batches, a test batch and meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = cifar_batch(per_batch if name != "test_batch" else 3, 10, i, b"labels")
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {b"label_names": [n.encode() for n in ("airplane automobile bird cat deer dog frog "
                                                  "horse ship truck").split()],
            b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


def write_cifar100(root: Path, protocol: int = 2) -> Path:
    """``root/cifar-100-python`` with train (7 images), test (4) and meta."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").write_bytes(pickle.dumps(cifar_batch(7, 100, 0, b"fine_labels"),
                                                protocol=protocol))
    (folder / "test").write_bytes(pickle.dumps(cifar_batch(4, 100, 1, b"fine_labels"),
                                               protocol=protocol))
    meta = {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder
