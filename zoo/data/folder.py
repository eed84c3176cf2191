"""A folder of the user's images, one subfolder per class: its layout and its split.

Two layouts are read (torchvision's ImageFolder, with or without split folders)::

    ROOT/cat/1.png, ROOT/dog/7.jpg, ...                 one folder per class
    ROOT/train/cat/1.png, ROOT/test/cat/9.png, ...      split folders (val/ for test/)

The class names are the class folders' names in sorted order; an image is any file below a
class folder (at any depth) whose name ends in one of
:data:`~epdo.zoo.data.images.IMAGE_SUFFIXES` (any case). Hidden files and folders (a leading
``.``) are not read. With split folders, ``train/`` and ``test/`` (or ``val/``) hold the
same class folders (a test class missing from ``train/`` is an error).

Without split folders the test split is a seeded, stratified draw
(:func:`stratified_split`): in each class, ``round(n * test_fraction)`` images (at least one
and at most n - 1 when the class has two or more) chosen by a numpy PCG64 generator seeded
with ``SeedSequence(seed, spawn_key=(class index,))`` from that class's files in sorted
order. The draw depends only on the seed, the fraction and the file names, never on the
order the file system lists them in.

Problems with the layout (:func:`index_folder`) are one :class:`~.errors.DataError` line
each: no class folders, a single class, an empty class; image files outside the class
folders are left out and named in :attr:`FolderLayout.notes`.

Links and names are checked before anything is walked or read:

- a class folder (or a split folder holding it) that is a symbolic link must resolve to a
  folder inside the dataset folder, not to the folder holding it or one above it (which
  would take every image, or the whole file system, into one class), and not to the folder
  of another class: otherwise it is refused by name, always; symbolic links to folders
  below a class folder are not followed;
- a symbolic link to an image file is read only when it resolves inside the dataset folder;
  one that leads outside is a file that cannot be read (listed, or left out with
  ``--skip-bad``), checked where files are decoded (:mod:`.folder_images`);
- class folder names that differ only in their Unicode normalisation (``é`` as one code
  point, NFC, or as ``e`` plus a combining accent, NFD) would be two classes that print
  the same: they are refused by name, not merged, since merging would silently put two
  folders' images under one label that the user never wrote; renaming one folder is a
  deliberate choice.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .images import IMAGE_SUFFIXES

__all__ = [
    "FolderLayout",
    "MAX_FOLDER_FILES",
    "SPLIT_FOLDERS",
    "TEST_FOLDERS",
    "images_below",
    "index_folder",
    "show_names",
    "stratified_split",
    "subfolders",
]

MAX_FOLDER_FILES = 1_000_000
"""Image files a folder dataset may hold (both splits): a generous bound for the datasets a
PDO classifier is trained on here, and the file count a run's ``data.json`` may record
(:data:`~epdo.zoo.data.folder_dataset.MAX_RECORD_BYTES` is derived from it), so that every
folder that trains gives a record that reads back."""
SPLIT_FOLDERS = ("train", "test", "val")
TEST_FOLDERS = ("test", "val")
"""The folder read as the test split, in order of preference."""
_SHOWN = 3


@dataclass
class FolderLayout:
    """What a folder dataset holds, before any image is decoded.

    Attributes:
        root: the folder (absolute).
        classes: the class names (sorted); label ``i`` is ``classes[i]``.
        splits: per split (``train``, ``test``), ``(relative path, label)`` pairs in order
            (paths are POSIX, relative to ``root``).
        layout: ``"split folders"`` or ``"seeded split"``.
        outside: image files not in a class folder (relative paths), left out.
        other_files: how many files below class folders are not images by their suffix.
        notes: one line per thing the user should know (files left out, a class with one
            image, ...).
    """

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]
    layout: str
    outside: list[str] = field(default_factory=list)
    other_files: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self, split: str) -> list[int]:
        """Images per class in ``split``."""
        out = [0] * len(self.classes)
        for _, label in self.splits[split]:
            out[label] += 1
        return out


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def subfolders(folder: Path) -> list[str]:
    """The visible subfolders of ``folder`` (names, sorted); DataError when it cannot be
    listed."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"cannot list the folder ({exc.strerror or exc})", folder) from None
    return sorted(e.name for e in entries if _visible(e.name) and e.is_dir())


