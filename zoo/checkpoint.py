"""Checkpoints: the resolved spec, weights and training state in one file.

A checkpoint is a ``torch.save`` dict that loads with ``torch.load(..., weights_only=True)``
(nothing in it is executed): plain containers, numbers, strings and tensors only::

    {"format": "epdo-checkpoint/2", "epdo_version": str, "spec": <resolved spec dict>,
     "model": state_dict, "optimizer": state_dict | None, "epoch": int (epochs completed),
     "rng": {name: tensor | list} | None, "metrics": dict, "extra": dict}

``rng`` and ``extra`` are what a resumed run continues from; their schema is written, checked
and read in one place, :mod:`epdo.zoo.training.resume_state` (``extra["classes"]``, the class
names, is also read here by :func:`checkpoint_classes`).

Format 1 (epdo 0.1) predates the papers' kernel parameterisation and stencils: its specs are
read as ``kernel_basis: raw`` with the wide finite differences (``fd`` -> ``fd_wide``), which
rebuilds exactly the trained model; a format-1 ``rbffd`` model used stencils this version no
longer derives and is refused with a message.

Files are written atomically (:mod:`epdo.zoo.fileio`: a temporary file in the same
directory, renamed over the target), so an interrupted write never leaves a half-written
checkpoint at the target path.

Nothing read is trusted before it is checked: :func:`read_checkpoint` refuses a file that
needs anything but plain data to unpickle (naming the forbidden global) and checks the
dict's structure and types; :func:`load_weights` names the missing, unexpected and
misshapen weights; what only a resumed run takes from it is checked by
:mod:`epdo.zoo.training.resume_state` (the step, the clock, the random and scaler states)
and :mod:`epdo.zoo.training.optimizer_state`. Each problem is one :class:`CheckpointError`
line.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from epdo import __version__

from .builder import build_model
from .errors import EpdoError
from .fileio import atomic_path, disk_is_full
from .spec import Spec, SpecError, load_spec
from .values import is_int, shape_text, type_name

CHECKPOINT_FORMAT = "epdo-checkpoint/2"
#: Older formats that :func:`read_checkpoint` upgrades (see the module docstring).
LEGACY_FORMATS = ("epdo-checkpoint/1",)
BEST, LAST = "checkpoint-best.pt", "checkpoint-last.pt"
#: The end of every message about an unusable checkpoint: what to use instead.
USE_ANOTHER = "use a checkpoint written by epdo train (checkpoint-best.pt or checkpoint-last.pt)"


class CheckpointError(EpdoError, ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupted or not epdo's."""


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it. torch's
    writer reports a full disk as "unexpected pos ..."; that is told as what it is
    (:class:`~epdo.zoo.fileio.DiskFullError`)."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            if disk_is_full(tmp.parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
            raise


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
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file; pass a checkpoint file")
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
    """Load a checkpoint with ``weights_only=True`` and check its structure (module
    docstring); :class:`CheckpointError` if it is unusable."""
    path = resolve_checkpoint(source)
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes are not the user's
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any failure to parse an untrusted file is one line
        raise _unreadable(path, exc) from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != CHECKPOINT_FORMAT and fmt not in LEGACY_FORMATS:
        raise CheckpointError(
            f"{path}: not an epdo checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    _check_structure(data, path)
    if fmt != CHECKPOINT_FORMAT:
        data["spec"] = _upgrade_format1_spec(data["spec"], path)
        data["format"] = CHECKPOINT_FORMAT
    data["path"] = str(path)
    return data


_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """The one line for a file ``torch.load`` refused: a pickle that needs code or objects
    (named), or a file that is not a readable checkpoint at all."""
    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = _GLOBAL.search(text)
        listed = _unsafe_globals(path)
        if listed:
            what = ("the global " if len(listed) == 1 else "the globals ") + _names(
                [repr(name) for name in listed])
        elif found:
            what = f"the global {found.group(1)!r}"
        else:
            after = text.split("WeightsUnpickler error:", 1)[-1]
            lines = [line.strip() for line in after.splitlines() if line.strip()]
            what = lines[0] if lines and "WeightsUnpickler error:" in text else "a pickle opcode"
        return CheckpointError(
            f"{path}: contains code or objects that epdo does not load ({what}); epdo reads "
            f"checkpoints as plain data only (tensors, numbers, strings): {USE_ANOTHER}"
        )
    if isinstance(exc, EOFError) or (path.is_file() and path.stat().st_size == 0):
        reason = "the file ends early (empty or cut off)"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        if len(reason) > 160:  # torch's long explanations: keep the first sentence
            reason = reason.split(". ")[0]
    return CheckpointError(f"{path}: not a readable checkpoint file ({reason}); {USE_ANOTHER}")


def _unsafe_globals(path: Path) -> list[str]:
    """The globals the pickle in ``path`` needs that ``torch.load(weights_only=True)`` does
    not allow, as torch itself lists them (``get_unsafe_globals_in_checkpoint``, torch 2.5
    and later; it reads the pickle's opcodes and runs nothing), in the file's order; [] where
    this torch has no such listing or cannot list this file."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is None:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = lister(path)
    except Exception:  # an unreadable archive: the message falls back to torch.load's text
        return []
    return [name for name in dict.fromkeys(names) if isinstance(name, str) and name]


def _check_structure(data: dict[str, Any], path: Path) -> None:
    """The entries every checkpoint needs, with the types epdo relies on."""

    def bad(message: str) -> CheckpointError:
        return CheckpointError(f"{path}: {message}; {USE_ANOTHER}")

    for key in ("spec", "model", "epoch"):
        if key not in data:
            raise bad(f"checkpoint has no {key!r} entry")
    if not isinstance(data["spec"], Mapping):
        raise bad(f"its 'spec' entry is a {type_name(data['spec'])}, not a mapping")
    model = data["model"]
    if not isinstance(model, Mapping):
        raise bad(f"its 'model' entry is a {type_name(model)}, not a state dict of tensors")
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise bad(f"its 'model' entry {key!r} is a {type_name(value)}, not a tensor")
    epoch = data["epoch"]
    if not is_int(epoch) or epoch < 0:
        raise bad(f"its 'epoch' entry is {epoch!r}, not a count of epochs (a whole number "
                  "of 0 or more)")
    optimizer = data.get("optimizer")
    if optimizer is not None and not (
        isinstance(optimizer, Mapping) and isinstance(optimizer.get("state"), Mapping)
        and isinstance(optimizer.get("param_groups"), list)
    ):
        raise bad("its 'optimizer' entry is not an optimizer state (a mapping with 'state' "
                  "and 'param_groups')")
    for key in ("rng", "metrics", "extra"):
        if data.get(key) is not None and not isinstance(data[key], Mapping):
            raise bad(f"its {key!r} entry is a {type_name(data[key])}, not a mapping")
    data["metrics"] = dict(data.get("metrics") or {})
    data["extra"] = dict(data.get("extra") or {})
    if not isinstance(data.get("epdo_version", ""), str):
        raise bad("its 'epdo_version' entry is not a string")


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
    path = data.get("path")
    try:
        spec = load_spec(data["spec"])
    except SpecError as exc:
        raise CheckpointError(f"{path}: the spec inside is invalid: {exc}") from exc
    check_epoch(data, spec)
    model = build_model(spec)
    load_weights(model, data["model"], path)
    return model, spec


def checkpoint_classes(data: dict[str, Any], spec: Spec) -> list[str] | None:
    """The class names a checkpoint recorded (``extra["classes"]``, written since epdo
    trained on folders of images), checked: one non-empty name per class of the spec's
    head; None when it recorded none."""
    names = (data.get("extra") or {}).get("classes")
    if names is None:
        return None
    path = data.get("path")
    count = spec.plan.num_classes
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise CheckpointError(f"{path}: its recorded class names are not a list of names; "
                              f"{USE_ANOTHER}")
    if count is not None and len(names) != count:
        raise CheckpointError(f"{path}: it records {len(names)} class names for a model with "
                              f"{count} classes; {USE_ANOTHER}")
    return list(names)


def check_epoch(data: dict[str, Any], spec: Spec) -> None:
    """The epochs a checkpoint says it completed fit its spec's ``train.epochs``."""
    if data["epoch"] > spec.train.epochs:
        raise CheckpointError(
            f"{data.get('path')}: says {data['epoch']} epochs were completed but its spec "
            f"trains {spec.train.epochs}; {USE_ANOTHER}"
        )


def _names(keys: list[str], shown: int = 3) -> str:
    more = len(keys) - shown
    return ", ".join(keys[:shown]) + (f" and {more} more" if more > 0 else "")


def load_weights(model: nn.Module, state: Mapping[str, Any], path: Any) -> None:
    """Load ``state`` into ``model`` after checking it fits: every weight present, none
    unexpected, the same shapes, a fitting dtype, finite values; :class:`CheckpointError`
    naming the first few offending keys and how many more."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    shapes, kinds, values = [], [], []
    for key, want in expected.items():
        got = state.get(key)
        if not isinstance(got, torch.Tensor):
            continue
        if got.shape != want.shape:
            shapes.append(f"{key} is {shape_text(got.shape)}, the model's {shape_text(want.shape)}")
        elif got.is_complex() or got.is_floating_point() != want.is_floating_point():
            kinds.append(f"{key} is {got.dtype}, the model's {want.dtype}")
        elif got.is_floating_point() and not bool(torch.isfinite(got).all()):
            values.append(key)
    if shapes:
        problems.append(f"{len(shapes)} of another shape ({_names(shapes, 2)})")
    if kinds:
        problems.append(f"{len(kinds)} of another type ({_names(kinds, 2)})")
    if values:
        problems.append(f"{len(values)} with NaN or infinite values ({_names(values)})")
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the spec inside: "
                              f"{'; '.join(problems)}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise CheckpointError(f"{path}: weights do not fit the spec inside: {detail}") from None


def load_model(
    source: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Spec]:
    """The trained model (eval mode, on ``device``) and its resolved spec, from a checkpoint
    file or a run directory; no YAML file needed."""
    model, spec = model_from_checkpoint(read_checkpoint(source))
    return model.to(device).eval(), spec
