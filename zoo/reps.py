"""Permutation representations of C_N / D_N and the field types built from them.

Every representation here is the action of G on a finite G-set X, so rho(g) is a
permutation matrix with ``rho(g)[g.x, x] = 1`` and a feature vector transforms by
``(rho(g) v)[g.x] = v[x]``:

- ``trivial``: X = {*}, dim 1.
- ``regular``: X = G (left multiplication), dim |G|.
- ``quotient<M>``: X = G / C_M, the cosets of the rotations by multiples of 2*pi/M
  (M divides N), dim |G| / M. For C_N this is the quotient C_N/C_M, for D_N it is D_N/C_M.
  ``quotient1`` is the regular representation.

A *field type* (a spec's ``type:``) names the representation of one field, a
:class:`FieldRep`: a direct sum of such representations, e.g. ``[regular, quotient4]``
(dim 16 + 4 = 20 for C16). A feature map, a :class:`FeatureType` (what escnn calls a field
type), holds ``count`` fields of one FieldRep, laid out field after field: channel
``f * dim + c`` is component ``c`` of field ``f``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .groups import Element, Group, divisors

_QUOTIENT = re.compile(r"^quotient([1-9][0-9]*)$")


@dataclass(frozen=True)
class PermutationRep:
    """rho: G -> permutations of X, for X = {*} (``M = 0``) or X = G / C_M (``M >= 1``)."""

    group: Group
    M: int  # 0 for trivial, 1 for regular, M for quotient C_M

    def __post_init__(self) -> None:
        if self.M < 0 or (self.M > 0 and self.group.N % self.M != 0):
            raise ValueError(
                f"quotient{self.M} needs M dividing N={self.group.N} of {self.group.name}"
            )

    @property
    def name(self) -> str:
        if self.M == 0:
            return "trivial"
        if self.M == 1:
            return "regular"
        return f"quotient{self.M}"

    @property
    def is_regular(self) -> bool:
        return self.M == 1

    @property
    def n_cosets(self) -> int:
        """|C_N / C_M| = N / M (the rotation part of a coset)."""
        return self.group.N // self.M

    @property
    def dim(self) -> int:
        if self.M == 0:
            return 1
        return self.n_cosets * (2 if self.group.reflections else 1)

    def act(self, g: Element, x: int) -> int:
        """The index of ``g . x`` for the point of index ``x``."""
        if self.M == 0:
            return 0
        n = self.n_cosets
        j, m = x % n, x // n
        s, t = g
        sign = -1 if t else 1
        return (t ^ m) * n + (s + sign * j) % n

    @cached_property
    def _perms(self) -> np.ndarray:
        return np.array(
            [[self.act(g, x) for x in range(self.dim)] for g in self.group.elements],
            dtype=np.int64,
        )

    def permutation(self, g: Element) -> np.ndarray:
        """``p`` with ``p[x] = g . x`` (int64, shape (dim,))."""
        return self._perms[self.group.index(g)]

    def matrix(self, g: Element) -> np.ndarray:
        """rho(g) as a (dim, dim) float64 permutation matrix."""
        p = self.permutation(g)
        out = np.zeros((self.dim, self.dim))
        out[p, np.arange(self.dim)] = 1.0
        return out

    def restrict(self, subgroup: Group) -> list[PermutationRep]:
        """Restriction of D_N to C_N: the orbits of C_N on X, in channel order."""
        if subgroup != self.group.rotation_subgroup():
            raise ValueError(f"can only restrict {self.group.name} to its rotations")
        if not self.group.reflections:
            return [self]
        if self.M == 0:
            return [PermutationRep(subgroup, 0)]
        # points m*n + j: the halves m = 0 and m = 1 are the two C_N orbits C_N/C_M.
        return [PermutationRep(subgroup, self.M), PermutationRep(subgroup, self.M)]


def parse_rep(group: Group, name: str) -> PermutationRep:
    """``trivial`` | ``regular`` | ``quotient<M>`` -> the representation of ``group``."""
    text = str(name).strip()
    if text == "trivial":
        return PermutationRep(group, 0)
    if text == "regular":
        return PermutationRep(group, 1)
    match = _QUOTIENT.match(text)
    shown = text if len(text) <= 40 else text[:37] + "..."
    if match:
        digits = match.group(1)
        if len(digits) > len(str(group.N)) or group.N % int(digits) != 0:
            raise ValueError(
                f"{shown} is not a representation of {group.name}: C_{group.N}/C_"
                f"{digits if len(digits) <= 12 else 'M'} needs "
                f"M dividing {group.N}; allowed M: {divisors(group.N)}"
            )
        return PermutationRep(group, int(digits))
    raise ValueError(
        f"unknown representation {shown!r}: use trivial, regular or quotient<M> (e.g. "
        "quotient4)"
    )


@dataclass(frozen=True)
class FieldRep:
    """The representation of one field: the direct sum of ``reps`` (all of one group)."""

    reps: tuple[PermutationRep, ...]

    def __post_init__(self) -> None:
        if not self.reps:
            raise ValueError("a field type needs at least one representation")
        if len({r.group for r in self.reps}) != 1:
            raise ValueError("all representations of a field type must share one group")

    @property
    def group(self) -> Group:
        return self.reps[0].group

    @property
    def dim(self) -> int:
        return sum(r.dim for r in self.reps)

    @property
    def name(self) -> str:
        if len(self.reps) == 1:
            return self.reps[0].name
        return "[" + ", ".join(r.name for r in self.reps) + "]"

    @property
    def offsets(self) -> list[int]:
        """Start channel of each summand inside the field."""
        out, acc = [], 0
        for r in self.reps:
            out.append(acc)
            acc += r.dim
        return out

    @property
    def is_trivial(self) -> bool:
        return all(r.M == 0 for r in self.reps)

    def permutation(self, g: Element) -> np.ndarray:
        """``p`` with ``p[c] = g . c`` for the field's ``dim`` channels."""
        parts = [off + r.permutation(g) for off, r in zip(self.offsets, self.reps, strict=True)]
        return np.concatenate(parts)

    def matrix(self, g: Element) -> np.ndarray:
        p = self.permutation(g)
        out = np.zeros((self.dim, self.dim))
        out[p, np.arange(self.dim)] = 1.0
        return out

    def restrict(self, subgroup: Group) -> tuple[FieldRep, int]:
        """Restrict to ``subgroup`` (C_N in D_N), keeping channel order.

        Returns ``(field_type, multiplicity)``: a single-summand field splits into
        ``multiplicity`` fields (a D_N regular field -> 2 C_N regular fields); a mixed field
        stays one field whose summands are the restricted pieces.
        """
        pieces = [p for r in self.reps for p in r.restrict(subgroup)]
        if len(self.reps) == 1 and len(pieces) > 1:
            return FieldRep((pieces[0],)), len(pieces)
        return FieldRep(tuple(pieces)), 1


