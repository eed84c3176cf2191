"""A resumed run's optimizer state, checked against the optimizer before it is loaded.

A checkpoint's ``optimizer`` entry is untrusted data: :func:`load_optimizer_state` loads it
only when it has the groups, parameter counts, hyperparameter kinds and per-parameter state
entries (shaped like their parameters, finite) of the optimizer the spec builds; anything
else is one :class:`~epdo.zoo.checkpoint.CheckpointError` line.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ..checkpoint import USE_ANOTHER, CheckpointError
from ..values import is_finite_number, is_int, is_number, shape_text, type_name

__all__ = ["load_optimizer_state"]


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], path: Any
) -> None:
    """Load a saved optimizer state after checking it against ``optimizer`` (a fresh one
    for the same parameters): the same groups and parameter counts, hyperparameters of the
    same kinds, and per parameter the state entries this optimizer keeps, shaped like the
    parameter and finite; :class:`CheckpointError` otherwise."""

    def bad(message: str) -> CheckpointError:
        return CheckpointError(f"{path}: optimizer state does not fit: {message}; "
                               f"{USE_ANOTHER}")

    groups, state = saved["param_groups"], saved["state"]
    fresh = optimizer.state_dict()["param_groups"]
    if len(groups) != len(fresh):
        raise bad(f"{len(groups)} parameter groups, the model's optimizer has {len(fresh)}")
    owner: dict[Any, torch.Tensor] = {}
    for g, (group, want) in enumerate(zip(groups, fresh, strict=True)):
        if not isinstance(group, Mapping):
            raise bad(f"parameter group {g} is a {type_name(group)}, not a mapping")
        ids = group.get("params")
        if not isinstance(ids, list) or not all(is_int(i) for i in ids):
            raise bad(f"parameter group {g} has no list of parameter ids")
        if len(ids) != len(want["params"]):
            raise bad(f"parameter group {g} has {len(ids)} parameters, the model "
                      f"{len(want['params'])}")
        for key, value in group.items():
            if key != "params" and key in want and not _same_kind(value, want[key]):
                raise bad(f"parameter group {g}: {key} is {value!r}, expected a value like "
                          f"{want[key]!r}")
        owner.update(zip(ids, optimizer.param_groups[g]["params"], strict=True))
    if len(owner) != sum(len(w["params"]) for w in fresh):
        raise bad("parameter ids repeat")
    keys = _state_keys(optimizer)
    for pid, entry in state.items():
        if pid not in owner:
            raise bad(f"state for parameter {pid!r}, which no group lists")
        if not isinstance(entry, Mapping):
            raise bad(f"state of parameter {pid} is a {type_name(entry)}, not a mapping")
        lacking = sorted(keys - set(entry))
        foreign = sorted(str(k) for k, v in entry.items() if k not in keys and v is not None)
        if entry and (lacking or foreign):
            raise bad(f"state of parameter {pid} has {sorted(map(str, entry))}, this optimizer "
                      f"keeps {sorted(keys)}")
        for key, value in entry.items():
            problem = _state_value_problem(key, value, owner[pid])
            if problem:
                raise bad(f"state {key!r} of parameter {pid} {problem}")
    try:
        optimizer.load_state_dict(dict(saved))
    except Exception as exc:  # torch's own checks, on data already found well-formed
        detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise bad(detail or type(exc).__name__) from None


def _same_kind(value: Any, want: Any) -> bool:
    """Whether a saved hyperparameter has the kind of the fresh optimizer's (numbers
    finite; ``None`` where the fresh one has None or a flag)."""
    if want is None or isinstance(want, bool):
        return value is None or isinstance(value, bool)
    if is_number(want):
        return is_finite_number(value)
    if isinstance(want, (tuple, list)):
        return isinstance(value, (tuple, list)) and len(value) == len(want) and all(
            _same_kind(v, w) for v, w in zip(value, want, strict=True)
        )
    if isinstance(want, torch.Tensor):
        return isinstance(value, torch.Tensor) and value.shape == want.shape
    return isinstance(value, type(want))


def _state_keys(optimizer: torch.optim.Optimizer) -> set[str]:
    """The state entries ``optimizer``'s class keeps per parameter, learnt from one step
    of the same kind of optimizer on a throwaway parameter."""
    accepted = inspect.signature(type(optimizer)).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    probe = torch.zeros(1, requires_grad=True)
    probe.grad = torch.zeros(1)
    twin = type(optimizer)([probe], **defaults)
    twin.step()
    return set(twin.state[probe])


def _state_value_problem(key: str, value: Any, param: torch.Tensor) -> str | None:
    """What is wrong with one saved state entry of ``param`` (None: nothing)."""
    if value is None:
        return None  # SGD's momentum buffer before its first step
    if key == "step":
        number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        ok = is_finite_number(number) and number >= 0
        return None if ok else f"is {type_name(value)} {value!r:.40}, not a step count"
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return f"is a {type_name(value)}, not a floating-point tensor"
    if value.shape != param.shape:
        return f"is {shape_text(value.shape)}, the parameter {shape_text(param.shape)}"
    if not bool(torch.isfinite(value).all()):
        return "has NaN or infinite values"
    return None
