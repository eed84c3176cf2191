"""Exact-size rules: the input sizes at which a spec is exactly equivariant, from its plan.

The grid-exact elements of a group (:meth:`~epdo.zoo.groups.Group.grid_exact_elements`: the
quarter turns of C_4k, the half turn of C_2k, the flips of D_N) map the square pixel grid
onto itself, so a layer built from stride-1 'same' convolutions of odd kernel, 1x1 maps,
upsampling, skips, group pooling and global pooling commutes with them exactly at every
size. A layer that samples the grid does so only at some sizes: on an axis of n pixels a
stride s keeps pixels 0, s, ..., which a turn (pixel i -> n - 1 - i) maps onto themselves
when s divides n - 1; a pool of s tiles the axis when s divides n
(:func:`~epdo.zoo.stages.stride_break`, :func:`~epdo.zoo.stages.pool_break`). Every op
states its own rule as part of its definition (``Op.exactness``, :mod:`epdo.zoo.ops.base`);
this module walks a plan with them:

- :func:`first_break`: the first top-level layer that is not exact at its planned input
  size, and why;
- :func:`exact_sizes`: the square input sizes up to a bound at which every layer is exact,
  found by planning the spec at each size (:func:`~epdo.zoo.plan.plan_layers`), with no
  list of sizes written anywhere;
- :func:`size_rule`: those sizes summed up in words (``sizes 4k+3: 7, 11, 15, ...``,
  ``multiples of 4``) beside the verdict for the spec's own size;
- :func:`exactness_note`: the one-line warning for a spec whose own input size breaks it.

A group with no grid-exact element besides the identity (C1, C3, C5, ...) has nothing to be
exact about: a plain CNN (C1) is not meant to be. This module knows nothing about tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .groups import Group
from .ops import OPS
from .plan import plan_layers
from .stages import LayerPlan

__all__ = [
    "MOST",
    "Break",
    "SizeRule",
    "describe_sizes",
    "exact_sizes",
    "exactness_note",
    "first_break",
    "nearest_sizes",
    "size_rule",
    "symmetry_words",
]

MOST = 256
"""The largest square input size the rule is searched up to (at least twice the spec's)."""


def symmetry_words(group: Group) -> str | None:
    """The grid-exact elements of ``group`` besides the identity, in words (``quarter turns
    and flips``, ``the half turn``), or None when it has none (C1, C3, ...)."""
    turns = "quarter turns" if group.N % 4 == 0 else "the half turn" if group.N % 2 == 0 \
        else None
    parts = [p for p in (turns, "flips" if group.reflections else None) if p]
    return " and ".join(parts) if parts else None


@dataclass(frozen=True)
class Break:
    """Where exactness breaks: block ``index`` of the plan (top-level layers, repeats
    expanded; -1 for the input itself), its spec ``path`` and ``op``, the ``height x width``
    it receives, and the ``reason`` derived from its plan."""

    index: int
    path: str
    op: str
    height: int
    width: int
    reason: str

    def describe(self) -> str:
        """``layers[2] (residual, 32x32 in): <reason>``."""
        return f"{self.path} ({self.op}, {self.height}x{self.width} in): {self.reason}"


def first_break(layers: Sequence[LayerPlan]) -> Break | None:
    """The first of a model's top-level ``layers`` that is not exactly equivariant under its
    group's grid-exact elements at its planned input size (each op's ``exactness``), or None.
    A non-square input breaks the quarter turns before any layer does (they do not map an
    H x W grid with H != W onto itself)."""
    if not layers:
        return None
    start = layers[0].inp
    if start.group.N % 4 == 0 and start.height != start.width:
        return Break(-1, "input", "input", start.height, start.width,
                     f"a quarter turn does not map a {start.height}x{start.width} grid onto "
                     "itself (the input is not square)")
    for i, plan in enumerate(layers):
        reason = OPS[plan.op].why_inexact(plan)
        if reason is not None:
            return Break(i, plan.path, plan.op, plan.inp.height, plan.inp.width, reason)
    return None


def _breaks(layers: Sequence[LayerPlan]) -> dict[str, Break]:
    """Every top-level layer of ``layers`` that is not exact, by path (the first block of a
    repeated layer that breaks)."""
    out: dict[str, Break] = {}
    for i, plan in enumerate(layers):
        reason = OPS[plan.op].why_inexact(plan)
        if reason is not None and plan.path not in out:
            out[plan.path] = Break(i, plan.path, plan.op, plan.inp.height, plan.inp.width,
                                   reason)
    return out


def _survey(spec: Any, most: int) -> tuple[list[int], list[str]]:
    """The square sizes up to ``most`` at which the spec plans and every layer is exact, and
    the paths of the layers that break at every size that plans (in order)."""
    sizes: list[int] = []
    always: list[str] | None = None
    for n in range(1, most + 1):
        layers = plan_layers(spec, n, n)
        if layers is None:
            continue
        broken = _breaks(layers)
        if not broken:
            sizes.append(n)
        always = list(broken) if always is None else [p for p in always if p in broken]
    return sizes, always or []


def exact_sizes(spec: Any, most: int = MOST) -> list[int]:
    """The square input sizes ``n`` (1 <= n <= ``most``) at which the spec plans and every
    layer is exact (:func:`first_break` is None), found by planning it at each size."""
    return _survey(spec, most)[0]


def _period(sizes: Sequence[int], most: int) -> int | None:
    """The smallest d such that, from the first size on, n is in ``sizes`` exactly when
    n + d is (up to ``most``), seen over at least three periods; None when there is none."""
    members, start = set(sizes), sizes[0]
    for d in range(1, (most - start) // 3 + 1):
        if all((n in members) == (n + d in members) for n in range(start, most - d + 1)):
            return d
    return None


def describe_sizes(sizes: Sequence[int], most: int, shown: int = 4) -> str:
    """Square sizes in words: ``multiples of 4: 4, 8, 12, 16, ...``, ``sizes 4k+3: 7, 11,
    15, 19, ...``, ``sizes 1, 3 mod 8 from 9: ...``, ``every size from 5``, or the sizes
    themselves when they follow no period (``none up to 256`` when empty)."""
    if not sizes:
        return f"none up to {most}"
    listed = ", ".join(str(n) for n in sizes[:shown]) + (", ..." if len(sizes) > shown else "")
    d = _period(sizes, most)
    if d is None:
        return f"sizes {listed}"
    if d == 1:
        return f"every size from {sizes[0]}"
    residues = sorted({n % d for n in sizes})
    if residues == [0]:
        words = f"multiples of {d}"
    elif len(residues) == 1:
        words = f"sizes {d}k+{residues[0]}"
    else:
        words = f"sizes {', '.join(str(r) for r in residues)} mod {d}"
    if any(n % d in residues for n in range(1, sizes[0])):
        words += f" from {sizes[0]}"
    return f"{words}: {listed}"


def nearest_sizes(sizes: Sequence[int], n: int) -> list[int]:
    """The largest of ``sizes`` below ``n`` and the smallest above it (those that exist)."""
    below = [s for s in sizes if s < n]
    above = [s for s in sizes if s > n]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


@dataclass(frozen=True)
class SizeRule:
    """At which square input sizes a spec is exactly equivariant under ``symmetries`` (the
    grid-exact elements of its ``group``; None: it has none), up to ``most``.

    ``sizes``: every such size; ``rule``: them in words (:func:`describe_sizes`);
    ``always``: when there is none, a layer that breaks at every size (a head that reads
    orientation channels), at the spec's size; ``height``/``width``: the spec's input,
    ``breaks`` the first layer that is not exact there (None: exact)."""

    group: str
    symmetries: str | None
    most: int
    sizes: tuple[int, ...]
    rule: str
    height: int
    width: int
    breaks: Break | None
    always: Break | None = None

    @property
    def exact_here(self) -> bool:
        """Whether the spec's own input size is exact (never for a group without
        grid-exact elements)."""
        return self.symmetries is not None and self.breaks is None

    @property
    def nearest(self) -> list[int]:
        """The exact sizes nearest the spec's input height, below and above it."""
        return nearest_sizes(self.sizes, self.height)

    def line(self) -> str:
        """The rule in one line, with the verdict for the spec's own size."""
        if self.symmetries is None:
            return (f"exact sizes: none ({self.group} has no quarter turn, half turn or flip; "
                    "a plain CNN is not expected to be exactly equivariant)")
        rule = self.rule
        if self.always is not None:
            rule += f" ({self.always.path} breaks at every size: {self.always.reason})"
        here = f"{self.height}x{self.width}"
        verdict = (f"the input {here} is exact" if self.breaks is None
                   else f"the input {here} is not: {self.breaks.describe()}")
        return f"exact sizes ({self.symmetries}, square inputs): {rule}; {verdict}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sizes"] = list(self.sizes)
        out["exact_here"] = self.exact_here
        out["nearest"] = self.nearest
        out["line"] = self.line()
        return out


def size_rule(spec: Any, most: int | None = None) -> SizeRule:
    """The :class:`SizeRule` of a loaded spec (``spec.plan`` is its plan at its own size),
    searched up to ``most`` (default: :data:`MOST`, or twice the input if larger)."""
    h, w = spec.input.height, spec.input.width
    most = most if most is not None else max(MOST, 2 * max(h, w))
    group = spec.group_obj
    words = symmetry_words(group)
    if words is None:
        return SizeRule(group.name, None, most, (), "none", h, w, None)
    sizes, always = _survey(spec, most)
    here = _breaks(spec.plan.layers)
    common = next((here[p] for p in always if p in here), None) if not sizes else None
    return SizeRule(group.name, words, most, tuple(sizes), describe_sizes(sizes, most), h, w,
                    first_break(spec.plan.layers), common)


def exactness_note(spec: Any, rule: SizeRule | None = None) -> str | None:
    """The warning for a spec whose input size breaks exact equivariance under its group's
    grid-exact elements -- the layer, the reason and the nearest exact sizes -- or None
    (exact, or a group with nothing to be exact about). ``rule``: its :func:`size_rule`
    when already computed."""
    if symmetry_words(spec.group_obj) is None or first_break(spec.plan.layers) is None:
        return None
    rule = rule if rule is not None else size_rule(spec)
    h, w = spec.input.height, spec.input.width
    near = rule.nearest
    if near:
        sizes = f"nearest exact sizes: {' and '.join(str(n) for n in near)} ({rule.rule})"
    elif rule.always is not None:
        sizes = f"no input size is exact ({rule.always.path} breaks at every size)"
    else:
        sizes = f"no square input size up to {rule.most} is exact"
    return (f"input {h}x{w} is not exactly equivariant under {rule.symmetries}: "
            f"{rule.breaks.describe()}; {sizes}")
