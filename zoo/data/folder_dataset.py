"""The ``folder`` dataset: the user's images as train and test splits, and the record of
exactly which files they are.

:func:`load_folder` indexes the folder (:mod:`.folder`), decodes every file once
(:mod:`.folder_images`: kept as uint8 when the splits fit the memory budget, else streamed),
refuses to go on when files do not decode unless asked to skip them, and computes the
training split's per-channel mean and std. Its :class:`FolderData` carries a JSON
:meth:`~FolderData.record` that the trainer writes into the run folder as ``data.json``:
the class names, the file list of each split, the skipped files and the statistics. A
resumed run, ``epdo eval`` and ``epdo export`` read that record back
(:func:`read_record`), so they see exactly the same images even if files were added to the
folder since.

The memory budget (:func:`memory_budget`) is ``--memory-budget`` or ``$EPDO_DATA_MEMORY``
(bytes, or a number with K, M, G), default :data:`DEFAULT_MEMORY_BUDGET`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..envlimits import MAX_SETTING
from ..files import open_regular
from .dataset import ImageDataset
from .errors import DataError
from .folder import MAX_FOLDER_FILES, FolderLayout, index_folder
from .folder_images import DecodeResult, ImageFiles, PixelSettings, decode_files
from .masks import MAX_CLASSES

__all__ = [
    "DATA_RECORD",
    "DEFAULT_MEMORY_BUDGET",
    "MEMORY_ENV",
    "RECORD_FORMATS",
    "SEG_RECORD_FORMAT",
    "FolderData",
    "channel_notes",
    "load_folder",
    "load_folder_split",
    "memory_budget",
    "mib",
    "parse_bytes",
    "read_record",
    "safe_relative",
]

DATA_RECORD = "data.json"
"""The file of a run folder that records a folder dataset's splits."""
RECORD_FORMAT = "epdo-folder-data/1"
SEG_RECORD_FORMAT = "epdo-seg-data/1"
"""The record of a ``seg`` folder (:mod:`.seg_dataset`): its rows are ``[image, mask]``."""
RECORD_FORMATS = {"classify": RECORD_FORMAT, "segment": SEG_RECORD_FORMAT}
"""The record format of each task (``read_record(..., task=)``)."""
DEFAULT_MEMORY_BUDGET = 2 << 30
"""Decoded images (uint8) held in memory at most, by default: 2 GiB."""
MEMORY_ENV = "EPDO_DATA_MEMORY"
MAX_RECORD_FILES = MAX_FOLDER_FILES
"""Files a ``data.json`` may list (train, test and skipped): as many as a folder may hold."""
RECORD_ENTRY_BYTES = 128
"""Bytes one file entry may take on average: ``["<relative path>", <label>], `` is the path
plus about 10 bytes, so paths of about 115 characters on average fit (a class folder and a
file name are typically 20 to 60)."""
MAX_RECORD_BYTES = MAX_RECORD_FILES * RECORD_ENTRY_BYTES
"""The size of a ``data.json`` at most (128 MB): what :data:`MAX_RECORD_FILES` entries of
:data:`RECORD_ENTRY_BYTES` take. Read as JSON, a record takes about 3 times its size plus
about 70 bytes per JSON value, so a record at this limit needs well under 1 GB."""
RECORD_VALUES_PER_FILE = 4
"""JSON values a record may hold per file (:data:`MAX_RECORD_FILES`): an entry is 3 (the
pair, its path, its label), the reason of a skipped file a few more. Counted on the bytes
(every value but a container's first follows a comma, and every container opens with ``[``
or ``{``) before anything is parsed, so a record of tiny values (``[0,0,0,...]``) cannot
make millions of Python objects."""
MANY_FILES = 2000
"""From this many files on, decoding runs in worker processes by default."""
_SHOWN = 5

Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``: e.g. ``("decoding train", 640, 2400)``."""
Note = Callable[[str], None]


def parse_bytes(text: str, what: str) -> int:
    """``"512M"`` -> 536870912 (K, M, G, T are powers of 1024; a plain number is bytes;
    ASCII digits only, at most :data:`~epdo.zoo.envlimits.MAX_SETTING`)."""
    match = re.fullmatch(r"\s*([0-9]{1,19}(?:\.[0-9]{1,9})?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*",
                         str(text))
    number = float(match.group(1)) if match else 0.0
    size = number * 1024 ** ("KMGT".index(match.group(2).upper()) + 1 if match and
                             match.group(2) else 0)
    if not match or size > MAX_SETTING:
        raise DataError(f"{what} must be a number of bytes such as 800M or 4G (at most "
                        f"{MAX_SETTING:,}), got {str(text)[:40]!r}")
    return int(size)


def memory_budget(value: str | int | None = None) -> int:
    """The budget in bytes: ``value`` (``--memory-budget``), else ``$EPDO_DATA_MEMORY``,
    else :data:`DEFAULT_MEMORY_BUDGET`."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise DataError(f"--memory-budget must be 0 or more bytes, got {value}")
        return value
    if value is not None:
        return parse_bytes(value, "--memory-budget")
    env = os.environ.get(MEMORY_ENV, "").strip()
    return parse_bytes(env, f"${MEMORY_ENV}") if env else DEFAULT_MEMORY_BUDGET


