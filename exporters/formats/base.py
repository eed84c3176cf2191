"""The artifact format: what one format of exported model declares and does, and the
registry that export, serving, bench and the command line loop over.

A format is one module of this package that subclasses :class:`ArtifactFormat` and calls
:func:`register` once with an instance. What it declares:

- ``name`` (``epdo export --format NAME``), ``suffixes`` (the first is the one export
  writes; the longest suffix a file name ends with decides its format), ``family`` (the
  runtime that runs it: ``.pt2`` programs and their AOTInductor packages are one family),
  ``title`` (how
  messages name a file of it), ``summary`` (one line for ``--help``);
- ``atol``: the default tolerance of export verification;
- ``native_code``: loading a file of it runs compiled code it carries, so it is loaded only
  with ``--trust``;
- ``bench_key`` and ``bench_by_default``: the ``epdo bench`` figure
  ``infer_<bench_key>_images_per_s``, timed unless it takes minutes to build;
- ``triton_platform`` and ``triton_file``: how Triton runs it, if it does.

What it does (every method takes or returns bytes; nothing reads a path twice):

- :meth:`~ArtifactFormat.require`: refuse early what cannot be written here;
- :meth:`~ArtifactFormat.build`: the expensive step (trace, export, compile), once;
- :meth:`~ArtifactFormat.seal`: the artifact's bytes with the metadata and its digest;
- :meth:`~ArtifactFormat.inspect`: read the bytes safely, running nothing: the checked
  metadata, the digest of what was read, the graph's input and output shapes
  (:class:`~epdo.exporters.artifact.Contents`);
- :meth:`~ArtifactFormat.check_fits`: that the artifact runs here (default: metadata and
  graph agree);
- :meth:`~ArtifactFormat.load`: a :class:`Session` over inspected bytes, on a provider;
- :meth:`~ArtifactFormat.runtime_rows`: what ``epdo info`` says it needs to run.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifact import ArtifactError, Contents, ServingError, check_graph_agreement

__all__ = ["PROVIDERS", "ArtifactFormat", "Session", "all_formats", "check_provider",
           "find_format", "format_named", "register"]

PROVIDERS = ("auto", "cpu", "cuda")
"""Where a served artifact may run: ``auto`` (a GPU when there is one and the runtime can
use it), ``cpu`` or ``cuda``."""


def check_provider(provider: str) -> None:
    """ServingError for a provider that is not one of :data:`PROVIDERS`."""
    if provider not in PROVIDERS:
        raise ServingError(f"unknown provider {provider!r}: choose auto, cpu or cuda")


class Session(abc.ABC):
    """A loaded artifact, ready to run.

    Attributes:
        providers: where it runs (onnxruntime provider names, or the torch device).
    """

    providers: list[str]

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(n, K)`` (a segmentation's ``(n, K, H, W)``) of a batch
        ``(n, C, H, W)`` float32 raw pixels in [0, 1]."""


class ArtifactFormat(abc.ABC):
    """One artifact format; see the module docstring."""

    name: ClassVar[str]
    family: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    title: ClassVar[str]
    summary: ClassVar[str]
    atol: ClassVar[float] = 1e-4
    native_code: ClassVar[bool] = False
    bench_key: ClassVar[str]
    bench_by_default: ClassVar[bool] = True
    triton_platform: ClassVar[str | None] = None
    """The Triton backend platform that runs a file of this format (None: none epdo
    targets); :mod:`epdo.exporters.triton`."""
    triton_file: ClassVar[str] = ""
    """The file name that platform loads from a model's version folder."""

    @property
    def suffix(self) -> str:
        """The suffix export gives a file of this format."""
        return self.suffixes[0]

    def require(self) -> None:
        """Raise :class:`~epdo.exporters.artifact.ExportError` (one line) when this
        machine cannot write the format (a missing compiler); checked before anything
        else is read. Every machine can write most formats: nothing to check."""
        return None

    @abc.abstractmethod
    def build(self, graph: Any, example: Any, *, opset: int) -> Any:
        """The format's form of the inference ``graph`` (raw images in, logits out: a
        vector per image or a map per image),
        traced or exported at ``example`` ``(B, C, H, W)``, B >= 2, batch left dynamic.
        ``opset`` is the ONNX opset (other formats ignore it)."""

    def notes(self, built: Any) -> dict[str, Any]:
        """What the artifact records of how it was built (``epdo.verification`` keys)."""
        return {}

    @abc.abstractmethod
    def seal(self, built: Any, metadata: dict[str, Any], where: Any) -> tuple[bytes, str]:
        """``(bytes, digest)``: the artifact with ``metadata``, its ``epdo.verification``
        completed with the digest."""

    @abc.abstractmethod
    def inspect(self, data: bytes, where: Any, *, complete: bool = True) -> Contents:
        """Read the bytes safely (nothing of the file is run); ArtifactError (one line)
        for anything this format never writes. ``complete``: every metadata key must be
        there."""

    def check_fits(self, contents: Contents, where: Any) -> None:
        """That the artifact can run here and its metadata fits its graph."""
        check_graph_agreement(contents.metadata, contents.input_dims, contents.output_dims,
                              where)

    def accepts(self, provider: str, where: Any) -> None:
        """ServingError when a file of this format cannot run on ``provider`` at all
        (checked before the file is read)."""
        check_provider(provider)

    @abc.abstractmethod
    def load(self, data: bytes, where: Any, contents: Contents, provider: str, *,
             threads: int | None = None) -> Session:
        """A session over bytes that :meth:`inspect` accepted; ``provider`` is ``auto``,
        ``cpu`` or ``cuda``; ``threads``: intra-op threads of a runtime that has its own
        (onnxruntime; torch's are process-wide). Raises ArtifactError (or ServingError for a
        provider) when it cannot be loaded."""

    def runtime_rows(self, verification: dict[str, Any]) -> list[tuple[str, str]]:
        """Rows of ``epdo info``: what a file of this format needs to run."""
        return []

    def owns(self, name: str) -> int:
        """The length of the longest of its suffixes that ``name`` (lower case) ends with
        beyond its first character; 0 when none does."""
        return max((len(s) for s in self.suffixes if name.endswith(s) and len(name) > len(s)),
                   default=0)


_REGISTRY: dict[str, ArtifactFormat] = {}


def register(fmt: ArtifactFormat) -> ArtifactFormat:
    """Add a format to the registry (once per name)."""
    if fmt.name in _REGISTRY:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    _REGISTRY[fmt.name] = fmt
    return fmt


def all_formats() -> list[ArtifactFormat]:
    """The registered formats, in registration order."""
    return list(_REGISTRY.values())


def format_named(name: str) -> ArtifactFormat:
    """The format called ``name``; ArtifactError naming the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        names = list(_REGISTRY)
        raise ArtifactError(f"unknown format {name!r}; use {', '.join(names[:-1])} or "
                            f"{names[-1]}") from None


def find_format(path: str | os.PathLike[str]) -> ArtifactFormat | None:
    """The format of a file from its suffix (any case; the longest suffix that fits wins:
    ``.aoti.pt2`` over ``.pt2``); None for another suffix."""
    name = Path(path).name.lower()
    best: Callable[[ArtifactFormat], int] = lambda f: f.owns(name)  # noqa: E731
    fits = [f for f in _REGISTRY.values() if best(f)]
    return max(fits, key=best) if fits else None
