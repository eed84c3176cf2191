"""Where a run computes, and in which precision.

``device="auto"`` takes CUDA when it is available, else the CPU. A spec states its
precision (``train.precision``): ``fp32`` (the papers' recipes) computes in float32 and, on
CUDA, lets matmuls and convolutions use TF32 tensor cores as the papers' frameworks did;
``amp`` autocasts on CUDA to bfloat16 where the GPU supports it, else to float16 with a
gradient scaler. ``amp=True`` (``epdo train --amp``) opts a fp32 spec in to mixed precision,
``amp=False`` (``--no-amp``) opts out; ``None`` follows the spec. The CPU always computes in
float32 (asking for mixed precision without CUDA is an error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..device import DeviceError
from ..device import resolve_device as _resolve_device
from .errors import TrainError

__all__ = ["DeviceChoice", "Precision", "resolve_device", "resolve_precision"]

DeviceChoice = Literal["auto", "cpu", "cuda"]


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda`` (``cuda:<local_rank>`` under torchrun):
    :func:`epdo.zoo.device.resolve_device`, its errors raised as :class:`TrainError`."""
    try:
        return _resolve_device(choice, local_rank)
    except DeviceError as exc:
        raise TrainError(str(exc)) from None


@dataclass(frozen=True)
class Precision:
    """Autocast settings: ``dtype`` None means float32 without autocast."""

    dtype: torch.dtype | None = None
    scaler: bool = False
    tf32: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        if self.dtype is None:
            return "float32 (TF32 matmuls)" if self.tf32 else "float32"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def configure(self) -> None:
        """Set the process-wide TF32 switches of CUDA matmuls and cuDNN convolutions."""
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.enabled)


def resolve_precision(
    amp: bool | str | None, device: torch.device, spec_precision: str = "fp32"
) -> Precision:
    """The precision of a run on ``device``: the spec's ``precision`` unless ``amp`` says
    otherwise (True / ``"on"``: mixed precision; False / ``"off"``: float32; None /
    ``"auto"``: the spec's)."""
    choices = {None: None, "auto": None, True: True, "on": True, False: False, "off": False}
    if not isinstance(amp, bool | str | None) or amp not in choices:
        raise TrainError(f"amp must be on, off or auto (the spec's precision), got {amp!r}")
    if spec_precision not in ("fp32", "amp"):
        raise TrainError(f"precision must be fp32 or amp, got {spec_precision!r}")
    mixed = choices[amp]
    if mixed is None:
        mixed = spec_precision == "amp" and device.type == "cuda"
    if not mixed:
        return Precision(tf32=device.type == "cuda")
    if device.type != "cuda":
        raise TrainError("--amp needs a CUDA device; mixed precision is not used on the CPU")
    if torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16)
    return Precision(torch.float16, scaler=True)