@dataclass
class FolderData:
    """A folder dataset ready to train on.

    Attributes:
        train, test: the splits (images uint8 in memory, or :class:`ImageFiles`).
        classes: the class names.
        root: the folder.
        layout: ``"split folders"`` or ``"seeded split"`` (or as recorded).
        skipped: ``(relative path, reason)`` of the files left out because they did not
            decode (only with ``skip_bad``).
        mean, std: per channel, of ``pixels / 255`` over the training images.
        notes: one line per thing the user should know.
        info: per split, what the files held (channel counts, bits, sizes).
    """

    train: ImageDataset
    test: ImageDataset
    classes: list[str]
    root: Path
    layout: str
    settings: PixelSettings
    seed: int
    test_fraction: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train.images, torch.Tensor)

    def files(self, split: str) -> list[tuple[str, int]]:
        ds = self.train if split == "train" else self.test
        return list(zip(_paths(ds), ds.labels.tolist(), strict=True))

    def record(self) -> dict[str, Any]:
        """The JSON record written as the run folder's ``data.json``."""
        s = self.settings
        return {
            "format": RECORD_FORMAT, "root": str(self.root), "layout": self.layout,
            "classes": list(self.classes),
            "input": {"channels": s.channels, "size": list(s.size), "fit": s.fit},
            "seed": self.seed, "test_fraction": self.test_fraction,
            "mean": self.mean, "std": self.std,
            "train": [[p, y] for p, y in self.files("train")],
            "test": [[p, y] for p, y in self.files("test")],
            "skipped": [[p, why] for p, why in self.skipped],
        }


def _paths(ds: ImageDataset) -> list[str]:
    return list(ds.files or [])


def _bad_files_error(bad: list[tuple[str, str]], root: Path) -> DataError:
    shown = "; ".join(f"{p}: {why}" for p, why in bad[:_SHOWN])
    more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    return DataError(
        f"{len(bad)} image file{'s' if len(bad) > 1 else ''} cannot be read: {shown}{more}; "
        f"fix or remove {'them' if len(bad) > 1 else 'it'}, or pass "
        f"--skip-bad to train without {'them' if len(bad) > 1 else 'it'} (listed in the run "
        f"folder's {DATA_RECORD}; epdo data info folder:{root} lists every one)", root)


def _check_channels(results: dict[str, DecodeResult], settings: PixelSettings) -> list[str]:
    counts: dict[int, int] = {}
    for r in results.values():
        for c, n in r.channel_counts.items():
            counts[c] = counts.get(c, 0) + n
    return channel_notes(counts, settings)


