"""The spec a run trains: the spec's ``train`` section with the command-line overrides.

Specs are frozen, so overriding validates a new ``train`` section (``--epochs 0`` is a
:class:`~epdo.zoo.spec.SpecError` at ``train.epochs``) and copies the spec with it; the
network and its plan are kept as they are.

A resumed run takes its spec from its checkpoint. Only what does not change the result may
be given again: ``--epochs`` (to extend the run), ``--data-dir`` (the data moved), and the
device, precision and worker settings. A SPEC given beside ``--resume`` must describe the
same network.

Sanity limits (:func:`check_train_limits`, for the spec's values and the overrides alike):
the numbers must be finite, the seed must fit torch's generator, and the epochs and worker
processes are bounded by :data:`MAX_EPOCHS` and :data:`MAX_WORKERS`, which the environment
variables ``EPDO_MAX_EPOCHS`` and ``EPDO_MAX_WORKERS`` raise.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..envlimits import MAX_SETTING, whole_number
from ..spec import Spec, SpecError, TrainSpec, load_spec
from ..spec.loader import validate_section
from ..values import is_number
from .errors import TrainError

__all__ = [
    "FIXED_ON_RESUME",
    "fitted_to_data",
    "with_input",
    "MAX_EPOCHS",
    "MAX_WORKERS",
    "SEED_RANGE",
    "check_overrides",
    "check_train_limits",
    "check_workers",
    "max_epochs",
    "max_workers",
    "resume_spec",
    "with_overrides",
]

MAX_EPOCHS = 100_000
"""The most epochs a run may have (``--epochs`` or ``train.epochs``); the papers train 100 to
300. Raise it with the environment variable ``EPDO_MAX_EPOCHS``."""
MAX_WORKERS = 64
"""The most data-loading worker processes (``--workers``); each is a process. Raise it with
the environment variable ``EPDO_MAX_WORKERS``."""
SEED_RANGE = (-(2**63), 2**64 - 1)
"""The seeds torch's generators accept (``--seed`` or ``train.seed``)."""

FIXED_ON_RESUME = ("batch_size", "lr", "dataset", "seed")
"""Train settings that a resumed run cannot change (the result would not be exact)."""


def _limit(variable: str, default: int) -> int:
    text = os.environ.get(variable, "")
    if not text.strip():
        return default
    value = whole_number(text)
    if value is None:
        raise TrainError(f"${variable} must be a whole number from 1 to {MAX_SETTING:,}, got "
                         f"{text.strip()[:40]!r}")
    return value


def max_epochs() -> int:
    """:data:`MAX_EPOCHS`, or ``$EPDO_MAX_EPOCHS`` when set."""
    return _limit("EPDO_MAX_EPOCHS", MAX_EPOCHS)


def max_workers() -> int:
    """:data:`MAX_WORKERS`, or ``$EPDO_MAX_WORKERS`` when set."""
    return _limit("EPDO_MAX_WORKERS", MAX_WORKERS)


