"""``epdo data info folder:PATH``: what a folder of images holds, before training on it.

Every file is decoded once (as training would, so a file reported here as readable trains),
at a tiny size so that the pass costs little memory; the report gives the layout, the
classes with their image counts per split, the sizes, channel counts and bit depths found,
every file that does not decode, and the notes training would print.
"""

from __future__ import annotations

import os
from typing import Any

from .folder import index_folder
from .folder_dataset import Progress, decode_workers
from .folder_images import DecodeResult, PixelSettings, decode_files

__all__ = ["folder_info"]

_PROBE = PixelSettings(1, (4, 4), "resize")
"""Files are decoded in full but converted to 4x4 gray: the check costs no memory."""


def _merge(results: list[DecodeResult]) -> dict[str, Any]:
    channels: dict[int, int] = {}
    bits: dict[int, int] = {}
    sizes = [None, None, None, None]
    for r in results:
        for key, n in r.channel_counts.items():
            channels[key] = channels.get(key, 0) + n
        for key, n in r.bits.items():
            bits[key] = bits.get(key, 0) + n
        if r.sizes:
            lo_w, lo_h, hi_w, hi_h = r.sizes
            sizes = [lo_w if sizes[0] is None else min(sizes[0], lo_w),
                     lo_h if sizes[1] is None else min(sizes[1], lo_h),
                     hi_w if sizes[2] is None else max(sizes[2], hi_w),
                     hi_h if sizes[3] is None else max(sizes[3], hi_h)]
    return {"channels": {"grayscale": channels.get(1, 0), "colour": channels.get(3, 0)},
            "bits": {str(k): v for k, v in sorted(bits.items())},
            "smallest": None if sizes[0] is None else [sizes[0], sizes[1]],
            "largest": None if sizes[2] is None else [sizes[2], sizes[3]]}


def folder_info(root: str | os.PathLike[str], *, seed: int = 0, test_fraction: float = 0.2,
                workers: int | None = None, progress: Progress | None = None,
                ) -> dict[str, Any]:
    """A JSON-ready report of the folder dataset at ``root`` (module docstring).

    Keys: ``root``, ``layout``, ``classes`` (``[{"name", "train", "test"}]``), ``images``
    (per split), ``channels`` (files gray / colour), ``bits`` (files per bit depth),
    ``smallest`` / ``largest`` (``[width, height]``), ``bad`` (``[{"file", "error"}]``),
    ``outside`` (image files not in a class folder), ``notes``.

    Raises:
        DataError: the layout problems training refuses (no class folders, one class, an
            empty class, ...).
    """
    layout = index_folder(root, seed=seed, test_fraction=test_fraction,
                              progress=progress)
    if workers is None:
        workers = decode_workers(sum(len(v) for v in layout.splits.values()))
    results, bad = [], []
    for split in ("train", "test"):
        pairs = layout.splits[split]

        def report(done: int, total: int, split: str = split) -> None:
            if progress is not None:
                progress(f"checking {split} images", done, total)

        result = decode_files(layout.root, [p for p, _ in pairs], _PROBE, keep=False,
                              workers=workers, report=report)
        results.append(result)
        bad += [{"file": p, "error": why} for p, why in result.bad]
    counts = {s: layout.counts(s) for s in ("train", "test")}
    return {
        "root": str(layout.root), "layout": layout.layout,
        "split": None if layout.layout == "split folders" else {
            "seed": seed, "test_fraction": test_fraction},
        "classes": [{"name": name, "train": counts["train"][i], "test": counts["test"][i]}
                    for i, name in enumerate(layout.classes)],
        "images": {s: len(layout.splits[s]) for s in ("train", "test")},
        **_merge(results),
        "bad": bad, "outside": list(layout.outside), "notes": list(layout.notes),
    }