def _loose_images(folder: Path) -> list[str]:
    """Image files directly in ``folder`` (not in a class folder)."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"cannot list the folder ({exc.strerror or exc})", folder) from None
    return sorted(e.name for e in entries
                  if _visible(e.name) and _is_image(e.name) and not e.is_dir())


def images_below(folder: Path, root: Path) -> tuple[list[str], int]:
    """Image files anywhere below ``folder`` (paths relative to ``root``, sorted) and the
    number of other files. Symbolic links to folders are not followed (no loops)."""
    images: list[str] = []
    others = 0
    for parent, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        base = Path(parent).relative_to(root)
        for name in files:
            if not _visible(name):
                continue
            if _is_image(name):
                images.append((base / name).as_posix())
            else:
                others += 1
    return sorted(images), others


def _check_class_folders(folder: Path, names: list[str], base: Path) -> None:
    """The class folders ``names`` of ``folder`` each resolve strictly inside ``base``, not
    to the folder holding them or one above it, and not two to the same folder (module
    docstring); DataError naming the first that does not."""
    prefix = "" if folder == base else f"{folder.relative_to(base).as_posix()}/"
    holder = folder.resolve()
    seen: dict[Path, str] = {}
    for name in names:
        real = (folder / name).resolve()
        shown = f"class folder {prefix}{name}/ leads to {real} (through a symbolic link)"
        if not real.is_relative_to(base):
            raise DataError(f"{shown}, outside the image folder; class folders must be inside "
                            "it (copy or move the images in)", base)
        if holder.is_relative_to(real):
            raise DataError(f"{shown}, which holds it: its images would be every image of the "
                            "folder; point it at a folder of its own", base)
        if real in seen:
            raise DataError(f"{shown}, as class folder {prefix}{seen[real]}/ does: the same "
                            "images would be in two classes; remove one", base)
        seen[real] = name


def _check_normalisation(names: list[str], where: Path) -> None:
    """No two folder names equal under Unicode NFC (module docstring); DataError naming
    both otherwise."""
    seen: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key in seen:
            first = seen[key]
            raise DataError(f"class folders {first}/ ({ascii(first)}) and {name}/ "
                            f"({ascii(name)}) have the same name written with different "
                            "Unicode characters (NFC and NFD forms); they would be two "
                            "classes that look the same: rename or merge them", where)
        seen[key] = name


def show_names(names: list[str]) -> str:
    """The first few ``names``, and how many more there are."""
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def stratified_split(files: list[tuple[str, int]], num_classes: int, test_fraction: float,
                     seed: int) -> dict[str, list[tuple[str, int]]]:
    """Split ``(path, label)`` pairs per class into ``train`` and ``test`` (module
    docstring); each split keeps the sorted order of the paths."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"the test fraction must lie strictly between 0 and 1, got "
                        f"{test_fraction}")
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for label in range(num_classes):
        paths = sorted(p for p, y in files if y == label)
        n = len(paths)
        n_test = min(max(round(n * test_fraction), 1), n - 1) if n >= 2 else 0
        rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(int(seed) % 2**64, spawn_key=(label,))))
        chosen = set(rng.permutation(n)[:n_test].tolist())
        for i, path in enumerate(paths):
            (test if i in chosen else train).append((path, label))
    return {"train": sorted(train), "test": sorted(test)}


def _split_layout(root: Path) -> tuple[Path, Path] | None:
    """``(train folder, test folder)`` when ``root`` holds split folders, else None."""
    names = set(subfolders(root))
    test = next((root / t for t in TEST_FOLDERS if t in names), None)
    if "train" in names and test is not None:
        return root / "train", test
    return None


