"""The spec a run trains: the spec's ``train`` section with the command-line overrides.

Specs are frozen, so overriding validates a new ``train`` section (``--epochs 0`` is a
:class:`~epdo.zoo.spec.SpecError` at ``train.epochs``) and copies the spec with it; the
network and its plan are kept as they are.

A resumed run takes its spec from its checkpoint. Only what does not change the result may
be given again: ``--epochs`` (to extend the run), ``--data-dir`` (the data moved), and the
device, precision and worker settings. A SPEC given beside ``--resume`` must describe the
same network.
"""

from __future__ import annotations

import os
from typing import Any

from ..spec import Spec, TrainSpec, load_spec
from ..spec.loader import validate_section
from .errors import TrainError

__all__ = ["FIXED_ON_RESUME", "resume_spec", "with_overrides"]

FIXED_ON_RESUME = ("batch_size", "lr", "dataset", "seed")
"""Train settings that a resumed run cannot change (the result would not be exact)."""


def with_overrides(spec: Spec, **overrides: Any) -> Spec:
    """``spec`` with the non-None ``overrides`` set in its ``train`` section."""
    given = {key: value for key, value in overrides.items() if value is not None}
    if not given:
        return spec
    train = validate_section(TrainSpec, {**spec.train.model_dump(), **given}, "train")
    return spec.model_copy(update={"train": train})


def _network(spec: Spec) -> dict[str, Any]:
    data = spec.resolved()
    for key in ("name", "description", "train"):
        data.pop(key, None)
    return data


def resume_spec(
    checkpoint_spec: dict[str, Any],
    spec_source: str | os.PathLike[str] | dict[str, Any] | Spec | None,
    **overrides: Any,
) -> Spec:
    """The spec of a resumed run: the checkpoint's, with the allowed overrides applied."""
    spec = load_spec(checkpoint_spec)
    for key in FIXED_ON_RESUME:
        value = overrides.get(key)
        if value is not None and value != getattr(spec.train, key):
            flag = "--" + key.replace("_", "-")
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
