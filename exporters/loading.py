"""Reading an artifact the one way every reader does (``epdo info``, ``epdo predict``,
serving, export verification): the file read once, its format's safe inspection, the
digest, and that it fits this machine, before anything of it is loaded or run.

:func:`check_artifact` is that path for bytes already read; :func:`open_artifact` reads the
file first; :func:`read_metadata` gives the checked metadata alone (nothing is run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .artifact import (
    ArtifactError,
    Contents,
    check_digest,
    check_metadata_digest,
    read_artifact_bytes,
)
from .formats import ArtifactFormat, format_for

__all__ = ["CheckedArtifact", "check_artifact", "open_artifact", "read_metadata"]


@dataclass
class CheckedArtifact:
    """An artifact's bytes that passed every check of the module docstring.

    Attributes:
        format: its format.
        data: the bytes that were checked (the ones to load: the path is not read again).
        contents: what the format read of them (metadata, graph facts).
        verified: whether its digest was checked (False only for an artifact without one,
            accepted with ``trust``).
    """

    format: ArtifactFormat
    data: bytes
    contents: Contents
    verified: bool

    @property
    def metadata(self) -> dict[str, Any]:
        """The checked metadata (``epdo.*`` keys; a trusted artifact may lack some)."""
        return self.contents.metadata


def check_artifact(fmt: ArtifactFormat, data: bytes, where: Any, *, trust: bool = False,
                   complete: bool = True) -> CheckedArtifact:
    """Check the bytes of an artifact of format ``fmt``, running nothing of it: the
    format's inspection (layout, graph, metadata types), the model's digest (a missing one
    is refused unless ``trust``), that it fits this machine and its graph, and the metadata's
    digest (artifacts written before it existed have none); a graph that calls operators
    outside its format's allow-list is refused unless ``trust``.

    Raises:
        ArtifactError: one line naming ``where``; UnverifiedArtifactError for a missing
            digest without ``trust``.
    """
    contents = fmt.inspect(data, where, complete=complete)
    shape = contents.metadata.get("epdo.input_shape")
    verified = check_digest(contents.metadata, contents.digest(shape), where, trust=trust)
    fmt.check_fits(contents, where)
    check_metadata_digest(contents.metadata, where)
    if contents.unsafe and not trust:
        shown = ", ".join(contents.unsafe[:3]) + (", ..." if len(contents.unsafe) > 3 else "")
        raise ArtifactError(f"{where}: its graph calls {shown}, outside the tensor operators "
                            "epdo runs (file access, I/O or other side effects); pass --trust "
                            "only if you vouch for the file")
    return CheckedArtifact(fmt, data, contents, verified)


def open_artifact(path: str | os.PathLike[str], *, trust: bool = False,
                  complete: bool = True, error: type[Exception] | None = None,
                  what: str = "file") -> CheckedArtifact:
    """:func:`check_artifact` of the file at ``path`` (its format from its suffix), read
    once; ``error`` and ``what`` as :func:`~epdo.exporters.artifact.read_artifact_bytes`
    takes them for a file that cannot be read."""
    fmt = format_for(path)
    data = read_artifact_bytes(path, error, what)  # type: ignore[arg-type]
    return check_artifact(fmt, data, path, trust=trust, complete=complete)


def read_metadata(path: str | os.PathLike[str], trust: bool = False) -> dict[str, Any]:
    """The checked metadata of an artifact (every key present; ``trust`` accepts one
    without a digest, never one whose digest does not match). Nothing is run.

    Raises:
        ArtifactError: unknown suffix, missing file or not a regular file, truncated or
            tampered artifact, missing keys, wrong types, metadata that disagrees with the
            graph, an AOTInductor package that does not fit this machine; the message is
            one line.
    """
    return open_artifact(path, trust=trust).metadata
