"""The ``seg`` dataset: a segmentation folder (:mod:`.seg_folder`) decoded into memory as
train and test :class:`~.masks.MaskDataset` splits, and the record of exactly which pairs
they are.

:func:`load_seg_folder` indexes and pairs the folder, checks that the decoded data fits the
memory budget (:func:`~.folder_dataset.memory_budget`; segmentation data is always held in
memory, as uint8: N·(C·H·W + H·W) bytes), decodes every pair once — the image by the one
image reader (:func:`~.images.decode_image`) with the spec's fit, the mask by
:func:`~.images.decode_mask` with the same fit and nearest sampling — and checks it:

- the image and its mask have the same size in their files (before the fit);
- every mask value is a class of ``classes.txt`` (or of the run's record), or 255 (ignore);
  without ``classes.txt`` the classes are ``class_0 .. class_{K-1}``, K the largest value
  any mask holds plus one (at least 2);
- both files decode, and the mask is a grayscale or palette PNG.

Every bad pair of both splits is listed in one :class:`~.errors.DataError`
(:func:`~.seg_folder.bad_pairs_error`), or left out with ``skip_bad`` (and named in a note
and the record). The training split's per-channel mean and std (of ``pixels / 255``) are
computed for ``mean: auto`` / ``std: auto``.

:meth:`SegFolderData.record` is the run's ``data.json`` (format
:data:`~.folder_dataset.SEG_RECORD_FORMAT`, ``"task": "segment"``): the classes and where
they came from, the input the pairs were decoded for, the seed and test fraction, the
statistics, the ``[image, mask]`` pairs of each split and the skipped ones. Given back as
``record=`` (read by :func:`read_seg_record`), it reproduces the splits exactly, whatever
was added to the folder since; then every pair must decode and fit the recorded classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import DataError
from .folder_dataset import (
    SEG_RECORD_FORMAT,
    Progress,
    channel_notes,
    memory_budget,
    mib,
    read_record,
)
from .folder_images import PixelSettings, dataset_file
from .images import ImageError, decode_image, decode_mask
from .masks import IGNORE, MaskDataset
from .seg_folder import (
    CLASSES_FILE,
    SegLayout,
    bad_pairs_error,
    index_seg_folder,
    seg_layout_from_record,
    shown_values,
)
from .statistics import channel_statistics

__all__ = ["SegFolderData", "load_seg_folder", "load_seg_split", "read_seg_record"]

_REPORT_EVERY = 64
"""Pairs decoded between two progress reports."""


@dataclass
class SegFolderData:
    """A segmentation folder ready to train on.

    Attributes:
        train, test: the splits (:class:`~.masks.MaskDataset`, uint8 in memory).
        classes: the class names.
        root: the folder.
        layout: ``"split folders"`` or ``"seeded split"`` (or as recorded).
        settings: the input the images were decoded for.
        seed, test_fraction: the split's settings.
        pairs: per split, the ``(image, mask)`` paths of its rows, in order.
        skipped: ``(path, reason)`` of the bad pairs left out (only with ``skip_bad``).
        mean, std: per channel, of ``pixels / 255`` over the training images.
        classes_from: ``"classes.txt"``, ``"mask values"`` or ``"record"``.
        notes: one line per thing the user should know.
    """

    train: MaskDataset
    test: MaskDataset
    classes: list[str]
    root: Path
    layout: str
    settings: PixelSettings
    seed: int
    test_fraction: float
    pairs: dict[str, list[tuple[str, str]]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    classes_from: str = "classes.txt"
    notes: list[str] = field(default_factory=list)

    @property
    def in_memory(self) -> bool:
        """Always: segmentation data is held in memory (or refused)."""
        return True

    @property
    def info(self) -> dict[str, dict[str, Any]]:
        """Per split, what the run summary shows: the number of pairs and of labelled
        (not ignored) pixels."""
        return {split: {"pairs": len(ds), "labelled_pixels": int(ds.class_pixels().sum())}
                for split, ds in (("train", self.train), ("test", self.test))}

    def record(self) -> dict[str, Any]:
        """The JSON record written as the run folder's ``data.json`` (module docstring)."""
        s = self.settings
        return {
            "format": SEG_RECORD_FORMAT, "task": "segment", "root": str(self.root),
            "layout": self.layout, "classes": list(self.classes),
            "classes_from": self.classes_from, "ignore": IGNORE,
            "input": {"channels": s.channels, "size": list(s.size), "fit": s.fit},
            "seed": self.seed, "test_fraction": self.test_fraction,
            "mean": self.mean, "std": self.std,
            "train": [[i, m] for i, m in self.pairs["train"]],
            "test": [[i, m] for i, m in self.pairs["test"]],
            "skipped": [[p, why] for p, why in self.skipped],
        }


