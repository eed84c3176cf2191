"""TorchScript (``.ts``; readers also take ``.pt`` and ``.torchscript``): the traced
inference graph, run by torch (``torch.jit.load``).

- Written by ``torch.jit.trace`` of the inference graph and ``torch.jit.save``.
- Metadata: the extra file ``extra/epdo.json``.
- Digest: the archive digest (:mod:`epdo.exporters.archive`): every entry but the metadata
  and the per-save id, and the declared input shape, which a TorchScript graph does not fix.
- Read: the zip checked (:func:`~epdo.exporters.archive.open_archive`: layout, CRCs, zip
  bombs) before torch sees a byte; torch then loads the checked bytes.
- Run: torch, on CUDA when asked for (or ``auto`` with a GPU), else the CPU.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..archive import archive_digest, open_archive, seal
from ..artifact import (
    EXTRA_FILE,
    ArtifactError,
    Contents,
    decode_text,
    first_line,
    read_artifact_bytes,
)
from .base import ArtifactFormat, Session, register
from .torch_common import TorchSession, torch_device

__all__ = ["TorchScriptFormat", "save_torchscript", "torchscript_digest"]

_KIND = "TorchScript model"


class TorchScriptFormat(ArtifactFormat):
    """See the module docstring."""

    name = "torchscript"
    family = "torchscript"
    suffixes = (".ts", ".pt", ".torchscript")
    title = "TorchScript model"
    summary = "torchscript (traced graph: runs with torch)"
    bench_key = "torchscript"

    def build(self, graph: Any, example: Any, *, opset: int | None = None) -> Any:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(graph.eval(), (example,), check_trace=False)

    def seal(self, built: Any, metadata: dict[str, Any], where: Any) -> tuple[bytes, str]:
        import torch

        def pack(meta: dict[str, Any] | None) -> bytes:
            buffer = io.BytesIO()
            extra = {} if meta is None else {EXTRA_FILE: json.dumps(meta, sort_keys=True)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
                torch.jit.save(built, buffer, _extra_files=extra)
            return buffer.getvalue()

        return seal(pack, metadata, where, _KIND)

    def inspect(self, data: bytes, where: Any, *, complete: bool = True) -> Contents:
        with open_archive(data, where, _KIND) as archive:
            entries = archive.entries_digest()
            text = archive.metadata_text()
        meta = decode_text(text, where, complete=complete)
        return Contents(metadata=meta, digest=lambda shape: archive_digest(entries, shape))

    def load(self, data: bytes, where: Any, contents: Contents, provider: str, *,
             threads: int | None = None) -> Session:
        import torch

        device = torch_device(provider)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
                module = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as exc:  # torch raises RuntimeError and friends on bad archives
            raise ArtifactError(f"{where}: not a loadable TorchScript model "
                                f"({first_line(exc)})") from exc
        return TorchSession(module.eval(), device)


FORMAT = register(TorchScriptFormat())


def save_torchscript(module: Any, path: str | os.PathLike[str],
                     metadata: dict[str, Any]) -> str:
    """Write a TorchScript ``module`` (scripted or traced) at ``path`` with ``metadata`` in
    ``extra/epdo.json``, its ``epdo.verification`` completed with the digest; returns the
    digest."""
    data, digest = FORMAT.seal(module, metadata, path)
    Path(path).write_bytes(data)
    return digest


def torchscript_digest(path: str | os.PathLike[str]) -> str:
    """The digest of a TorchScript file as its metadata should record it: its entries and
    the input shape its ``extra/epdo.json`` declares (nothing else is checked)."""
    with open_archive(read_artifact_bytes(path), path, _KIND) as archive:
        entries = archive.entries_digest()
        text = archive.metadata_text()
    try:
        shape = json.loads(text or "{}").get("epdo.input_shape")
    except (ValueError, AttributeError, RecursionError):
        shape = None
    return archive_digest(entries, shape)
