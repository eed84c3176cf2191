"""Where a command computes: the one resolver of ``--device`` for training, evaluation and
benchmarks.

``auto`` takes CUDA when it is available, else the CPU; ``cpu`` and ``cuda`` say so;
``cuda:<index>`` picks one GPU (not in training, where a process takes the GPU of its local
rank under ``torchrun``). Asking for CUDA where there is none is a :class:`DeviceError`
with one line that says what to pass instead.
"""

from __future__ import annotations

import torch

from .errors import EpdoError

__all__ = ["DEVICES", "DeviceError", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")
"""The device names every command accepts (``auto``: CUDA if present)."""


class DeviceError(EpdoError, ValueError):
    """A device that does not exist here or is not a device name."""


def _is_indexed(name: str) -> bool:
    return name.startswith("cuda:") and name[5:].isdigit()


def resolve_device(choice: str | torch.device, local_rank: int | None = None) -> torch.device:
    """The torch device for ``choice`` (``auto``, ``cpu``, ``cuda``, ``cuda:<index>`` or a
    :class:`torch.device`).

    ``local_rank`` places a process of a training job: ``cuda`` (and ``auto`` with CUDA)
    become ``cuda:<local_rank>``, and an explicit ``cuda:<index>`` is refused. Without it,
    ``cuda`` is the current CUDA device. Raises :class:`DeviceError`.
    """
    name = str(choice)
    indexed = _is_indexed(name) and local_rank is None
    if name not in DEVICES and not indexed:
        allowed = "auto, cpu, cuda or cuda:<index>" if local_rank is None else "auto, cpu or cuda"
        raise DeviceError(f"--device must be {allowed}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"--device {name}: CUDA is not available on this machine (torch "
            f"{torch.__version__}); use --device cpu or --device auto"
        )
    count = torch.cuda.device_count()
    if indexed:
        if int(name[5:]) >= count:
            raise DeviceError(f"--device {name}: no such GPU ({count} visible); use cuda:0 "
                              f"to cuda:{count - 1}")
        return torch.device(name)
    if local_rank is None:
        return torch.device("cuda")
    if local_rank >= count:
        raise DeviceError(
            f"process with local rank {local_rank} has no GPU ({count} visible); start at most "
            f"{count} processes per node"
        )
    return torch.device("cuda", local_rank)
