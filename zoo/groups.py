"""The planar symmetry groups C_N and D_N.

An element is a pair ``(r, m)`` with ``r in 0..N-1`` and ``m in {0, 1}``; it stands for
``rot^r flip^m``: first the reflection (if ``m = 1``), then the rotation by ``2*pi*r/N``.
The plane uses x to the right and y up; the reflection is ``F = diag(1, -1)`` (y -> -y),
so the element acts on the plane by ``A(r, m) = R(2*pi*r/N) F^m``.

Composition: ``(r1, m1)(r2, m2) = (r1 + (-1)^m1 r2 mod N, m1 xor m2)``.
Elements are indexed ``m*N + r``, which makes the regular representation of D_N restrict
to two regular representations of C_N without re-indexing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

Element = tuple[int, int]

_GROUP_NAME = re.compile(r"^([CD])([1-9][0-9]*)$")


@dataclass(frozen=True)
class Group:
    """C_N (``reflections=False``) or D_N (``reflections=True``), N >= 1."""

    N: int
    reflections: bool = False

    def __post_init__(self) -> None:
        if self.N < 1:
            raise ValueError(f"group order N must be >= 1, got {self.N}")

    @property
    def name(self) -> str:
        return f"{'D' if self.reflections else 'C'}{self.N}"

    def __str__(self) -> str:
        return self.name

    @property
    def order(self) -> int:
        """|G|: N for C_N, 2N for D_N."""
        return self.N * (2 if self.reflections else 1)

    @cached_property
    def elements(self) -> list[Element]:
        """All elements, in index order ``m*N + r``."""
        flips = (0, 1) if self.reflections else (0,)
        return [(r, m) for m in flips for r in range(self.N)]

    def index(self, g: Element) -> int:
        r, m = g
        return m * self.N + r % self.N

    def compose(self, a: Element, b: Element) -> Element:
        (r1, m1), (r2, m2) = a, b
        sign = -1 if m1 else 1
        return ((r1 + sign * r2) % self.N, m1 ^ m2)

    def inverse(self, g: Element) -> Element:
        r, m = g
        return (r % self.N, 1) if m else ((-r) % self.N, 0)

    @property
    def identity(self) -> Element:
        return (0, 0)

    @property
    def generators(self) -> list[Element]:
        """The rotation by 2*pi/N, and the reflection for D_N."""
        gens: list[Element] = [(1 % self.N, 0)]
        if self.reflections:
            gens.append((0, 1))
        return gens

    def angle(self, g: Element) -> float:
        """Rotation angle of ``g`` in radians."""
        return 2.0 * math.pi * g[0] / self.N

    def plane_matrix(self, g: Element) -> np.ndarray:
        """The 2x2 orthogonal matrix A(g) = R(theta) F^m acting on (x, y), float64.

        Entries that are mathematically 0 or +-1 (multiples of 90 degrees) are exact.
        """
        r, m = g
        quarter = (4 * r) % self.N == 0
        if quarter:
            q = (4 * r // self.N) % 4
            c, s = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][q]
        else:
            theta = self.angle(g)
            c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -s], [s, c]], dtype=np.float64)
        flip = np.diag([1.0, -1.0]) if m else np.eye(2)
        return rot @ flip

    def is_grid_exact(self, g: Element) -> bool:
        """True when ``g`` maps the square pixel grid onto itself (multiples of 90 degrees)."""
        return (4 * g[0]) % self.N == 0

    @property
    def grid_exact_elements(self) -> list[Element]:
        return [g for g in self.elements if self.is_grid_exact(g)]

    def quarter_turns(self, g: Element) -> int:
        """For a grid-exact ``g``: its rotation in quarter turns (counter-clockwise)."""
        if not self.is_grid_exact(g):
            raise ValueError(f"{g} of {self.name} is not a multiple of 90 degrees")
        return (4 * g[0] // self.N) % 4

    def rotation_subgroup(self) -> Group:
        """C_N inside D_N (or C_N itself)."""
        return Group(self.N, reflections=False)

    def describe(self, g: Element) -> str:
        deg = 360.0 * g[0] / self.N
        text = f"rot {deg:g}°"
        return text + " ∘ flip" if g[1] else text


def parse_group(name: str) -> Group:
    """``"C16"`` -> C_16, ``"D8"`` -> D_8, N at most ``EPDO_MAX_GROUP_N``
    (:data:`epdo.zoo.spec.limits.MAX_GROUP_N`). Raises ValueError otherwise."""
    from .spec.limits import GROUP_N

    text = str(name).strip()
    match = _GROUP_NAME.match(text)
    if not match:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(
            f"unknown group {shown!r}: expected C<N> or D<N> with N >= 1, e.g. C16 or D16"
        )
    digits, top = match.group(2), GROUP_N.value
    if len(digits) > len(str(top)) or int(digits) > top:
        shown = digits if len(digits) <= 12 else f"{digits[:3]}... ({len(digits)} digits)"
        raise ValueError(
            f"group {match.group(1)}{shown}: N is above {top} ({GROUP_N.hint}); the papers "
            "use N up to 16"
        )
    return Group(int(digits), reflections=match.group(1) == "D")


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending (in about sqrt(n) steps)."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]
