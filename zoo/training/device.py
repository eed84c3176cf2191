"""Where a run computes, and in which precision.

``device="auto"`` takes CUDA when it is available, else the CPU. On CUDA, automatic mixed
precision is on by default (``amp="auto"``): bfloat16 where the GPU supports it, else
float16 with a gradient scaler; inputs and weights use the channels-last memory format;
batches come from pinned memory with non-blocking copies. The CPU runs the same code in
float32 (``amp="on"`` without CUDA is an error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .errors import TrainError

__all__ = ["AmpChoice", "DeviceChoice", "Precision", "resolve_device", "resolve_precision"]

DeviceChoice = Literal["auto", "cpu", "cuda"]
AmpChoice = Literal["auto", "on", "off"]


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda`` (``cuda:<local_rank>`` under torchrun)."""
    if choice not in ("auto", "cpu", "cuda"):
        raise TrainError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError(
            "--device cuda: CUDA is not available on this machine (torch "
            f"{torch.__version__}); use --device cpu or --device auto"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise TrainError(
            f"process with local rank {local_rank} has no GPU ({count} visible); start at most "
            f"{count} processes per node"
        )
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Precision:
    """Autocast settings: ``dtype`` None means float32 without autocast."""

    dtype: torch.dtype | None = None
    scaler: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.enabled)


def resolve_precision(choice: str, device: torch.device) -> Precision:
    """Mixed precision for ``--amp auto|on|off`` on ``device``."""
    if choice not in ("auto", "on", "off"):
        raise TrainError(f"--amp must be auto, on or off, got {choice!r}")
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return Precision()
    if device.type != "cuda":
        raise TrainError("--amp on needs a CUDA device; use --amp auto or --amp off on the CPU")
    if torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16)
    return Precision(torch.float16, scaler=True)
