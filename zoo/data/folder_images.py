"""The images of a folder dataset as model inputs: decoded once into uint8 memory when they
fit a budget, else streamed from disk.

Every file is decoded by :func:`~epdo.zoo.data.images.decode_image` (the conversion that
export verification and ``epdo predict`` use) to the model's ``(C, H, W)`` uint8 pixels; the
model sees ``pixels / 255`` (the trainer converts on the device).

- **In memory** (:func:`decode_files` with ``keep=True``): one ``(N, C, H, W)`` uint8 tensor,
  N·C·H·W bytes: 20,000 RGB images of 96×96 take 553 MB (a float32 copy would take 2.2 GB and
  is never made).
- **Streamed** (:class:`ImageFiles`): only the file list is held; a batch of indices is
  decoded when it is asked for, in DataLoader worker processes when the trainer has some,
  so memory stays at the model and a few batches whatever the dataset's size.

Decoding runs in chunks of :data:`CHUNK` files, in ``workers`` processes when asked; every
file is fully decoded once before training (a truncated file is found before epoch 1, never
in the middle of a run), and the same pass sums each channel for ``mean: auto``.

Every file is read through :func:`dataset_file`: a path that resolves outside the dataset
folder (a symbolic link, or one swapped in after indexing) is a file that cannot be read,
as is a FIFO or a device (:func:`~epdo.zoo.files.open_regular`), never a read that waits.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataError
from .images import ImageError, decode_image

__all__ = ["CHUNK", "DecodeResult", "ImageFiles", "PixelSettings", "dataset_file",
           "decode_files"]

CHUNK = 64
"""Files decoded per work item."""

Report = Callable[[int, int], None]
"""``report(done, total)``: files decoded so far."""


@dataclass(frozen=True)
class PixelSettings:
    """How files become model inputs: ``channels`` (1 or 3), ``size`` ``(H, W)`` and
    ``fit`` (``resize`` or ``center_crop``)."""

    channels: int
    size: tuple[int, int]
    fit: str = "resize"

    @property
    def image_bytes(self) -> int:
        """Bytes of one decoded image (uint8)."""
        return self.channels * self.size[0] * self.size[1]


def dataset_file(root: Path, name: str) -> Path:
    """``root / name``, checked to resolve inside ``root`` (itself resolved, as
    :func:`~epdo.zoo.data.folder.index_folder` gives it); ImageError when it leads outside,
    through a symbolic link."""
    path = root / name
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        raise ImageError(f"a symbolic link to {real}, outside the dataset folder {root}; "
                         "only files inside it are read")
    return path


class ImageFiles:
    """A split whose images stay on disk: ``(N, C, H, W)`` uint8, decoded when indexed.

    ``files[i]`` is relative to ``root``. ``self[index]`` with an index tensor (B,) gives
    ``(B, C, H, W)`` uint8, with an int ``(C, H, W)``. A file that no longer decodes raises
    :class:`DataError` naming it.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, root: str | os.PathLike[str], files: list[str],
                 settings: PixelSettings) -> None:
        self.root = Path(os.path.realpath(root))
        self.files, self.settings = list(files), settings

    @property
    def shape(self) -> torch.Size:
        s = self.settings
        return torch.Size((len(self.files), s.channels, *s.size))

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> np.ndarray:
        """File ``i`` as ``(C, H, W)`` uint8."""
        path = self.root / self.files[i]
        try:
            pixels, _ = decode_image(dataset_file(self.root, self.files[i]),
                                     self.settings.channels, self.settings.size,
                                     self.settings.fit)
        except ImageError as exc:
            raise DataError(str(exc), path) from None
        return pixels

    def __getitem__(self, index: int | torch.Tensor) -> torch.Tensor:
        if isinstance(index, int):
            return torch.from_numpy(self.read(index))
        rows = [self.read(int(i)) for i in index.reshape(-1).tolist()]
        if not rows:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.from_numpy(np.stack(rows))


