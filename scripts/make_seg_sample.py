"""Build ``zoo/data/seg_sample.npz``: the embedded segmentation sample, derived from the
embedded Fashion-MNIST sample (``zoo/data/fashion_sample.npz``).

Usage (from the repository root; nothing else is needed)::

    python scripts/make_seg_sample.py             # writes zoo/data/seg_sample.npz
    python scripts/make_seg_sample.py --check     # rebuilds in memory, compares bytes

Each split ``S`` (``train``: 800 canvases from the sample's 2,400 training images, ``test``:
200 from its 1,000 test images) is drawn from the generator
``epdo.zoo.data.rotate.seeded_rng(seed, "seg-sample", S)``, in this order:

1. garments per canvas, uniform in {1, 2, 3}: ``rng.integers(1, 4, size=N)``;
2. the garments, without replacement (no image is used twice):
   ``rng.choice(len(images), size=total, replace=False)``, taken in order, canvas by canvas;
3. an angle per garment, uniform in [0°, 360°): ``rng.uniform(0, 360, size=total)``;
4. a place per garment: ``rng.integers(0, 64 - 40 + 1, size=(total, 2))`` = (top, left).

Each 28×28 garment (pixels / 255) is centred in a 40×40 black patch (28·√2 < 40: no part is
cut at any angle), rotated counter-clockwise about the patch centre by its angle with
``epdo.zoo.transforms.rotate_images`` (float64, bilinear, zeros outside) and laid on a black
64×64 canvas with the patch's top-left corner at its place. Where the rotated garment's
value is above ``THRESHOLD`` (0.1, i.e. 25.5 of 255: the garment, not the faint fringe
bilinear sampling spreads around it), the canvas takes that value and the mask takes the
garment's class + 1; elsewhere both stay as they were (0 = background). Later garments lie
on top (``epdo.zoo.data.seg_sample.compose``, which also gives ``seg-sample-upright``). The
canvas is stored as ``rint(value · 255)`` uint8. The output is deterministic:
the same source file and seed give the same bytes (see ``zoo/data/SEG_SAMPLE.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from epdo.zoo.data.rotate import seeded_rng
from epdo.zoo.data.sample import SAMPLE_FILE, sample_arrays
from epdo.zoo.data.seg_sample import CANVAS, MAX_GARMENTS, PATCH, THRESHOLD, compose

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "zoo" / "data" / "seg_sample.npz"
MAX_BYTES = 1_600_000
COUNTS = {"train": 800, "test": 200}


def draw(n: int, available: int, seed: int, split: str) -> dict[str, np.ndarray]:
    """The random choices of one split (module docstring): ``counts`` (n,), ``chosen``,
    ``angles`` (total,) and ``places`` (total, 2)."""
    rng = seeded_rng(seed, "seg-sample", split)
    counts = rng.integers(1, MAX_GARMENTS + 1, size=n)
    total = int(counts.sum())
    chosen = rng.choice(available, size=total, replace=False)
    angles = rng.uniform(0.0, 360.0, size=total)
    places = rng.integers(0, CANVAS - PATCH + 1, size=(total, 2))
    return {"counts": counts, "chosen": chosen, "angles": angles, "places": places}


def build(source: Path, counts: dict[str, int], seed: int) -> bytes:
    """The bytes of the segmentation sample archive."""
    arrays: dict[str, np.ndarray] = {}
    for split, n in counts.items():
        images, labels = sample_arrays(split, source)
        picks = draw(n, len(images), seed, split)
        for key, value in compose(images, labels, picks).items():
            arrays[f"{split}_{key}"] = value
    provenance = {
        "dataset": "derived from Fashion-MNIST (github.com/zalandoresearch/fashion-mnist), "
                   "MIT licence, Copyright (c) 2017 Zalando SE, through epdo's embedded "
                   "sample",
        "source": {"file": "zoo/data/fashion_sample.npz",
                   "sha256": hashlib.sha256(source.read_bytes()).hexdigest()},
        "seed": seed,
        "counts": counts,
        "canvas": CANVAS, "patch": PATCH, "max_garments": MAX_GARMENTS,
        "threshold": THRESHOLD,
        "classes": "0 background, k + 1 Fashion-MNIST class k",
        "construction": "per split: rng = epdo.zoo.data.rotate.seeded_rng(seed, 'seg-sample', "
                        "split); garments per canvas rng.integers(1, 4, N); garments "
                        "rng.choice(images, total, replace=False); angles rng.uniform(0, 360, "
                        "total); places rng.integers(0, 25, (total, 2)); each garment centred "
                        "in a 40x40 patch, rotated by rotate_images (float64, bilinear), laid "
                        "at (top, left) where its value > threshold (mask = class + 1), later "
                        "garments on top; pixels rint(value * 255)",
        "builder": "scripts/make_seg_sample.py",
    }
    arrays["provenance"] = np.array(json.dumps(provenance, sort_keys=True))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", type=Path, default=SAMPLE_FILE,
                        help="the embedded Fashion-MNIST sample (fashion_sample.npz)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train", type=int, default=COUNTS["train"])
    parser.add_argument("--test", type=int, default=COUNTS["test"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 unless --out has exactly these bytes")
    args = parser.parse_args(argv)

    data = build(args.source, {"train": args.train, "test": args.test}, args.seed)
    digest = hashlib.sha256(data).hexdigest()
    print(f"{len(data):,} bytes, sha256 {digest}")
    if len(data) > MAX_BYTES:
        print(f"error: larger than {MAX_BYTES:,} bytes; make fewer canvases", file=sys.stderr)
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
