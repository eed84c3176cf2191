"""The in-memory dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageDataset"]


@dataclass
class ImageDataset:
    """One split of an image classification dataset, fully in memory.

    Attributes:
        name: the dataset name (one of :data:`epdo.zoo.data.DATASETS`).
        split: ``"train"`` or ``"test"``.
        images: ``(N, C, H, W)`` float32 in ``[0, 1]``.
        labels: ``(N,)`` int64 in ``0 .. len(classes) - 1``.
        classes: the class names; their number is the number of classes.
        source: where the images came from (a path, or ``"embedded sample"``).
        angles: ``(N,)`` float64, the counter-clockwise rotation in degrees applied to each
            image when the loader rotated them (``rotated-idx``, ``sample``), else ``None``.

    It is also a map-style dataset: ``ds[i]`` is ``(images[i], labels[i])``.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str
    angles: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1:
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
