"""Checkpoints: the resolved spec, weights and training state in one file.

A checkpoint is a ``torch.save`` dict that loads with ``torch.load(..., weights_only=True)``
(nothing in it is executed): plain containers, numbers, strings and tensors only::

    {"format": "epdo-checkpoint/2", "epdo_version": str, "spec": <resolved spec dict>,
     "model": state_dict, "optimizer": state_dict | None, "epoch": int (epochs completed),
     "rng": {name: tensor | list} | None, "metrics": dict, "extra": dict}

Format 1 (epdo 0.1) predates the papers' kernel parameterisation and stencils: its specs are
read as ``kernel_basis: raw`` with the wide finite differences (``fd`` -> ``fd_wide``), which
rebuilds exactly the trained model; a format-1 ``rbffd`` model used stencils this version no
longer derives and is refused with a message.

Files are written atomically (:mod:`epdo.zoo.fileio`: a temporary file in the same
directory, renamed over the target), so an interrupted write never leaves a half-written
checkpoint at the target path.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epdo import __version__

from .builder import build_model
from .errors import EpdoError
from .fileio import atomic_path
from .spec import Spec, SpecError, load_spec

CHECKPOINT_FORMAT = "epdo-checkpoint/2"
#: Older formats that :func:`read_checkpoint` upgrades (see the module docstring).
LEGACY_FORMATS = ("epdo-checkpoint/1",)
BEST, LAST = "checkpoint-best.pt", "checkpoint-last.pt"


class CheckpointError(EpdoError, ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupted or not epdo's."""


def rng_state() -> dict[str, Any]:
    """The states of torch (CPU, CUDA), numpy and Python's ``random``, as safe types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(_listify(random.getstate())),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _listify(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_listify(v) for v in value]
    return value


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    spec: Spec,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (see the module docstring for its content)."""
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "epdo_version": __version__,
            "spec": spec.resolved(),
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "epoch": int(epoch),
            "rng": rng,
            "metrics": metrics or {},
            "extra": extra or {},
        },
        path,
    )


def resolve_checkpoint(source: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a run directory (its best checkpoint, else its last)."""
    path = Path(source)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path}: no {BEST} or {LAST} in this run directory; pass a checkpoint file or a "
            "run directory written by `epdo train`"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def latest_checkpoint(runs: str | os.PathLike[str]) -> Path:
    """The checkpoint (:func:`resolve_checkpoint`: best, else last) of the most recent run
    under ``runs``, the run whose checkpoint files were written last; :class:`CheckpointError`
    when there is none."""
    runs = Path(runs)
    newest: tuple[float, Path] | None = None
    for name in (BEST, LAST):
        for ckpt in runs.glob(f"**/{name}"):
            mtime = ckpt.stat().st_mtime
            if newest is None or mtime > newest[0]:
                newest = (mtime, ckpt.parent)
    if newest is None:
        raise CheckpointError(f"{runs}: no checkpoint found; pass a checkpoint or run directory")
    return resolve_checkpoint(newest[1])


def read_checkpoint(source: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; :class:`CheckpointError` if unusable."""
    path = resolve_checkpoint(source)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError,
            ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupted?): {reason}; "
            "use another checkpoint, e.g. checkpoint-best.pt or checkpoint-last.pt of the run"
        ) from exc
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != CHECKPOINT_FORMAT and fmt not in LEGACY_FORMATS:
        raise CheckpointError(
            f"{path}: not an epdo checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    for key in ("spec", "model", "epoch"):
        if key not in data:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    if fmt != CHECKPOINT_FORMAT:
        data["spec"] = _upgrade_format1_spec(data["spec"], path)
        data["format"] = CHECKPOINT_FORMAT
    data["path"] = str(path)
    return data


def _upgrade_format1_spec(spec: Any, path: Path) -> Any:
    """The spec of a format-1 checkpoint in today's terms (see the module docstring)."""
    if not isinstance(spec, dict):
        return spec  # model_from_checkpoint reports an unusable spec
    spec = dict(spec)
    if spec.get("discretization") == "rbffd":
        raise CheckpointError(
            f"{path}: this model was trained by epdo 0.1 with its own rbffd stencils (phs6, "
            "epsilon 1, degree-4 polynomials), which this version replaced by the papers' "
            "settings; retrain it (epdo train) to use it with this version"
        )
    if spec.get("discretization", "gauss") == "fd":
        spec["discretization"] = "fd_wide"
    spec.setdefault("kernel_basis", "raw")
    return spec


def model_from_checkpoint(data: dict[str, Any]) -> tuple[nn.Module, Spec]:
    """Rebuild the model of a loaded checkpoint dict and load its weights."""
    try:
        spec = load_spec(data["spec"])
    except SpecError as exc:
        raise CheckpointError(f"{data.get('path')}: the spec inside is invalid: {exc}") from exc
    model = build_model(spec)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{data.get('path')}: weights do not fit the spec inside: {first}"
        ) from exc
    return model, spec


def load_model(
    source: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Spec]:
    """The trained model (eval mode, on ``device``) and its resolved spec, from a checkpoint
    file or a run directory; no YAML file needed."""
    model, spec = model_from_checkpoint(read_checkpoint(source))
    return model.to(device).eval(), spec