def channel_notes(counts: dict[int, int], settings: PixelSettings) -> list[str]:
    """The notes on the images' own channels (``counts``: files per channel count, 1 or 3)
    against the model's: mixed, or converted to the model's channels."""
    want = settings.channels
    gray, colour = counts.get(1, 0), counts.get(3, 0)
    target = "RGB" if want == 3 else "grayscale"
    if gray and colour:
        return [f"mixed channel counts: {gray:,} grayscale and {colour:,} colour images; all "
                f"are read as {target} (the model's {want} input channel"
                f"{'s' if want > 1 else ''}; --channels changes it)"]
    if want == 3 and gray:
        return ["the images are grayscale and the model takes 3 channels: each image is "
                "copied to R, G and B (--channels 1 trains a grayscale model)"]
    if want == 1 and colour:
        return ["the images are in colour and the model takes 1 channel: they are read as "
                "grayscale (luma) (--channels 3 trains a colour model)"]
    return []


def _split_info(result: DecodeResult) -> dict[str, Any]:
    return {"channels": dict(result.channel_counts), "bits": dict(result.bits),
            "sizes": list(result.sizes) if result.sizes else None}


def load_folder(
    root: str | os.PathLike[str],
    settings: PixelSettings,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    skip_bad: bool = False,
    budget: int | None = None,
    workers: int | None = None,
    record: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> FolderData:
    """Index, decode and check a folder dataset (module docstring).

    Args:
        root: the folder (``~`` is expanded).
        settings: the model input's channels, size and fit.
        seed, test_fraction: the stratified split, when the folder has no split folders.
        skip_bad: leave out the files that do not decode (recorded in ``skipped``) instead
            of refusing them.
        budget: bytes of decoded images that may be held in memory (default
            :func:`memory_budget`); splits beyond it are streamed.
        workers: decoding processes (None: up to 4 for :data:`MANY_FILES` files or more,
            else none).
        record: a run's ``data.json`` (:func:`read_record`): its file lists and classes are
            used instead of indexing the folder; every file must still decode.
        progress: called with ``(what, done, total)`` while decoding.

    Raises:
        DataError: layout problems (:func:`~.folder.index_folder`), files that do not decode
            (listed, unless ``skip_bad``), a split left empty.
    """
    budget = memory_budget() if budget is None else budget
    layout = _layout(root, record, seed, test_fraction, progress)
    base = layout.root
    if workers is None:
        workers = decode_workers(sum(len(v) for v in layout.splits.values()))
    sizes = {split: len(layout.splits[split]) * settings.image_bytes for split in ("train", "test")}
    keep = {"train": sizes["train"] <= budget}
    keep["test"] = sizes["test"] + (sizes["train"] if keep["train"] else 0) <= budget
    results = {split: _decode_files(layout, split, settings, keep=keep[split],
                                    workers=workers, progress=progress)
               for split in ("train", "test")}
    skipped = results["train"].bad + results["test"].bad
    if skipped and (not skip_bad or record is not None):
        raise _bad_files_error(skipped, base)  # every bad file of both splits, in one line
    splits = {split: _split_dataset(layout, split, settings, results[split])
              for split in ("train", "test")}
    notes = list(layout.notes) + _check_channels(results, settings)
    if skipped:
        notes.append(f"{len(skipped)} file{'s' if len(skipped) > 1 else ''} that cannot be "
                     f"read {'are' if len(skipped) > 1 else 'is'} left out (--skip-bad): "
                     + ", ".join(p for p, _ in skipped[:3])
                     + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""))
    if not all(keep.values()):
        streamed = [s for s in ("train", "test") if not keep[s]]
        notes.append(f"{' and '.join(streamed)} images ({mib(sum(sizes[s] for s in streamed))}"
                     f" decoded) exceed the memory budget of {mib(budget)}: they are read "
                     "from disk for every batch (more --workers read in parallel; "
                     f"--memory-budget or ${MEMORY_ENV} raises the budget)")
    mean, std = results["train"].statistics()
    return FolderData(
        splits["train"], splits["test"], list(layout.classes), base, layout.layout, settings,
        seed, test_fraction, skipped + _recorded_skips(record), mean, std, notes,
        {s: _split_info(r) for s, r in results.items()},
    )


