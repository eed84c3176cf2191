"""Per-channel statistics of a training split, for a spec's ``mean: auto`` / ``std: auto``.

For images ``x`` in [0, 1] (uint8 pixels are divided by 255), channel ``c`` has
``mean_c = E[x_c]`` and ``std_c = sqrt(E[x_c^2] - mean_c^2)`` over every pixel of every
image, summed in float64 a chunk at a time (no float copy of the split is made). A standard
deviation under 1/255 (a constant channel) is raised to 1/255 so that normalising never
divides by zero.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MIN_STD", "channel_statistics"]

MIN_STD = 1.0 / 255.0
_CHUNK = 1024


def channel_statistics(images: Any) -> tuple[list[float], list[float]]:
    """``(mean, std)`` per channel of images ``(N, C, H, W)``: a float tensor in [0, 1], a
    uint8 tensor, or anything indexed by an index tensor the same way (a streamed split)."""
    n, c = int(images.shape[0]), int(images.shape[1])
    sums = torch.zeros(2, c, dtype=torch.float64)
    count = 0
    for start in range(0, n, _CHUNK):
        index = torch.arange(start, min(start + _CHUNK, n))
        x = images[index].to(torch.float64)
        if images.dtype == torch.uint8:
            x = x / 255.0
        x = x.transpose(0, 1).reshape(c, -1)
        sums[0] += x.sum(dim=1)
        sums[1] += (x * x).sum(dim=1)
        count += x.shape[1]
    mean = sums[0] / max(count, 1)
    std = (sums[1] / max(count, 1) - mean**2).clamp_min(0.0).sqrt().clamp_min(MIN_STD)
    return mean.tolist(), std.tolist()
