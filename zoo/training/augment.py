"""Batched, per-image augmentation on the device.

Training images (B, C, H, W) go through, in this order (each only when the spec's
``augment`` asks):

1. ``resized_crop``: a box of the image resampled to the full H×W. Its area is a fraction
   ``s ~ U[scale]`` of the image's and its aspect ratio (width / height in pixels) is
   ``r = exp(t)``, ``t ~ U[log ratio]``, so, as fractions of the image's sides, the box is
   ``w = min(1, sqrt(s r H / W))`` wide and ``h = min(1, sqrt(s / (r H / W)))`` high
   (``sqrt(s r)`` and ``sqrt(s / r)`` for a square image; the clipping to 1 shrinks the
   area of the rare boxes that would stick out). Its left edge is ``u (1 - w)`` and its top
   edge ``v (1 - h)`` with ``u, v ~ U[0, 1)``: the box lies inside the image, each place
   equally likely. Output pixel (i, j) is the bilinear interpolation of the image at
   ``(top + (i + 1/2) h / H, left + (j + 1/2) w / W)`` (fractions of the sides; pixel k's
   centre is at (k + 1/2) / size), with the border pixels extended beyond the image's edge:
   :func:`resized_crop_batch`. The box of the whole image gives back the image.
2. ``rotate``: a counter-clockwise rotation (x right, y up;
   :func:`epdo.zoo.transforms.rotate_images`) by an angle uniform in [0°, 360°), bilinear,
   zeros outside;
3. ``flip``: a horizontal flip (``x[..., ::-1]``) with probability 1/2;
4. ``vflip``: a vertical flip (``x[..., ::-1, :]``) with probability 1/2;
5. ``crop_padding = p``: zero padding by p on every side, then a random crop back to H×W
   (offsets uniform in {0, ..., 2p} per axis).

The random draws for a whole epoch are made at its start from one generator (see
:mod:`.seeding`), one of each per training image, in this order: angles, flips, crop
offsets, then vertical flips and resized-crop boxes (each only when asked, so a spec without
the later ones draws exactly what it drew before they existed). They are looked up by image
index, so they do not depend on batch order or on how many processes share the data.

Augmentation works on raw images in [0, 1] (padded and rotated-in zeros are black); the
model normalises them itself (its first step).

A segmentation mask (B, H, W) gets the same geometric transforms from the same draws
(:meth:`AugmentDraws.apply_masks`): the resized crop and the rotation sample it at the same
points as the image, nearest instead of bilinear, and its pixels from outside the canvas
(rotated-in corners, crop padding) are ignore (255) instead of black.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.masks import IGNORE
from ..spec import AugmentSpec
from ..transforms import rotate_images, rotate_masks

__all__ = [
    "AugmentDraws", "crop_batch", "crop_boxes", "flip_batch", "resized_crop_batch",
    "vflip_batch",
]


def flip_batch(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the images ``b`` of (B, C, H, W) where ``flip[b]`` is true."""
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def vflip_batch(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip vertically (upside down) the images ``b`` of (B, C, H, W) where ``flip[b]``."""
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-2), x)


def crop_batch(x: torch.Tensor, padding: int, offsets: torch.Tensor,
               value: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) by ``padding`` with ``value`` (0: black) and crop H×W at
    ``offsets[b] = (row, col)``, each in ``[0, 2 * padding]``; offsets ``(padding, padding)``
    give back the image. Any dtype."""
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), value=value)
    offsets = offsets.to(x.device)
    rows = offsets[:, 0, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(W, device=x.device)  # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None]
    # advanced indexing around the channel slice puts the channels last: (B, H, W, C)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def crop_boxes(crops: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The boxes ``(left, top, w, h)`` (B, 4), fractions of the image's sides, of the
    resized-crop draws ``crops`` (B, 4) = ``(s, t, u, v)`` (area fraction, log aspect ratio,
    two uniforms in [0, 1)) on an image of ``height`` × ``width`` pixels (module docstring,
    step 1): ``w = min(1, sqrt(s e^t H/W))``, ``h = min(1, sqrt(s e^-t W/H))``,
    ``left = u (1 - w)``, ``top = v (1 - h)``. Same dtype and device as ``crops``."""
    area, log_ratio, u, v = crops.unbind(-1)
    aspect = math.log(height / width)  # a pixel ratio r is a side-fraction ratio r H / W
    w = torch.sqrt(area * torch.exp(log_ratio + aspect)).clamp(max=1.0)
    h = torch.sqrt(area * torch.exp(-(log_ratio + aspect))).clamp(max=1.0)
    return torch.stack([u * (1.0 - w), v * (1.0 - h), w, h], dim=-1)


def resized_crop_batch(x: torch.Tensor, boxes: torch.Tensor,
                       mode: str = "bilinear") -> torch.Tensor:
    """Each image ``b`` of (B, C, H, W) cut to ``boxes[b] = (left, top, w, h)`` (fractions
    of the sides, inside [0, 1]) and resampled to H×W, borders extended; ``mode``:
    ``bilinear`` (images) or ``nearest`` (label maps), at the same points.

    In ``affine_grid``'s normalized coordinates (align_corners=False: the image spans
    [-1, 1], pixel k's centre is at (2k + 1) / size - 1) the output point ``p`` samples the
    input at ``diag(w, h) p + (2 left + w - 1, 2 top + h - 1)``, which maps [-1, 1]² onto
    the box. The box (0, 0, 1, 1) is the identity (to rounding). Same dtype and device as
    ``x``."""
    if boxes.shape != (x.shape[0], 4):
        raise ValueError(f"boxes must be ({x.shape[0]}, 4), got {tuple(boxes.shape)}")
    boxes = boxes.to(device=x.device, dtype=torch.float64)
    left, top, w, h = boxes.unbind(-1)
    theta = torch.zeros(x.shape[0], 2, 3, dtype=torch.float64, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = w, 2.0 * left + w - 1.0
    theta[:, 1, 1], theta[:, 1, 2] = h, 2.0 * top + h - 1.0
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


@dataclass
class AugmentDraws:
    """The random choices of one epoch, one per training image (None: not augmented)."""

    angles: torch.Tensor | None = None  # (N,) degrees in [0, 360)
    flips: torch.Tensor | None = None  # (N,) bool
    offsets: torch.Tensor | None = None  # (N, 2) crop offsets in [0, 2p]
    padding: int = 0
    vflips: torch.Tensor | None = None  # (N,) bool
    crops: torch.Tensor | None = None  # (N, 4) float64: area s, log ratio t, u, v

    @classmethod
    def draw(cls, spec: AugmentSpec, n: int, generator: torch.Generator) -> AugmentDraws:
        """Draw, in this order, angles, flips, crop offsets, vertical flips and resized-crop
        boxes for ``n`` images (each only when ``spec`` asks for it)."""
        draws = cls(padding=spec.crop_padding)
        if spec.rotate:
            draws.angles = torch.rand(n, generator=generator, dtype=torch.float64) * 360.0
        if spec.flip:
            draws.flips = torch.rand(n, generator=generator) < 0.5
        if spec.crop_padding:
            high = 2 * spec.crop_padding + 1
            draws.offsets = torch.randint(0, high, (n, 2), generator=generator)
        if spec.vflip:
            draws.vflips = torch.rand(n, generator=generator) < 0.5
        if spec.resized_crop is not None:
            u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
            s_low, s_high = spec.resized_crop.scale
            t_low, t_high = (math.log(r) for r in spec.resized_crop.ratio)
            u[:, 0] = s_low + (s_high - s_low) * u[:, 0]
            u[:, 1] = t_low + (t_high - t_low) * u[:, 1]
            draws.crops = u
        return draws

    @property
    def active(self) -> bool:
        return any(
            t is not None
            for t in (self.angles, self.flips, self.offsets, self.vflips, self.crops)
        )

    def to(self, device: torch.device) -> AugmentDraws:
        """The same draws on ``device`` (looked up there by the batch's indices)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return AugmentDraws(
            angles=move(self.angles), flips=move(self.flips), offsets=move(self.offsets),
            padding=self.padding, vflips=move(self.vflips), crops=move(self.crops),
        )

    def apply(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Augment the batch ``x`` (B, C, H, W) whose rows are the training images
        ``index`` (B,): resized crop, rotation, flip, vertical flip, padding crop."""
        if self.crops is not None:
            crops = self.crops[index.to(self.crops.device)]
            x = resized_crop_batch(x, crop_boxes(crops, x.shape[-2], x.shape[-1]))
        if self.angles is not None:
            x = rotate_images(x, self.angles[index])
        if self.flips is not None:
            x = flip_batch(x, self.flips[index])
        if self.vflips is not None:
            x = vflip_batch(x, self.vflips[index])
        if self.offsets is not None:
            x = crop_batch(x, self.padding, self.offsets[index])
        return x

    def apply_masks(self, masks: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Give the masks (B, H, W) of the training images ``index`` (B,) the geometric
        transforms that :meth:`apply` gives those images, with the same draws: resized crop
        and rotation sampled at the same points but nearest (no value is invented), flips,
        padding crop. Pixels that come from outside the canvas (the corners a rotation
        brings in, a crop's padding) become :data:`~epdo.zoo.data.masks.IGNORE`. Any integer
        dtype (values below 2**24, e.g. class indices); the same dtype comes back."""
        if masks.ndim != 3 or masks.is_floating_point():
            raise ValueError(f"masks must be an integer (B, H, W) tensor, got {masks.dtype} "
                             f"{tuple(masks.shape)}")
        m = masks.unsqueeze(1)
        if self.crops is not None:
            crops = self.crops[index.to(self.crops.device)]
            boxes = crop_boxes(crops, m.shape[-2], m.shape[-1])
            # float32 is exact for integers below 2**24
            m = resized_crop_batch(m.to(torch.float32), boxes, "nearest").round().to(masks.dtype)
        if self.angles is not None:
            m = rotate_masks(m.squeeze(1), self.angles[index], outside=IGNORE).unsqueeze(1)
        if self.flips is not None:
            m = flip_batch(m, self.flips[index])
        if self.vflips is not None:
            m = vflip_batch(m, self.vflips[index])
        if self.offsets is not None:
            m = crop_batch(m, self.padding, self.offsets[index], value=IGNORE)
        return m.squeeze(1)