def read_seg_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A segmentation run's ``data.json``, checked (:func:`~.folder_dataset.read_record`
    with ``task="segment"``). Raises DataError."""
    return read_record(path, task="segment")


@dataclass
class _Decoded:
    """One split's pairs decoded: rows ``good`` (indices into the split's pairs) of the
    preallocated ``images`` / ``masks``, each good row's mask values, the bad pairs and the
    images' own channel counts."""

    images: torch.Tensor
    masks: torch.Tensor
    good: list[int] = field(default_factory=list)
    values: list[tuple[int, ...]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    channels: dict[int, int] = field(default_factory=dict)


def _decode_pair(root: Path, image: str, mask: str, settings: PixelSettings, out_image: Any,
                 out_mask: Any) -> tuple[int, tuple[int, ...]]:
    """Decode one pair into ``out_image`` (C, H, W) and ``out_mask`` (H, W); ``(the image's
    own channels, the mask's values)``. ImageError with the reason when it is bad."""
    problems = []
    info = mask_info = None
    try:
        pixels, info = decode_image(dataset_file(root, image), settings.channels,
                                    settings.size, settings.fit)
        out_image.copy_(torch.from_numpy(pixels))
    except (ImageError, OSError) as exc:
        problems.append(f"the image: {getattr(exc, 'strerror', None) or exc}")
    try:
        values, mask_info = decode_mask(dataset_file(root, mask), settings.size, settings.fit)
        out_mask.copy_(torch.from_numpy(values))
    except (ImageError, OSError) as exc:
        problems.append(f"its mask {mask}: {getattr(exc, 'strerror', None) or exc}")
    if problems:
        raise ImageError("; ".join(problems))
    assert info is not None and mask_info is not None
    if (info.width, info.height) != (mask_info.width, mask_info.height):
        raise ImageError(f"its mask {mask} is {mask_info.width}x{mask_info.height} pixels, "
                         f"the image {info.width}x{info.height}; a mask has its image's size")
    return info.channels, mask_info.values


def _decode_split(layout: SegLayout, split: str, settings: PixelSettings,
                  progress: Progress | None) -> _Decoded:
    pairs = layout.splits[split]
    n, (h, w) = len(pairs), settings.size
    out = _Decoded(torch.empty((n, settings.channels, h, w), dtype=torch.uint8),
                   torch.empty((n, h, w), dtype=torch.uint8))
    for i, (image, mask) in enumerate(pairs):
        try:
            channels, values = _decode_pair(layout.root, image, mask, settings,
                                            out.images[i], out.masks[i])
        except ImageError as exc:
            out.bad.append((image, str(exc)))
        else:
            out.good.append(i)
            out.values.append(values)
            out.channels[channels] = out.channels.get(channels, 0) + 1
        if progress is not None and ((i + 1) % _REPORT_EVERY == 0 or i + 1 == n):
            progress(f"decoding {split} image/mask pairs", i + 1, n)
    return out


def _classes(layout: SegLayout, decoded: dict[str, _Decoded], record: bool
             ) -> tuple[list[str], str]:
    """The class names and where they came from; without names, from the largest value."""
    if layout.classes is not None:
        return list(layout.classes), "record" if record else CLASSES_FILE
    top = max((v for d in decoded.values() for values in d.values for v in values
               if v != IGNORE), default=0)
    return [f"class_{k}" for k in range(top + 1)], "mask values"


def _check_values(layout: SegLayout, decoded: _Decoded, split: str, classes: int,
                  source: str) -> None:
    """Move the pairs whose masks hold values beyond ``classes`` (other than 255) to bad."""
    keep_good, keep_values = [], []
    for i, values in zip(decoded.good, decoded.values, strict=True):
        beyond = [v for v in values if classes <= v != IGNORE]
        if beyond:
            image, mask = layout.splits[split][i]
            where = "the run's data.json" if source == "record" else CLASSES_FILE
            decoded.bad.append((image, f"its mask {mask} holds class value"
                                f"{'s' if len(beyond) > 1 else ''} {shown_values(beyond)}, "
                                f"beyond the {classes} classes of {where} (0..{classes - 1}; "
                                f"{IGNORE} is ignore)"))
        else:
            keep_good.append(i)
            keep_values.append(values)
    decoded.good, decoded.values = keep_good, keep_values


def _dataset(layout: SegLayout, split: str, decoded: _Decoded, classes: list[str]
             ) -> tuple[MaskDataset, list[tuple[str, str]]]:
    """The split's good rows as a dataset (no copy when every row is good), and their
    pairs."""
    pairs = layout.splits[split]
    if not decoded.good:
        raise DataError(f"no image/mask pair of the {split} split can be used", layout.root)
    images, masks = decoded.images, decoded.masks
    if len(decoded.good) < len(pairs):
        index = torch.tensor(decoded.good, dtype=torch.int64)
        images, masks = images[index], masks[index]
    good = [pairs[i] for i in decoded.good]
    dataset = MaskDataset("seg", split, images, masks, list(classes), str(layout.root),
                          files=[image for image, _ in good])
    return dataset, good


def _check_budget(layout: SegLayout, splits: tuple[str, ...], settings: PixelSettings,
                  budget: int) -> None:
    n = sum(len(layout.splits[s]) for s in splits)
    need = n * (settings.image_bytes + settings.size[0] * settings.size[1])
    if need > budget:
        h, w = settings.size
        raise DataError(f"{n:,} image/mask pairs take {mib(need)} decoded ({settings.channels}"
                        f"x{h}x{w} image + {h}x{w} mask each, uint8), over the memory budget of "
                        f"{mib(budget)}; segmentation data is held in memory: raise "
                        "--memory-budget (or $EPDO_DATA_MEMORY), use a smaller input size, or "
                        "train on a subset", layout.root)


def _decode_checked(layout: SegLayout, splits: tuple[str, ...], settings: PixelSettings,
                    budget: int | None, record: bool, progress: Progress | None
                    ) -> tuple[dict[str, _Decoded], list[str], str]:
    """Every pair of ``splits`` decoded (budget checked first), mask values checked against
    the classes; ``(decoded per split, classes, where the classes came from)``."""
    _check_budget(layout, splits, settings, memory_budget() if budget is None else budget)
    decoded = {s: _decode_split(layout, s, settings, progress) for s in splits}
    classes, source = _classes(layout, decoded, record)
    for split in splits:
        _check_values(layout, decoded[split], split, len(classes), source)
    return decoded, classes, source


def _layout(root: str | os.PathLike[str], record: dict[str, Any] | None, seed: int,
            test_fraction: float, progress: Progress | None) -> SegLayout:
    if record is None:
        return index_seg_folder(root, seed=seed, test_fraction=test_fraction,
                                progress=progress)
    return seg_layout_from_record(record, root)


def load_seg_folder(
    root: str | os.PathLike[str],
    settings: PixelSettings,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    skip_bad: bool = False,
    budget: int | None = None,
    record: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> SegFolderData:
    """Index, pair, decode and check a segmentation folder (module docstring).

    Args:
        root: the folder (``~`` is expanded).
        settings: the model input's channels (1 or 3), size ``(H, W)`` and fit.
        seed, test_fraction: the seeded split, when the folder has no split folders.
        skip_bad: leave the bad pairs out (named in ``skipped`` and a note) instead of
            refusing them.
        budget: bytes the decoded splits may take (default
            :func:`~.folder_dataset.memory_budget`); more is refused before decoding.
        record: a run's ``data.json`` (:func:`read_seg_record`): its pairs and classes are
            used instead of indexing the folder; every pair must be good.
        progress: called with ``(what, done, total)`` while indexing and decoding.

    Returns:
        :class:`SegFolderData`: train and test ``(N, C, H, W)`` uint8 images and
        ``(N, H, W)`` uint8 masks (class indices, 255 ignore).

    Raises:
        DataError: layout problems (:func:`~.seg_folder.index_seg_folder`), over the memory
            budget, bad pairs (unless ``skip_bad``), fewer than 2 classes, a split left empty.
    """
    layout = _layout(root, record, seed, test_fraction, progress)
    decoded, classes, source = _decode_checked(layout, ("train", "test"), settings, budget,
                                               record is not None, progress)
    bad = layout.bad + decoded["train"].bad + decoded["test"].bad
    if bad and (not skip_bad or record is not None):
        raise bad_pairs_error(bad, layout.root, skippable=record is None)
    if len(classes) < 2:
        raise DataError("every mask holds class 0 only (or ignore); a segmentation needs two "
                        f"classes or more (write their names in {CLASSES_FILE}, one per "
                        "line)", layout.root)
    train, train_pairs = _dataset(layout, "train", decoded["train"], classes)
    test, test_pairs = _dataset(layout, "test", decoded["test"], classes)
    counts: dict[int, int] = {}
    for d in decoded.values():
        for c, k in d.channels.items():
            counts[c] = counts.get(c, 0) + k
    notes = list(layout.notes) + channel_notes(counts, settings)
    if source == "mask values":
        notes.append(f"no {CLASSES_FILE}: {len(classes)} classes named class_0 .. "
                     f"class_{len(classes) - 1} after the largest mask value (write "
                     f"{CLASSES_FILE}, one name per line, to name them)")
    if bad:
        notes.append(f"{len(bad)} bad image/mask pair{'s are' if len(bad) > 1 else ' is'} left "
                     "out (--skip-bad): " + ", ".join(p for p, _ in bad[:3])
                     + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""))
    mean, std = channel_statistics(train.images)
    skipped = bad + [(str(p), str(why)) for p, why in (record or {}).get("skipped", [])]
    return SegFolderData(train, test, classes, layout.root, layout.layout, settings, seed,
                         test_fraction, {"train": train_pairs, "test": test_pairs}, skipped,
                         mean, std, source, notes)


def load_seg_split(
    root: str | os.PathLike[str],
    settings: PixelSettings,
    split: str,
    *,
    record: dict[str, Any] | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    budget: int | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> MaskDataset:
    """One split of a segmentation folder (``epdo eval``, export verification): the run's
    recorded pairs and classes when ``record`` is given, else the folder indexed and split as
    :func:`load_seg_folder` does (classes from ``classes.txt`` or, without it, from this
    split's masks); ``limit`` keeps the first pairs only. Every pair must be good (else one
    DataError listing the bad ones)."""
    layout = _layout(root, record, seed, test_fraction, progress)
    if limit is not None:
        layout.splits[split] = layout.splits[split][:limit]
    decoded, classes, _ = _decode_checked(layout, (split,), settings, budget,
                                          record is not None, progress)
    bad = decoded[split].bad  # files that pair with nothing are in no split
    if bad:
        raise bad_pairs_error(bad, layout.root, skippable=False)
    if len(classes) < 2:
        raise DataError(f"every mask of the {split} split holds class 0 only; name the classes "
                        f"in {CLASSES_FILE}", layout.root)
    return _dataset(layout, split, decoded[split], classes)[0]
