"""Per-layer equivariance: how far every block's output is from turning with the input.

For block i of a model (output ``f_i``: fields of type rho_i, or the head's logits), inputs
x (B, C, H, W) and a transformation g of the plane, the relative equivariance error is

    err_i(g) = ||f_i(g.x) - g.f_i(x)|| / ||f_i(x) - mean_batch f_i(x)||,

where g acts on the block's output by its representation: channel c moves to channel
p_g(c) and every channel is moved in space (:func:`~epdo.zoo.transforms.transform_features`);
on a classifier's logits g acts trivially (the error is the change of the logits), on a
dense head's per-pixel scores by moving the map. The denominator is how much the output
varies between inputs, so a shared offset cannot hide a change.

Columns: the quarter turns, each also composed with the flip y -> -y when the group has
reflections -- they map the pixel grid onto itself, and the comparison is exact --, then
``angles`` that need resampling. For those, the input is rotated bilinearly and so is the
block's output map (:func:`~epdo.zoo.equivariance.moved`), and both are compared inside the
inscribed disk of the output map (outside it the rotated map holds zeros brought in from
beyond the corners); such errors mix the model's own error with the interpolation's, which
is large on small maps, and are never zero.

A cell is measured when g acts on the block's output: g is in the block's group (after a
restriction D_N -> C_N the flips are not), or the block's fields are all trivial (a plain
CNN's, group-pooled ones, logits), on which g moves the map alone. A measured cell whose g
is a grid-exact element of the block's group (:attr:`LayerRow.symmetric`) is at float
round-off unless a layer up to there is not exact; the first such block is the measured
break (:attr:`LayerReport.measured_break`), explained from the plan
(:func:`epdo.zoo.exactness.first_break`: a stride, a pool or padding the turns do not map
onto itself, a head that reads orientation channels).

All blocks run once on the batch of the inputs and their transformed copies (eval mode: each
image on its own) and each block's errors are taken as it goes, so one block's outputs are
held at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .builder import ZooModel
from .equivariance import moved
from .exactness import Break, first_break, symmetry_words
from .groups import Element, Group
from .stages import Stage
from .transforms import disk_mask, transform_features

__all__ = [
    "Column",
    "LayerReport",
    "LayerRow",
    "columns_for",
    "layer_report",
    "tolerance_for",
]


def tolerance_for(dtype: torch.dtype) -> float:
    """The relative error below which a grid-exact cell counts as exact: 1e-9 in float64,
    1e-4 in float32 (round-off through a few dozen layers stays far below both)."""
    return 1e-9 if dtype == torch.float64 else 1e-4


@dataclass(frozen=True)
class Column:
    """One transformation of the input: rotation by ``degrees`` after the flip y -> -y when
    ``flip``; ``grid_exact`` when it maps the pixel grid onto itself."""

    name: str
    degrees: float
    flip: bool
    grid_exact: bool

    def element(self, group: Group) -> Element | None:
        """This transformation as an element ``(r, m)`` of ``group``, or None when it is not
        one (an angle that is not a multiple of 360/N, a flip in C_N)."""
        steps = self.degrees * group.N / 360.0
        r = round(steps)
        if abs(steps - r) > 1e-9 or (self.flip and not group.reflections):
            return None
        return (r % group.N, int(self.flip))


def columns_for(group: Group, angles: Sequence[float], square: bool = True) -> list[Column]:
    """The quarter turns (90, 180, 270), then, for a group with reflections, the flip and
    each quarter turn after it, then ``angles`` (those that are multiples of 90 are dropped:
    they are columns already). On a non-square input (``square`` false) the odd quarter
    turns, which change its shape, are left out."""
    flips = (False, True) if group.reflections else (False,)
    turns = range(4) if square else (0, 2)
    cols = [Column(f"{90 * q}°" if not f else ("flip" if q == 0 else f"{90 * q}°∘flip"),
                   90.0 * q, f, True)
            for f in flips for q in turns if q or f]
    for a in angles:
        if abs(a / 90.0 - round(a / 90.0)) > 1e-12:
            cols.append(Column(f"{a:g}°", float(a), False, False))
    return cols


@dataclass
class LayerRow:
    """One block: its spec ``path`` (``label`` tells repeats apart: ``layers[1]#3``), op,
    output (``fields``: ``16xregular C16`` or ``10 logits``; ``size``: ``28x28``) and the
    group acting on it; per column, the relative ``errors`` (None: g does not act on this
    output) and whether g is a grid-exact ``symmetric`` element of the block's group (its
    error must be at round-off while the layers up to here are exact)."""

    index: int
    path: str
    label: str
    op: str
    fields: str
    size: str
    group: str
    errors: list[float | None] = field(default_factory=list)
    symmetric: list[bool] = field(default_factory=list)

    @property
    def max_symmetric_error(self) -> float | None:
        """The largest error over the grid-exact symmetric cells (None: there are none)."""
        errs = [e for e, s in zip(self.errors, self.symmetric, strict=True)
                if s and e is not None]
        return max(errs) if errs else None


@dataclass
class LayerReport:
    """Every block's errors (:class:`LayerRow`) under the :class:`Column` transformations.

    ``tolerance``: a symmetric cell above it is not exact; ``measured_break``: the index of
    the first row with such a cell (None: every layer exact); ``predicted``: the first layer
    the plan says is not exact at this size (:func:`~epdo.zoo.exactness.first_break`);
    ``symmetries``: the group's grid-exact elements in words (None for C1, C3, ...);
    ``restricted``: the first block after which the flips no longer act (a restriction)."""

    name: str
    group: str
    dtype: str
    batch: int
    tolerance: float
    symmetries: str | None
    columns: list[Column]
    rows: list[LayerRow]
    predicted: Break | None
    measured_break: int | None
    restricted: int | None = None

    def verdict(self) -> str:
        """One line: where quarter-turn exactness first breaks and why, or that it holds."""
        if self.symmetries is None:
            return (f"{self.group} has no quarter turn, half turn or flip: no layer is "
                    "expected to be exact (a plain CNN is not; its errors are what an "
                    "equivariant network removes)")
        if self.measured_break is None:
            worst = max((r.max_symmetric_error or 0.0 for r in self.rows), default=0.0)
            text = (f"every layer is exact under {self.symmetries} (largest error "
                    f"{worst:.1e} <= {self.tolerance:g})")
            if self.predicted is not None:
                text += f"; the plan expected a break at {self.predicted.describe()}"
            return text
        row = self.rows[self.measured_break]
        err = f"error {row.max_symmetric_error or 0.0:.1e} > {self.tolerance:g}"
        where = f"exactness under {self.symmetries} breaks first at {row.label}"
        brk = self.predicted
        if brk is not None and brk.index == self.measured_break:
            return f"{where} ({row.op}, {brk.height}x{brk.width} in, {err}): {brk.reason}"
        if brk is not None and brk.index < self.measured_break:
            return f"{where} ({row.op}, {err}); the plan breaks it at {brk.describe()}"
        return (f"{where} ({row.op}, {err}): the plan gives no reason (no stride, pool or "
                "head that breaks it; round-off above the tolerance?)")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict()
        return out


def _trivial(stage: Stage) -> bool:
    """Whether g acts on ``stage``'s output by moving the map alone (logits, or fields of
    dimension 1)."""
    return stage.feature is None or stage.feature.field.dim == 1


def _act(y: torch.Tensor, stage: Stage, col: Column, g: Element | None) -> torch.Tensor:
    """``g . y`` for a block output ``y`` of ``stage``: logits (B, K) unchanged, maps moved
    in space and, for fields of dimension > 1, their channels permuted (``g`` in the
    stage's group, not None)."""
    if stage.feature is None and not stage.dense:
        return y
    if stage.feature is not None and col.grid_exact and g is not None:
        return transform_features(y, stage.feature, g)
    out = moved(y, col.degrees, col.flip)
    if _trivial(stage):
        return out
    perm = torch.as_tensor(stage.feature.permutation(g), device=y.device)
    permuted = torch.empty_like(out)
    permuted[:, perm] = out
    return permuted


def _rel(got: torch.Tensor, want: torch.Tensor, base: torch.Tensor) -> float:
    """||got - want|| / ||base - mean_batch(base)||."""
    spread = (base - base.mean(dim=0, keepdim=True)).norm().clamp_min(1e-300)
    return float((got - want).norm() / spread)


def _labels(paths: Sequence[str]) -> list[str]:
    """Spec paths, with ``#k`` (1-based) on the blocks of a repeated layer."""
    counts = {p: paths.count(p) for p in paths}
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        seen[p] = seen.get(p, 0) + 1
        out.append(f"{p}#{seen[p]}" if counts[p] > 1 else p)
    return out


def _describe(stage: Stage) -> tuple[str, str]:
    """``(fields, size)`` of a block's output: ``16xregular C16``, ``28x28``."""
    if stage.feature is None:
        what = f"{stage.logits} logits" + (" per pixel" if stage.dense else "")
        return what, f"{stage.height}x{stage.width}" if stage.dense else "-"
    return f"{stage.feature.name} {stage.group.name}", f"{stage.height}x{stage.width}"


@torch.no_grad()
def layer_report(
    model: ZooModel, inputs: torch.Tensor, angles: Sequence[float] = (15.0, 45.0)
) -> LayerReport:
    """The per-layer report of ``model`` (eval mode, in ``inputs``' dtype) on ``inputs``
    (B, C, H, W), which should lie inside the inscribed disk (smooth images,
    :func:`~epdo.zoo.equivariance.smooth_images`) so that a resampled rotation loses
    nothing at the corners. See the module docstring for the errors and columns."""
    group = model.plan.input.group
    cols = columns_for(group, angles, inputs.shape[-2] == inputs.shape[-1])
    batch = inputs.shape[0]
    xs = torch.cat([inputs] + [moved(inputs, c.degrees, c.flip) for c in cols])
    plans = model.plan.layers
    labels = _labels([p.path for p in plans])
    rows: list[LayerRow] = []
    restricted = None
    for i, (plan, out) in enumerate(zip(plans, model.block_outputs(xs), strict=True)):
        stage = plan.out
        fields, size = _describe(stage)
        row = LayerRow(i, plan.path, labels[i], plan.op, fields, size, stage.group.name)
        base = out[:batch]
        disk = disk_mask(*out.shape[-2:], out.dtype).to(out.device) if out.ndim == 4 else None
        for j, col in enumerate(cols):
            g = col.element(stage.group)
            if g is None and not _trivial(stage):
                row.errors.append(None)
                row.symmetric.append(False)
                continue
            got = out[(j + 1) * batch:(j + 2) * batch]
            want = _act(base, stage, col, g)
            if not col.grid_exact and disk is not None:
                got, want, ref = got * disk, want * disk, base * disk
            else:
                ref = base
            row.errors.append(_rel(got, want, ref))
            row.symmetric.append(col.grid_exact and g is not None)
        if restricted is None and group.reflections and not stage.group.reflections:
            restricted = i
        rows.append(row)
    tol = tolerance_for(inputs.dtype)
    measured = next((r.index for r in rows
                     if (r.max_symmetric_error or 0.0) > tol), None)
    return LayerReport(
        name=model.spec.name, group=group.name, dtype=str(inputs.dtype).replace("torch.", ""),
        batch=batch, tolerance=tol, symmetries=symmetry_words(group), columns=cols,
        rows=rows, predicted=first_break(plans), measured_break=measured,
        restricted=restricted,
    )
