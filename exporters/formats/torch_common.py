"""What the torch-run formats (TorchScript, ``.pt2``, ``.aoti.pt2``) share: the device a
provider names, the session that runs a loaded module on it, and the ``torch.export``
program both ``.pt2`` and ``.aoti.pt2`` are made from."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..artifact import ExportError, ServingError, first_line
from .base import Session, check_provider

__all__ = ["TorchSession", "export_program", "quiet_torch", "torch_device", "torch_release"]

_LOGGERS = ("torch.export", "torch._export", "torch._inductor.package",
            "torch.utils.cpp_extension")

def torch_device(provider: str) -> Any:
    """The torch device of a provider: ``auto`` is CUDA when torch sees a GPU, else the CPU;
    ``cuda`` without a GPU is a ServingError."""
    import torch

    check_provider(provider)
    if provider == "cuda" and not torch.cuda.is_available():
        raise ServingError("provider 'cuda': torch sees no CUDA GPU")
    use_cuda = provider == "cuda" or (provider == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


class TorchSession(Session):
    """A torch callable (module or compiled model) run under ``inference_mode`` on
    ``device``: float32 numpy in, float32 numpy logits out."""

    def __init__(self, module: Any, device: Any) -> None:
        self.module = module
        self.device = device
        self.providers = [str(device)]

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """torch's export and AOTInductor loggers silenced (they log a traceback when a program
    does not deserialise) and its warnings ignored."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def torch_release(version: str | None = None) -> str:
    """``X.Y.Z`` of a torch version string (``2.14.1+cu130`` -> ``2.14.1``); the running
    torch's when ``version`` is None."""
    import torch

    text = torch.__version__ if version is None else version
    return text.split("+", 1)[0]


def export_program(module: Any, example: Any) -> Any:
    """The ``torch.export`` program (an ``ExportedProgram``) of ``module`` run on
    ``example`` ``(B, C, H, W)`` (B >= 2), its batch dimension dynamic (any batch >= 1);
    ExportError (one line) when torch cannot export it."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    try:
        with quiet_torch(), torch.no_grad():
            return torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many kinds of errors
        raise ExportError(f"torch.export could not export the model: {first_line(exc)}") from exc