@dataclass
class DecodeResult:
    """What one pass over a split's files found.

    Attributes:
        images: ``(N_good, C, H, W)`` uint8 when kept, else None.
        good: indices (into the given files) of the files that decoded, in order.
        bad: ``(relative path, reason)`` of the files that did not.
        sums: per channel, float64 sum of ``pixels / 255`` and of its square (2, C).
        pixels: pixels per channel summed (good images × H × W).
        channel_counts: how many files were gray (1) or colour (3) before conversion.
        bits: how many files had 8, 16 or 32 bits per channel.
        sizes: ``(min width, min height, max width, max height)`` of the files.
    """

    images: torch.Tensor | None
    good: list[int]
    bad: list[tuple[str, str]]
    sums: np.ndarray
    pixels: int
    channel_counts: dict[int, int] = field(default_factory=dict)
    bits: dict[int, int] = field(default_factory=dict)
    sizes: tuple[int, int, int, int] | None = None

    def statistics(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of ``pixels / 255`` over the good
        images (a std under 1/255, e.g. a constant channel, is raised to 1/255)."""
        n = max(self.pixels, 1)
        mean = self.sums[0] / n
        var = np.maximum(self.sums[1] / n - mean**2, 0.0)
        std = np.maximum(np.sqrt(var), 1.0 / 255.0)
        return [float(m) for m in mean], [float(s) for s in std]


class _Chunks(Dataset):
    """Work items for the decoding pass: chunk ``k`` decodes files ``k*CHUNK ...``."""

    def __init__(self, root: Path, files: list[str], settings: PixelSettings) -> None:
        self.root = Path(os.path.realpath(root))
        self.files, self.settings = files, settings

    def __len__(self) -> int:
        return math.ceil(len(self.files) / CHUNK)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray, list[int], list[tuple[str, str]],
                                            list[tuple[int, int, int, int]]]:
        s = self.settings
        start = k * CHUNK
        rows, good, bad, infos = [], [], [], []
        for i in range(start, min(start + CHUNK, len(self.files))):
            name = self.files[i]
            try:
                pixels, info = decode_image(dataset_file(self.root, name), s.channels,
                                            s.size, s.fit)
            except ImageError as exc:
                bad.append((name, str(exc)))
                continue
            except OSError as exc:  # unreadable: permissions, I/O error
                bad.append((name, exc.strerror or str(exc)))
                continue
            rows.append(pixels)
            good.append(i)
            infos.append((info.channels, info.bits, info.width, info.height))
        stack = np.stack(rows) if rows else np.zeros((0, s.channels, *s.size), np.uint8)
        return start, stack, good, bad, infos


def _as_is(item: object) -> object:
    """The work item as the worker made it (no conversion to tensors)."""
    return item


def decode_files(root: str | os.PathLike[str], files: list[str], settings: PixelSettings, *,
                 keep: bool, workers: int = 0, report: Report | None = None) -> DecodeResult:
    """Decode every file once (module docstring).

    Args:
        root: the folder the relative ``files`` are in.
        files: relative paths.
        settings: channels, size and fit of the model input.
        keep: hold the decoded images (in memory) or only check them and sum statistics.
        workers: decoding processes (0: this process).
        report: called with ``(done, total)`` after every chunk.

    Returns:
        A :class:`DecodeResult`; a file that does not decode is in ``bad``, never raised.
    """
    root = Path(root)
    n = len(files)
    c = settings.channels
    images = torch.empty((n, c, *settings.size), dtype=torch.uint8) if keep else None
    loader = DataLoader(_Chunks(root, files, settings), batch_size=None, num_workers=workers,
                        collate_fn=_as_is)
    result = DecodeResult(None, [], [], np.zeros((2, c)), 0)
    sizes = [math.inf, math.inf, 0, 0]
    written = done = 0
    for start, stack, good, bad, infos in loader:
        result.good += good
        result.bad += bad
        if len(stack):
            values = stack.reshape(len(stack), c, -1).astype(np.float64) / 255.0
            result.sums[0] += values.sum(axis=(0, 2))
            result.sums[1] += (values**2).sum(axis=(0, 2))
            result.pixels += values.shape[0] * values.shape[2]
            if images is not None:
                images[written:written + len(stack)] = torch.from_numpy(stack)
                written += len(stack)
        for channels, bits, width, height in infos:
            result.channel_counts[channels] = result.channel_counts.get(channels, 0) + 1
            result.bits[bits] = result.bits.get(bits, 0) + 1
            sizes = [min(sizes[0], width), min(sizes[1], height), max(sizes[2], width),
                     max(sizes[3], height)]
        done = min(start + CHUNK, n)
        if report is not None:
            report(done, n)
    if result.good:
        result.sizes = (int(sizes[0]), int(sizes[1]), int(sizes[2]), int(sizes[3]))
    if images is not None:
        result.images = images if written == n else images[:written]  # a view: no copy
    return result