def index_folder(root: str | os.PathLike[str], *, seed: int = 0,
                 test_fraction: float = 0.2,
                 progress: Callable[[str, int, int], None] | None = None) -> FolderLayout:
    """Index the images of a folder dataset (module docstring); nothing is decoded.
    ``progress("indexing class folders", done, total)`` follows the class folders.

    Raises:
        DataError: the folder is missing or unreadable, holds no class folders, holds one
            class only, a class folder holds no images, a test class is not a train class,
            a class folder leads outside the folder, two class names differ only in their
            Unicode form, or it holds more than :data:`MAX_FOLDER_FILES` images.
    """
    given = Path(os.path.expanduser(os.fspath(root)))
    base = given.resolve()
    if not base.is_dir():
        what = "is not a folder" if base.exists() else "does not exist"
        raise DataError(f"the image folder {what}; give the folder that holds one subfolder "
                        "per class (--dataset folder:PATH)", given)
    notes: list[str] = []
    split_dirs = _split_layout(base)
    outside = [name for name in _loose_images(base)]
    if split_dirs is None:
        class_dirs = {"train": base}
        layout = "seeded split"
    else:
        class_dirs = {"train": split_dirs[0], "test": split_dirs[1]}
        layout = "split folders"
        for name in subfolders(base):
            if name not in ("train", split_dirs[1].name):  # val/ too when test/ is there
                notes.append(f"folder {name}/ is left out: with train/ and "
                             f"{split_dirs[1].name}/ present, only they are read")
        for split_dir in class_dirs.values():
            outside += [f"{split_dir.name}/{n}" for n in _loose_images(split_dir)]

    classes = subfolders(class_dirs["train"])
    where = class_dirs["train"]
    if not classes:
        raise DataError("holds no class folders: put the images in one subfolder per class "
                        "(e.g. cells/healthy/1.png, cells/mitotic/2.png)", where)
    if len(classes) == 1:
        raise DataError(f"holds a single class folder ({classes[0]}/); a classifier needs two "
                        "or more classes, one subfolder each", where)
    index = {name: i for i, name in enumerate(classes)}
    other_files = 0
    per_split: dict[str, list[tuple[str, int]]] = {}
    for split, folder in class_dirs.items():
        names = subfolders(folder)
        _check_normalisation(names, folder)
        unknown = [n for n in names if n not in index]
        if unknown:
            nfc = {unicodedata.normalize("NFC", c): c for c in classes}
            twins = [f"{n}/ ({ascii(n)}) is train/'s {nfc[key]}/ ({ascii(nfc[key])}) written "
                     "with other Unicode characters" for n in unknown
                     if (key := unicodedata.normalize("NFC", n)) in nfc]
            raise DataError(f"class folder{'s' if len(unknown) > 1 else ''} {show_names(unknown)} "
                            f"{'are' if len(unknown) > 1 else 'is'} not in train/ "
                            f"({show_names(classes)}); every test class must be a training class"
                            + (f" ({twins[0]})" if twins else ""), folder)
        _check_class_folders(folder, names, base)
        pairs: list[tuple[str, int]] = []
        for done, name in enumerate(names, start=1):
            if progress is not None:
                progress(f"indexing {split} class folders", done, len(names))
            images, others = images_below(folder / name, base)
            other_files += others
            if not images and split == "train":
                raise DataError(f"class folder {name}/ holds no images "
                                f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the "
                                "folder", folder)
            pairs += [(path, index[name]) for path in images]
        per_split[split] = pairs
    found = sum(len(pairs) for pairs in per_split.values())
    if found > MAX_FOLDER_FILES:
        raise DataError(f"holds {found:,} image files, more than a folder dataset may hold "
                        f"({MAX_FOLDER_FILES:,}); train on a subset", base)
    if outside:
        notes.insert(0, f"{len(outside)} image file{'s are' if len(outside) > 1 else ' is'} "
                     f"not in a class folder and left out: {show_names(outside)}")
    if other_files:
        notes.append(f"{other_files} file{'s' if other_files > 1 else ''} in class folders "
                     f"{'are' if other_files > 1 else 'is'} not an image by its name and "
                     "left out")
    if split_dirs is None:
        splits = stratified_split(per_split["train"], len(classes), test_fraction, seed)
    else:
        splits = {"train": sorted(per_split["train"]), "test": sorted(per_split["test"])}
    layout_obj = FolderLayout(base, classes, splits, layout, outside, other_files, notes)
    if not splits["test"]:
        raise DataError(f"the test split is empty ({layout}); add test images"
                        + (" or use more images per class" if split_dirs is None else ""),
                        base)
    alone = [classes[i] for i, n in enumerate(layout_obj.counts("test")) if n == 0]
    if alone:
        notes.append(f"class{'es' if len(alone) > 1 else ''} {show_names(alone)} "
                     f"{'have' if len(alone) > 1 else 'has'} no test images")
    return layout_obj
