"""The in-memory dataset of a segmentation task: images and one class index per pixel.

A mask pixel holds a class index ``0 .. K - 1`` or :data:`IGNORE` (255): a pixel that has no
label (unlabelled, or brought in from outside the canvas by augmentation) and that the loss
and the metrics leave out. Class indices are 0..254, so a dataset has at most
:data:`MAX_CLASSES` classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["IGNORE", "MAX_CLASSES", "MaskDataset"]

IGNORE = 255
"""The mask value of a pixel without a class."""
MAX_CLASSES = 255
"""The most classes a segmentation dataset may have: indices 0..254 (255 is ignore)."""


@dataclass
class MaskDataset:
    """One split of a segmentation dataset.

    Attributes:
        name: the dataset name (``seg-sample``, ``seg``).
        split: ``"train"`` or ``"test"``.
        images: ``(N, C, H, W)`` uint8 pixels (``/ 255`` gives [0, 1]).
        labels: ``(N, H, W)`` uint8 masks: the class index of every pixel, or
            :data:`IGNORE`.
        classes: the class names; label ``k`` is ``classes[k]``.
        source: where the data came from (a folder, or ``"embedded sample"``).
        files: a folder dataset's image file of each row (relative to ``source``), else
            None.

    It indexes as training does: ``images[index]`` and ``labels[index]`` with an index
    tensor (B,) give ``(B, C, H, W)`` and ``(B, H, W)``; ``ds[i]`` is ``(image, mask)``.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str
    files: list[str] | None = None

    def __post_init__(self) -> None:
        shape, masks = tuple(self.images.shape), tuple(self.labels.shape)
        if len(shape) != 4 or len(masks) != 3:
            raise ValueError(f"images must be (N, C, H, W) and masks (N, H, W), got {shape} "
                             f"and {masks}")
        if shape[0] != masks[0] or shape[2:] != masks[1:]:
            raise ValueError(f"images {shape} and masks {masks} differ in number or size")
        if self.images.dtype != torch.uint8 or self.labels.dtype != torch.uint8:
            raise ValueError(f"images and masks must be uint8, got {self.images.dtype} and "
                             f"{self.labels.dtype}")
        if not 2 <= len(self.classes) <= MAX_CLASSES:
            raise ValueError(f"a segmentation dataset has 2 to {MAX_CLASSES} classes, got "
                             f"{len(self.classes)}")
        if self.files is not None and len(self.files) != shape[0]:
            raise ValueError(f"{len(self.files)} file names for {shape[0]} images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_pixels(self) -> torch.Tensor:
        """``(K,)`` int64: how many pixels of the split hold each class (ignore not
        counted); e.g. for class weights."""
        counts = torch.bincount(self.labels.reshape(-1).long(), minlength=256)
        return counts[:self.num_classes].clone()
