"""The in-memory dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ImageDataset"]


@dataclass
class ImageDataset:
    """One split of an image classification dataset.

    Attributes:
        name: the dataset name (one of :data:`epdo.zoo.data.DATASETS`).
        split: ``"train"`` or ``"test"``.
        images: ``(N, C, H, W)`` float32 in ``[0, 1]``; a folder dataset's are uint8 pixels
            (``/ 255`` gives [0, 1]) in memory, or an
            :class:`~epdo.zoo.data.folder_images.ImageFiles` that decodes them when indexed.
        labels: ``(N,)`` int64 in ``0 .. len(classes) - 1``.
        classes: the class names; their number is the number of classes.
        source: where the images came from (a path, or ``"embedded sample"``).
        angles: ``(N,)`` float64, the counter-clockwise rotation in degrees applied to each
            image when the loader rotated them (``rotated-idx``, ``sample``), else ``None``.
        files: a folder dataset's file of each image (relative to ``source``), else None.

    It is also a map-style dataset: ``ds[i]`` is ``(images[i], labels[i])``.
    """

    name: str
    split: str
    images: Any
    labels: torch.Tensor
    classes: list[str]
    source: str
    angles: torch.Tensor | None = None
    files: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.images.shape) != 4 or self.labels.ndim != 1:
            raise ValueError(f"images must be (N, C, H, W) and labels (N,), got "
                             f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        return len(self.classes)