def check_workers(workers: Any) -> int:
    """``workers`` if it is a whole number from 0 to :func:`max_workers`, else TrainError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise TrainError(f"--workers must be 0 or more, got {workers}")
    top = max_workers()
    if workers > top:
        raise TrainError(
            f"--workers {workers} is more than {top} worker processes; use fewer (or raise "
            "the limit with EPDO_MAX_WORKERS)"
        )
    return workers


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check_value(key: str, value: Any, where: str) -> None:
    """One train setting against the limits; ``where`` names it in the message."""
    if key in ("lr", "momentum", "weight_decay") and isinstance(value, float) and (
        not math.isfinite(value)
    ):
        raise TrainError(f"{where} must be a finite number, got {value}")
    if key == "lr" and is_number(value) and value <= 0:
        raise TrainError(f"{where} must be a number greater than 0, got {value}")
    if isinstance(value, bool) or not isinstance(value, int):
        return
    if key == "epochs" and value > max_epochs():
        raise TrainError(
            f"{where} {value} is more than {max_epochs()} epochs; use fewer (or raise the "
            "limit with EPDO_MAX_EPOCHS)"
        )
    if key == "seed" and not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise TrainError(
            f"{where} {value} is out of range: a seed is a whole number from -2**63 to 2**64-1"
        )


def check_train_limits(train: TrainSpec, where: str = "train.") -> None:
    """Every setting of a validated ``train`` section against the limits (module
    docstring); :class:`TrainError` naming ``<where><key>``."""
    for key in ("epochs", "seed", "lr", "momentum", "weight_decay"):
        _check_value(key, getattr(train, key), f"{where}{key}")
    for epoch, lr in train.lr_milestones.items():
        if not math.isfinite(lr):
            raise TrainError(f"{where}lr_milestones.{epoch} must be a finite number, got {lr}")


def check_overrides(**overrides: Any) -> None:
    """The non-None ``overrides`` against the limits, each named by its command-line flag."""
    for key, value in overrides.items():
        if value is not None:
            _check_value(key, value, _flag(key))


def with_overrides(spec: Spec, **overrides: Any) -> Spec:
    """``spec`` with the non-None ``overrides`` set in its ``train`` section (each checked
    against the limits first, named by its command-line flag)."""
    check_overrides(**overrides)
    given = {key: value for key, value in overrides.items() if value is not None}
    if not given:
        return spec
    if str(given.get("dataset", "")).startswith(("folder:", "seg:")) and "data_dir" not in given:
        given["data_dir"] = None  # --dataset folder:PATH (seg:PATH) names the folder itself
    train = validate_section(TrainSpec, {**spec.train.model_dump(), **given}, "train")
    return spec.model_copy(update={"train": train})


def _network(spec: Spec) -> dict[str, Any]:
    data = spec.resolved()
    for key in ("name", "description", "train"):
        data.pop(key, None)
    return data


def resume_spec(
    checkpoint_spec: dict[str, Any] | str | os.PathLike[str] | Spec,
    spec_source: str | os.PathLike[str] | dict[str, Any] | Spec | None,
    **overrides: Any,
) -> Spec:
    """The spec of a resumed run: the checkpoint's (or the run folder's ``spec.yaml``),
    with the allowed overrides applied."""
    spec = load_spec(checkpoint_spec)
    for key in FIXED_ON_RESUME:
        value = overrides.get(key)
        if value is not None and value != getattr(spec.train, key):
            flag = _flag(key)
            raise TrainError(
                f"{flag} {value} differs from the resumed run's {getattr(spec.train, key)}; a "
                f"resumed run keeps its {key.replace('_', ' ')} (start a new run to change it)"
            )
    if spec_source is not None:
        given = load_spec(spec_source)
        if _network(given) != _network(spec):
            raise TrainError(
                f"spec {given.name!r} describes another network than the run being resumed "
                f"({spec.name!r}); resume with --resume RUN_DIR alone"
            )
    allowed = {k: overrides.get(k) for k in ("epochs", "data_dir")}
    return with_overrides(spec, **allowed)


def _respec(spec: Spec, data: dict[str, Any], what: str) -> Spec:
    """``data`` (a changed ``spec.resolved()``) validated as a spec; a SpecError says that
    ``what`` made it invalid."""
    try:
        return load_spec(data)
    except SpecError as exc:
        raise TrainError(f"{what} does not fit spec {spec.name!r}: {exc}") from None


def with_input(spec: Spec, *, channels: int | None = None,
               size: int | tuple[int, int] | list[int] | None = None) -> Spec:
    """``spec`` with its input channels and size replaced (``--channels``,
    ``--input-size``); the network is planned again for them. A mean or std of one value
    per channel follows a new channel count when its values are all equal."""
    if channels is None and size is None:
        return spec
    data = spec.resolved()
    inp = data["input"]
    if channels is not None:
        for key in ("mean", "std"):
            values = inp[key]
            if isinstance(values, list) and len(set(values)) == 1:
                inp[key] = values[:1]
        inp["channels"] = channels
    if size is not None:
        inp["size"] = [size, size] if isinstance(size, int) else list(size)
    flags = " and ".join(f for f, v in (("--channels", channels), ("--input-size", size))
                         if v is not None)
    return _respec(spec, data, flags)


def fitted_to_data(spec: Spec, *, classes: int | None = None,
                   mean: list[float] | None = None, std: list[float] | None = None) -> Spec:
    """``spec`` fitted to the data it trains on: the head's number of classes (a folder
    dataset's class folders) and the ``auto`` mean / std replaced by the given numbers."""
    data = spec.resolved()
    changed = False
    if classes is not None:
        for layer in data["layers"]:
            if layer.get("op") in ("head", "dense_head") and layer.get("classes") != classes:
                layer["classes"] = classes
                changed = True
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and data["input"][key] == "auto":
            data["input"][key] = [float(v) for v in values]
            changed = True
    return _respec(spec, data, "the dataset") if changed else spec