def parse_field_type(group: Group, spec: str | Sequence[str]) -> FieldRep:
    """A field type from its spec: ``"regular"`` or ``["regular", "quotient4"]``."""
    names = [spec] if isinstance(spec, str) else list(spec)
    return FieldRep(tuple(parse_rep(group, n) for n in names))


@dataclass(frozen=True)
class FeatureType:
    """``count`` fields of one ``field`` type: a feature map of ``count * field.dim`` channels."""

    field: FieldRep
    count: int

    @property
    def group(self) -> Group:
        return self.field.group

    @property
    def channels(self) -> int:
        return self.count * self.field.dim

    @property
    def name(self) -> str:
        return f"{self.count}x{self.field.name}"

    def permutation(self, g: Element) -> np.ndarray:
        """``p`` with ``p[c] = g . c`` over all channels (fields are permuted internally)."""
        d = self.field.dim
        base = self.field.permutation(g)
        return (np.arange(self.count)[:, None] * d + base[None, :]).reshape(-1)

    def restrict(self, subgroup: Group) -> FeatureType:
        field, mult = self.field.restrict(subgroup)
        return FeatureType(field, self.count * mult)

    def regular_fields_per(self, reduction: int) -> int:
        """``floor(channels / (reduction * |G|))``: how many regular fields carry this
        feature's channels reduced ``reduction`` times (a Neural ePDO generator's width,
        the papers' rule); 0 when the channels are too few."""
        return self.channels // (reduction * self.group.order)
