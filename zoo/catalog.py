"""The zoo's catalogue: one row per shipped spec (name, group, discretization, size)."""

from __future__ import annotations

from .builder import build_model
from .shipped import list_specs
from .spec import load_spec


def zoo_listing() -> list[dict]:
    """Rows ``{name, group, discretization, params, description}`` for the shipped specs."""
    rows = []
    for name in list_specs():
        spec = load_spec(name)
        model = build_model(spec)
        rows.append(
            {
                "name": spec.name,
                "group": str(spec.group),
                "discretization": spec.discretization,
                "params": sum(p.numel() for p in model.parameters()),
                "description": spec.description,
            }
        )
    return rows