def _decode_files(layout: FolderLayout, split: str, settings: PixelSettings, *, keep: bool,
                  workers: int, progress: Progress | None) -> DecodeResult:
    """One split's files decoded (kept in memory or only checked); bad files in ``bad``."""
    pairs = layout.splits[split]
    what = f"{'decoding' if keep else 'checking'} {split} images"

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(what, done, total)

    return decode_files(layout.root, [p for p, _ in pairs], settings, keep=keep,
                        workers=workers, report=report)


def _split_dataset(layout: FolderLayout, split: str, settings: PixelSettings,
                   result: DecodeResult) -> ImageDataset:
    """The split's good files as a dataset: in memory when ``result`` kept its images, else
    streamed. DataError when no file of the split decoded."""
    pairs = layout.splits[split]
    base = layout.root
    good = [pairs[i] for i in result.good]
    if not good:
        raise DataError(f"no image of the {split} split can be read", base)
    labels = torch.tensor([y for _, y in good], dtype=torch.int64)
    paths = [p for p, _ in good]
    images: Any = result.images if result.images is not None else ImageFiles(base, paths,
                                                                              settings)
    return ImageDataset("folder", split, images, labels, list(layout.classes), str(base),
                        files=paths)


def load_folder_split(
    root: str | os.PathLike[str],
    settings: PixelSettings,
    split: str,
    *,
    record: dict[str, Any] | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    budget: int | None = None,
    workers: int | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> ImageDataset:
    """One split of a folder dataset (``epdo eval``, export verification): the run's
    recorded files when ``record`` is given, else the folder indexed and split as
    :func:`load_folder` does; ``limit`` keeps the first files only. Every file must decode.
    """
    budget = memory_budget() if budget is None else budget
    layout = _layout(root, record, seed, test_fraction, progress)
    if limit is not None:
        layout.splits[split] = layout.splits[split][:limit]
    if workers is None:
        workers = decode_workers(len(layout.splits[split]))
    keep = len(layout.splits[split]) * settings.image_bytes <= budget
    result = _decode_files(layout, split, settings, keep=keep, workers=workers,
                           progress=progress)
    if result.bad:
        raise _bad_files_error(result.bad, layout.root)
    return _split_dataset(layout, split, settings, result)


def decode_workers(files: int) -> int:
    """Decoding processes by default: up to 4 from :data:`MANY_FILES` files on, else none."""
    return min(4, os.cpu_count() or 1) if files >= MANY_FILES else 0


def _layout(root: str | os.PathLike[str], record: dict[str, Any] | None, seed: int,
            test_fraction: float, progress: Progress | None) -> FolderLayout:
    """The run's recorded layout when ``record`` is given, else the folder indexed."""
    if record is None:
        return index_folder(root, seed=seed, test_fraction=test_fraction, progress=progress)
    return _layout_from_record(record, root)


def mib(n: int) -> str:
    """``n`` bytes in MiB, for messages."""
    return f"{n / 2**20:,.0f} MiB"


def _recorded_skips(record: dict[str, Any] | None) -> list[tuple[str, str]]:
    if record is None:
        return []
    return [(str(p), str(why)) for p, why in record.get("skipped", [])]


# --------------------------------------------------------------------------- the record


def safe_relative(path: Any) -> bool:
    """Whether ``path`` is a relative POSIX path that stays below its folder (no ``..``, no
    leading ``/``, no backslash, no NUL)."""
    if not isinstance(path, str) or not path or "\x00" in path:
        return False
    # as PurePosixPath's is_absolute() and parts would say, without an object per path
    return not path.startswith("/") and ".." not in path.split("/") and "\\" not in path


def read_record(path: str | os.PathLike[str], *, task: str = "classify") -> dict[str, Any]:
    """A run folder's ``data.json``, checked before anything in it is used: a regular file of
    at most :data:`MAX_RECORD_BYTES` bytes and as many JSON values as
    :data:`MAX_RECORD_FILES` files need (both checked before parsing), its JSON (nested
    too deeply is an error), the types of every entry, class names, labels in range, and
    paths that stay below the dataset's folder (relative, no ``..``).

    ``task`` is the record's kind: ``classify`` (a ``folder`` dataset, rows
    ``[path, label]``) or ``segment`` (a ``seg`` folder, rows ``[image path, mask path]``);
    a record of the other kind is refused.

    Raises:
        DataError: naming the file and what is wrong.
    """
    if task not in RECORD_FORMATS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(RECORD_FORMATS)}")
    file = Path(path)
    limit = MAX_RECORD_BYTES
    try:
        with open_regular(file) as fh:
            size = os.fstat(fh.fileno()).st_size
            raw = fh.read(limit + 1) if size <= limit else b""
        if max(size, len(raw)) > limit:  # checked before reading, and on what was read
            raise DataError(f"is over {limit:,} bytes, more than a dataset record can be "
                            f"({MAX_RECORD_FILES:,} files of {RECORD_ENTRY_BYTES} bytes); it "
                            "is written by epdo train", file)
        values = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        most = MAX_RECORD_FILES * RECORD_VALUES_PER_FILE + 64  # + the record's own fields
        if values > most:
            raise DataError(f"holds more than {most:,} JSON values, more than a dataset record "
                            f"of {MAX_RECORD_FILES:,} files can; it is written by epdo train",
                            file)
        data = json.loads(raw.decode("utf-8"))
    except DataError:
        raise
    except RecursionError:
        raise DataError("cannot read the dataset record (its JSON is nested too deeply); it "
                        "is written by epdo train", file) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read the dataset record ({exc}); it is written by epdo "
                        "train", file) from None
    problem = _record_problem(data, task)
    if problem:
        raise DataError(f"not a valid dataset record: {problem}; it is written by epdo train",
                        file)
    return data


