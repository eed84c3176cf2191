"""A segmentation folder: images and their masks, paired by name, its classes and its split.

Two layouts are read (MMSegmentation's ``img_dir`` / ``ann_dir`` idea)::

    ROOT/images/a.jpg   ROOT/masks/a.png                    one set, split by a seed
    ROOT/train/images/  ROOT/train/masks/                   split folders
    ROOT/test/images/   ROOT/test/masks/                    (val/ for test/)
    ROOT/classes.txt                                        optional: the class names

An image is any file below ``images/`` (at any depth) whose name ends in one of
:data:`~epdo.zoo.data.images.IMAGE_SUFFIXES`; its mask is the file below ``masks/`` with the
same relative path and name up to the suffix (``images/x/a.jpg`` pairs with
``masks/x/a.png``). A mask is a PNG whose pixel values are class indices, 255 = ignore
(:func:`~epdo.zoo.data.images.decode_mask`). Hidden files and folders are not read.

``classes.txt`` holds one class name per line (surrounding blanks stripped, UTF-8): names
must be non-empty, unique and at most :data:`~epdo.zoo.data.masks.MAX_CLASSES`; blank lines
at the end are ignored, a blank line before a name is an error (it would shift every later
class). Without it the classes are ``class_0 .. class_{K-1}``, K the largest class value
the masks hold plus one (:mod:`.seg_dataset`).

Without split folders the test split is a seeded draw of ``round(n * test_fraction)`` pairs
(at least one, at most n - 1) by :func:`~epdo.zoo.data.folder.stratified_split` with every
pair in one class: it depends only on the seed, the fraction and the image names.

What cannot pair is a *bad pair*, listed with its reason (:func:`bad_pairs_error`): an image
without a mask, a mask without an image, two images (or masks) with the same name, a mask
that is not a PNG. The folders ``images/``, ``masks/``, ``train/``, ``test/`` must resolve
inside ROOT (a symbolic link to elsewhere is refused by name); files are checked where they
are decoded (:func:`~epdo.zoo.data.folder_images.dataset_file`).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..files import open_regular
from .errors import DataError
from .folder import (
    MAX_FOLDER_FILES,
    TEST_FOLDERS,
    images_below,
    show_names,
    stratified_split,
    subfolders,
)
from .folder_dataset import DATA_RECORD
from .folder_images import dataset_file
from .images import ImageError
from .masks import MAX_CLASSES

__all__ = ["CLASSES_FILE", "SegLayout", "bad_pairs_error", "index_seg_folder", "pair_files",
           "read_classes", "seg_layout_from_record", "shown_values"]

CLASSES_FILE = "classes.txt"
MAX_CLASSES_BYTES = 1 << 16
"""The size of ``classes.txt`` at most (64 KiB: 255 names of 250 bytes)."""
_LISTED = 10
"""Bad pairs named in a refusal (the rest are counted)."""
_CONTROL = set(map(chr, range(0x20))) | {"\x7f"}


@dataclass
class SegLayout:
    """What a segmentation folder holds, before anything is decoded.

    Attributes:
        root: the folder (absolute, resolved).
        classes: the names of ``classes.txt`` (or of the run's record), None without it.
        splits: per split (``train``, ``test``), ``(image path, mask path)`` pairs sorted by
            image path (POSIX, relative to ``root``).
        layout: ``"split folders"`` or ``"seeded split"``.
        bad: ``(path, reason)`` of every file that does not pair (module docstring).
        notes: one line per thing the user should know.
    """

    root: Path
    classes: list[str] | None
    splits: dict[str, list[tuple[str, str]]]
    layout: str
    bad: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def bad_pairs_error(bad: list[tuple[str, str]], root: Path, *, skippable: bool = True
                    ) -> DataError:
    """The one refusal naming the bad pairs ``(path, reason)`` (the first :data:`_LISTED`,
    then how many more), and what to do."""
    n = len(bad)
    shown = "; ".join(f"{p}: {why}" for p, why in bad[:_LISTED])
    more = f"; and {n - _LISTED} more" if n > _LISTED else ""
    them = "them" if n > 1 else "it"
    hint = (f"; fix or remove {them}, or pass --skip-bad to train without {them} (listed in "
            f"the run folder's {DATA_RECORD})") if skippable else \
        f"; fix {them} (the run recorded these pairs in its {DATA_RECORD})"
    return DataError(f"{n} image/mask pair{'s are' if n > 1 else ' is'} bad: {shown}{more}"
                     + hint, root)


def read_classes(root: Path) -> list[str] | None:
    """The class names of ``root/classes.txt`` (module docstring), None without the file.

    Raises:
        DataError: unreadable, not UTF-8, over :data:`MAX_CLASSES_BYTES`, an empty or
            duplicate name, a control character, fewer than 2 or more than
            :data:`MAX_CLASSES` names.
    """
    path = root / CLASSES_FILE
    if not os.path.lexists(path):
        return None
    try:
        with open_regular(dataset_file(root, CLASSES_FILE)) as fh:
            raw = fh.read(MAX_CLASSES_BYTES + 1)
        if len(raw) > MAX_CLASSES_BYTES:
            raise DataError(f"is over {MAX_CLASSES_BYTES:,} bytes; it holds one class name "
                            "per line", path)
        text = raw.decode("utf-8-sig")
    except DataError:
        raise
    except ImageError as exc:
        raise DataError(f"cannot be read: {exc}", path) from None
    except UnicodeDecodeError:
        raise DataError("is not UTF-8 text; write one class name per line", path) from None
    except OSError as exc:
        raise DataError(f"cannot be read ({exc.strerror or exc})", path) from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    seen: dict[str, int] = {}
    for number, name in enumerate(lines, start=1):
        if not name:
            raise DataError("is empty; every line names one class (a blank line would shift "
                            "the classes after it)", path, number)
        if _CONTROL & set(name):
            raise DataError(f"class name {ascii(name)[:60]} holds a control character", path,
                            number)
        key = unicodedata.normalize("NFC", name)
        if key in seen:
            raise DataError(f"class name {name!r} is line {seen[key]}'s too; class names must "
                            "be unique", path, number)
        seen[key] = number
    if not 2 <= len(lines) <= MAX_CLASSES:
        raise DataError(f"names {len(lines)} class{'es' if len(lines) != 1 else ''}; a "
                        f"segmentation needs 2 to {MAX_CLASSES} (mask values 0..254, 255 is "
                        "ignore)", path)
    return lines


def _check_inside(folders: list[Path], base: Path) -> None:
    """Every folder resolves strictly inside ``base`` and no two to the same folder
    (DataError naming the first that does not)."""
    seen: dict[Path, Path] = {}
    for folder in folders:
        real = folder.resolve()
        shown = f"{folder.relative_to(base).as_posix()}/ leads to {real}"
        if not real.is_relative_to(base) or real == base:
            raise DataError(f"{shown} (through a symbolic link), outside the dataset folder; "
                            "it must be a folder inside it", base)
        if real in seen:
            raise DataError(f"{shown}, as {seen[real].relative_to(base).as_posix()}/ does; "
                            "images and masks need folders of their own", base)
        seen[real] = folder


def _key(path: str, prefix: str) -> str:
    """The name an image or mask pairs by: its path below ``prefix``, without suffix."""
    return str(PurePosixPath(path[len(prefix):]).with_suffix(""))


def _group(paths: list[str], prefix: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(_key(path, prefix), []).append(path)
    return groups


def pair_files(folder: Path, base: Path) -> tuple[list[tuple[str, str]],
                                                  list[tuple[str, str]], int]:
    """The ``(image, mask)`` pairs of ``folder/images`` and ``folder/masks`` (paths relative
    to ``base``, sorted by image), the bad ones ``(path, reason)``, and how many files there
    are not images by their name."""
    image_dir, mask_dir = folder / "images", folder / "masks"
    images, other_images = images_below(image_dir, base)
    masks, other_masks = images_below(mask_dir, base)
    shown_images = image_dir.relative_to(base).as_posix()
    shown_masks = mask_dir.relative_to(base).as_posix()
    by_image = _group(images, shown_images + "/")
    by_mask = _group(masks, shown_masks + "/")
    pairs: list[tuple[str, str]] = []
    bad: list[tuple[str, str]] = []
    for key in sorted(set(by_image) | set(by_mask)):
        found, given = by_image.get(key, []), by_mask.get(key, [])
        if len(found) > 1:
            bad.append((found[0], f"{len(found)} images are named {key} "
                        f"({', '.join(found)}); keep one"))
        elif len(given) > 1:
            bad.append((given[0], f"{len(given)} masks are named {key} "
                        f"({', '.join(given)}); keep one"))
        elif not given:
            bad.append((found[0], f"no mask ({shown_masks}/{key}.png is missing)"))
        elif not found:
            bad.append((given[0], f"no image named {key} in {shown_images}/ for this mask"))
        elif not given[0].lower().endswith(".png"):
            bad.append((found[0], f"its mask {given[0]} is not a PNG; a mask is a PNG "
                        "(lossless: a JPEG would change the class values)"))
        else:
            pairs.append((found[0], given[0]))
    pairs.sort()
    return pairs, bad, other_images + other_masks


def _find_layout(base: Path) -> tuple[str, dict[str, Path], list[str]]:
    """``(layout, folder of each split, notes)``; DataError when neither layout is there."""
    names = set(subfolders(base))
    test = next((t for t in TEST_FOLDERS if t in names), None)
    if "train" in names and test is not None:
        notes = [f"{n}/ is left out: with train/ and {test}/ present, only they are read"
                 for n in sorted(names - {"train", test})]
        return "split folders", {"train": base / "train", "test": base / test}, notes
    if "images" in names or "masks" in names:
        return "seeded split", {"train": base}, []
    raise DataError("holds neither images/ and masks/ nor train/ and test/ (or val/) folders "
                    "holding them; put each image in images/ and its mask, a PNG of class "
                    "indices with the same name, in masks/", base)


def index_seg_folder(root: str | os.PathLike[str], *, seed: int = 0,
                     test_fraction: float = 0.2,
                     progress: Callable[[str, int, int], None] | None = None) -> SegLayout:
    """Index and pair the files of a segmentation folder and split them (module docstring);
    nothing is decoded. ``progress("indexing ...", done, total)`` follows the splits.

    Raises:
        DataError: the folder is missing, holds neither layout, lacks ``images/`` or
            ``masks/``, a folder leads outside it, ``classes.txt`` is invalid, no pair is
            found (the bad pairs listed), more than :data:`~.folder.MAX_FOLDER_FILES` pairs,
            or an empty test split.
    """
    given = Path(os.path.expanduser(os.fspath(root)))
    base = given.resolve()
    if not base.is_dir():
        what = "is not a folder" if base.exists() else "does not exist"
        raise DataError(f"the segmentation folder {what}; give the folder that holds images/ "
                        "and masks/ (--dataset seg:PATH)", given)
    layout, folders, notes = _find_layout(base)
    checked = [f for f in folders.values() if f != base]
    for folder in folders.values():
        for name in ("images", "masks"):
            if not (folder / name).is_dir():
                raise DataError(f"has no {name}/ folder; a segmentation folder holds images/ "
                                "and masks/ side by side", folder)
            checked.append(folder / name)
    _check_inside(checked, base)
    classes = read_classes(base)
    found: dict[str, list[tuple[str, str]]] = {}
    bad: list[tuple[str, str]] = []
    others = 0
    for done, (split, folder) in enumerate(folders.items(), start=1):
        pairs, wrong, other = pair_files(folder, base)
        found[split], others = pairs, others + other
        bad += wrong
        if progress is not None:
            progress("indexing image/mask pairs", done, len(folders))
    if not found["train"]:
        if bad:
            raise bad_pairs_error(bad, base)
        raise DataError("holds no images; put each image in images/ and its mask in masks/",
                        folders["train"] / "images")
    if sum(len(p) for p in found.values()) > MAX_FOLDER_FILES:
        raise DataError(f"holds more than {MAX_FOLDER_FILES:,} image/mask pairs, more than "
                        "a dataset may hold; train on a subset", base)
    if others:
        notes.append(f"{others} file{'s' if others > 1 else ''} in images/ and masks/ "
                     f"{'are' if others > 1 else 'is'} not an image by its name and left out")
    if layout == "seeded split":
        masks = dict(found["train"])
        split = stratified_split([(image, 0) for image in masks], 1, test_fraction, seed)
        splits = {s: [(image, masks[image]) for image, _ in split[s]] for s in split}
    else:
        splits = found
    if not splits["test"]:
        raise DataError(f"the test split is empty ({layout}); add test images"
                        + (" (a seeded split needs two pairs or more)"
                           if layout == "seeded split" else ""), base)
    return SegLayout(base, classes, splits, layout, bad, notes)


def seg_layout_from_record(record: dict[str, Any], root: str | os.PathLike[str]) -> SegLayout:
    """The layout a run recorded (a ``data.json`` read by
    :func:`~.folder_dataset.read_record` with ``task="segment"``) in the folder ``root``."""
    base = Path(os.path.expanduser(os.fspath(root))).resolve()
    if not base.is_dir():
        raise DataError("the run's segmentation folder is not there; if it moved, give its "
                        "new place with --data-dir", base)
    splits = {s: [(str(i), str(m)) for i, m in record[s]] for s in ("train", "test")}
    return SegLayout(base, list(record["classes"]), splits, str(record["layout"]))


def shown_values(values: list[int]) -> str:
    """Class values for a message: the first few, then how many more."""
    return show_names([str(v) for v in values])
