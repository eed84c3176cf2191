"""The sanity limits of a spec, in one place.

A spec is small text that decides how much memory and time epdo spends: a YAML alias bomb,
``repeat: 100000000`` or ``fields: 1000000000`` would otherwise take minutes or every byte
of memory before anything tells the user. Each limit is far above what the shipped zoo
needs (the CIFAR ResNets included); the ones a real user could outgrow are read from an
environment variable when they are checked, so ``EPDO_MAX_WEIGHTS=2000000000 epdo train
big.yaml`` raises one for one command. The error that reports a limit names its variable.

=========================  ===========================  ====================================
limit                      default                      raise with
=========================  ===========================  ====================================
spec file size             :data:`MAX_SPEC_BYTES`       ``EPDO_MAX_SPEC_BYTES``
YAML values (aliases       :data:`MAX_SPEC_NODES`       ``EPDO_MAX_SPEC_NODES``
expanded)
nesting depth              :data:`MAX_SPEC_DEPTH`       fixed
input channels             :data:`MAX_INPUT_CHANNELS`   fixed
``extends`` chain          :data:`MAX_EXTENDS_DEPTH`    fixed
folders ``extends`` may    the spec's own folder        ``EPDO_EXTENDS_PATH``
also read
group order N              :data:`MAX_GROUP_N`          ``EPDO_MAX_GROUP_N``
planned layers             :data:`MAX_LAYERS`           ``EPDO_MAX_LAYERS``
model weights              :data:`MAX_WEIGHTS`          ``EPDO_MAX_WEIGHTS``
activations per image      :data:`MAX_ACTIVATION_BYTES` ``EPDO_MAX_ACTIVATION_BYTES``
=========================  ===========================  ====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..envlimits import MAX_SETTING, whole_number
from .errors import SpecError

__all__ = [
    "ACTIVATION_BYTES",
    "EXTENDS_PATH_VARIABLE",
    "GROUP_N",
    "LAYERS",
    "MAX_ACTIVATION_BYTES",
    "MAX_EXTENDS_DEPTH",
    "MAX_GROUP_N",
    "MAX_INPUT_CHANNELS",
    "MAX_LAYERS",
    "MAX_SPEC_BYTES",
    "MAX_SPEC_DEPTH",
    "MAX_SPEC_NODES",
    "MAX_WEIGHTS",
    "SPEC_BYTES",
    "SPEC_NODES",
    "WEIGHTS",
    "Limit",
    "extends_roots",
]

MAX_SPEC_BYTES = 1 << 20
"""The largest spec file read, in bytes (1 MiB; the shipped specs are under 3 KiB)."""

MAX_SPEC_NODES = 100_000
"""The most values (mappings, lists, scalars) a spec may hold, counting every use of a YAML
alias as a copy of what it names (what validation walks). The shipped specs hold at most
204 (a checkpoint's resolved spec, defaults copied into every layer, about 600); a
440-byte alias bomb holds 435 million."""

MAX_SPEC_DEPTH = 32
"""The deepest nesting of mappings and lists (the shipped specs nest 5 deep)."""

MAX_EXTENDS_DEPTH = 16
"""The longest ``extends`` chain: a spec, its parent, the parent's parent, ..."""

EXTENDS_PATH_VARIABLE = "EPDO_EXTENDS_PATH"
"""The environment variable that lists (``os.pathsep``-separated) further folders whose
files a spec file may extend, beside the shipped specs and its own folder's tree."""

MAX_INPUT_CHANNELS = 65_536
"""The most channels an input image may have (``input.channels``; ``mean`` and ``std`` hold
one value per channel)."""

MAX_GROUP_N = 256
"""The largest N of C_N and D_N (the papers use N up to 16)."""

MAX_LAYERS = 10_000
"""The most layers a network plans to, ``repeat`` expanded and residual bodies included
(the largest shipped spec plans 65)."""

MAX_WEIGHTS = 1_000_000_000
"""The most weights a model may hold, counted as its inference form holds them (every
equivariant kernel expanded to the dense one it exports to): 4 GB in float32. The largest
shipped spec (the CIFAR wide ResNet) holds about 101 million."""

MAX_ACTIVATION_BYTES = 4 << 30
"""The most memory the values a forward pass computes for one image may take, in bytes
(4 GiB, float32; every layer's output and the Neural ePDO's generated stencils). The
largest shipped spec needs about 38 MiB."""


@dataclass(frozen=True)
class Limit:
    """A limit with its default and the environment variable that overrides it."""

    variable: str
    default: int
    what: str

    @property
    def value(self) -> int:
        """``$variable`` when set (a whole number of 1 or more), else the default."""
        text = os.environ.get(self.variable, "")
        if not text.strip():
            return self.default
        value = whole_number(text)
        if value is None:
            raise SpecError(f"${self.variable} must be a whole number from 1 to "
                            f"{MAX_SETTING:,}, got {text.strip()[:40]!r}")
        return value

    @property
    def hint(self) -> str:
        """How to raise it, for an error message."""
        return f"set {self.variable} to raise the limit of {self.value:,} {self.what}"


SPEC_BYTES = Limit("EPDO_MAX_SPEC_BYTES", MAX_SPEC_BYTES, "bytes")
SPEC_NODES = Limit("EPDO_MAX_SPEC_NODES", MAX_SPEC_NODES, "values")
GROUP_N = Limit("EPDO_MAX_GROUP_N", MAX_GROUP_N, "rotations")
LAYERS = Limit("EPDO_MAX_LAYERS", MAX_LAYERS, "layers")
WEIGHTS = Limit("EPDO_MAX_WEIGHTS", MAX_WEIGHTS, "weights")
ACTIVATION_BYTES = Limit("EPDO_MAX_ACTIVATION_BYTES", MAX_ACTIVATION_BYTES, "bytes")


def extends_roots() -> list[Path]:
    """The folders of ``$EPDO_EXTENDS_PATH`` (resolved; empty entries skipped)."""
    text = os.environ.get(EXTENDS_PATH_VARIABLE, "")
    roots = [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part]
    for root in roots:
        if root.exists() and not root.is_dir():
            raise SpecError(f"${EXTENDS_PATH_VARIABLE} names {str(root)[:200]!r}, which is not "
                            "a folder; list the folders whose specs may be extended")
    return roots