def _row_problem(row: Any, segment: bool, classes: int) -> bool:
    """Whether ``row`` is not a record row: ``[relative path, label in range]``, or for a
    segmentation record ``[relative image path, relative mask path]``."""
    if not (isinstance(row, list) and len(row) == 2 and safe_relative(row[0])):
        return True
    if segment:
        return not safe_relative(row[1])
    return not (isinstance(row[1], int) and not isinstance(row[1], bool)
                and 0 <= row[1] < classes)


def _record_problem(data: Any, task: str = "classify") -> str | None:
    want = RECORD_FORMATS[task]
    if not isinstance(data, dict) or data.get("format") != want:
        return f"its format is not {want}"
    segment = task == "segment"
    classes = data.get("classes")
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)):
        return "classes must be a list of two or more names"
    if segment and len(classes) > MAX_CLASSES:
        return f"it lists {len(classes)} classes, more than a mask holds ({MAX_CLASSES})"
    if not isinstance(data.get("root"), str) or not isinstance(data.get("layout"), str):
        return "root and layout must be text"
    if segment and data.get("task") != "segment":
        return "its task is not segment"
    what = "[image path, mask path]" if segment else "[path, label]"
    for split in ("train", "test"):
        rows = data.get(split)
        if not isinstance(rows, list) or not rows:
            return f"{split} must be a non-empty list of {what}"
        for row in rows:
            if _row_problem(row, segment, len(classes)):
                shown = "[relative image path, relative mask path]" if segment \
                    else "[relative path, label]"
                return f"{split} holds {str(row)[:80]!r}, not {shown}"
    skipped = data.get("skipped", [])
    files = len(data["train"]) + len(data["test"]) + (len(skipped) if isinstance(skipped, list)
                                                      else 0)
    if files > MAX_RECORD_FILES:
        return f"it lists {files:,} files, more than a folder dataset may hold " \
               f"({MAX_RECORD_FILES:,})"
    if not isinstance(skipped, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(v, str) for v in r)
            for r in skipped):
        return "skipped must be a list of [path, reason]"
    return None


def _layout_from_record(record: dict[str, Any], root: str | os.PathLike[str]) -> FolderLayout:
    base = Path(os.path.expanduser(os.fspath(root))).resolve()
    if not base.is_dir():
        raise DataError("the run's image folder is not there; if it moved, give its new place "
                        "with --data-dir", base)
    splits = {s: [(str(p), int(y)) for p, y in record[s]] for s in ("train", "test")}
    return FolderLayout(base, list(record["classes"]), splits, str(record["layout"]))
