"""Build ``zoo/data/fashion_sample.npz``: the embedded sample of real Fashion-MNIST images.

Usage (from the repository root, Fashion-MNIST installed with
``apt-get install dataset-fashion-mnist``)::

    python scripts/make_sample.py                   # writes zoo/data/fashion_sample.npz
    python scripts/make_sample.py --check           # rebuilds in memory, compares bytes

For each split and each of the 10 classes, ``--train-per-class`` (240) / ``--test-per-class``
(100) images are drawn without replacement, uniformly among that class's images, by the
generator ``epdo.zoo.data.rotate.seeded_rng(seed, "sample", split, "draw")`` (classes in
order 0..9); the chosen images are stored in their original order, as uint8, with their
labels and their indices in the source split (see ``epdo/zoo/data/sample.py`` for the
format). The output is deterministic: the same source files and seed give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from epdo.zoo.data.idx import IMAGE_MAGIC, LABEL_MAGIC, gunzip, locate_idx, read_idx
from epdo.zoo.data.locations import DEBIAN_FASHION_MNIST
from epdo.zoo.data.rotate import seeded_rng

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "zoo" / "data" / "fashion_sample.npz"
MAX_BYTES = 2_000_000
NUM_CLASSES = 10


def _digests(path: Path) -> dict[str, str]:
    """SHA-256 of the file and of its decompressed content."""
    raw = path.read_bytes()
    content = gunzip(raw)[0] if raw[:2] == b"\x1f\x8b" else raw
    return {"file": path.name, "sha256": hashlib.sha256(raw).hexdigest(),
            "sha256_uncompressed": hashlib.sha256(content).hexdigest()}


def draw(labels: np.ndarray, per_class: int, seed: int, split: str) -> np.ndarray:
    """Sorted indices: ``per_class`` of each class, drawn without replacement."""
    rng = seeded_rng(seed, "sample", split, "draw")
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate(chosen))


def build(source: Path, per_class: dict[str, int], seed: int) -> bytes:
    """The bytes of the sample archive."""
    arrays: dict[str, np.ndarray] = {}
    files = []
    for split, count in per_class.items():
        images_path, labels_path = locate_idx(split, source)
        images = read_idx(images_path, IMAGE_MAGIC)
        labels = read_idx(labels_path, LABEL_MAGIC)
        index = draw(labels, count, seed, split)
        arrays[f"{split}_images"] = images[index]
        arrays[f"{split}_labels"] = labels[index].astype(np.uint8)
        arrays[f"{split}_index"] = index.astype(np.int64)
        files += [_digests(images_path), _digests(labels_path)]
    provenance = {
        "dataset": "Fashion-MNIST (github.com/zalandoresearch/fashion-mnist), MIT licence, "
                   "Copyright (c) 2017 Zalando SE",
        "source_folder": str(source),
        "files": files,
        "seed": seed,
        "per_class": per_class,
        "selection": "per split and class 0..9: rng.choice(indices of the class, per_class, "
                     "replace=False) with rng = epdo.zoo.data.rotate.seeded_rng(seed, 'sample', "
                     "split, 'draw'); stored sorted by index",
        "builder": "scripts/make_sample.py",
    }
    arrays["provenance"] = np.array(json.dumps(provenance, sort_keys=True))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST,
                        help="folder with Fashion-MNIST's four IDX gz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-per-class", type=int, default=240)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 unless --out has exactly these bytes")
    args = parser.parse_args(argv)

    data = build(args.source, {"train": args.train_per_class, "test": args.test_per_class},
                 args.seed)
    digest = hashlib.sha256(data).hexdigest()
    print(f"{len(data):,} bytes, sha256 {digest}")
    if len(data) > MAX_BYTES:
        print(f"error: larger than {MAX_BYTES:,} bytes; draw fewer images", file=sys.stderr)
        return 1
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == data
        print(f"{args.out}: {'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1
    args.out.write_bytes(data)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
