"""The ``torch.export`` program (``.pt2``): the inference graph as ATen operators and the
Neural ePDO's fused product (``epdo::stencil_product``), run by torch op by op, without a
compiler or epdo's model code; a program that calls the product loads where epdo is
installed (it registers the operator; earlier programs spell it in ATen operators).

- Written by ``torch.export.export`` (dynamic batch >= 1) and ``torch.export.save``: a zip
  of stored entries under one top folder, ``models/model.json`` (the graph, as JSON), the
  weights and constants as raw tensor bytes, ``data/sample_inputs/model.pt`` (the example
  batch) and the metadata in ``extra/epdo.json``.
- Digest: the archive digest (:mod:`epdo.exporters.archive`).
- Read: the zip checked, then the program checked as :mod:`.pt2_checks`
  says, before ``torch.export.load`` reads the checked bytes (never the path again);
  ``ExportedProgram.module(check_guards=False)`` builds the module (no guard function).
- Run: torch of a release that reads the file's ``torch.export`` format (its schema major
  version must match; the file records the writer), on the CPU or CUDA.
"""

from __future__ import annotations

import io
import json
from typing import Any

from ..archive import archive_digest, open_archive, seal
from ..artifact import EXTRA_FILE, ArtifactError, Contents, decode_text, first_line
from .base import ArtifactFormat, Session, register
from .pt2_checks import PROGRAM, bad, check_program
from .torch_common import TorchSession, export_program, quiet_torch, torch_device

__all__ = ["Pt2Format", "load_program"]


def load_program(data: bytes, where: Any, device: Any = "cpu") -> Any:
    """The module of a ``.pt2`` program's checked bytes: ``torch.export.load`` from the
    bytes, moved to ``device``, ``.module(check_guards=False)``; ArtifactError (one line)
    when torch cannot load it."""
    import torch

    import epdo.zoo.layers.product_op  # noqa: F401  (registers the ops a program may call)

    try:
        with quiet_torch():
            program = torch.export.load(io.BytesIO(data))
            if torch.device(device).type != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, torch.device(device))
            return program.module(check_guards=False)
    except Exception as exc:  # torch's deserializer raises many kinds of errors
        raise ArtifactError(f"{where}: not a loadable torch.export program "
                            f"({first_line(exc)[:200]})") from exc


class Pt2Format(ArtifactFormat):
    """See the module docstring."""

    name = "pt2"
    family = "pt2"
    suffixes = (".pt2",)
    title = PROGRAM
    summary = "pt2 (the torch.export program: runs with torch alone)"
    bench_key = "pt2"

    def build(self, graph: Any, example: Any, *, opset: int | None = None) -> Any:
        return export_program(graph, example)

    def notes(self, built: Any) -> dict[str, Any]:
        import torch

        return {"torch_version": torch.__version__}

    def seal(self, built: Any, metadata: dict[str, Any], where: Any) -> tuple[bytes, str]:
        import torch

        def pack(meta: dict[str, Any] | None) -> bytes:
            extra = None if meta is None else {EXTRA_FILE: json.dumps(meta, sort_keys=True)}
            buffer = io.BytesIO()
            with quiet_torch():
                torch.export.save(built, buffer, extra_files=extra)
            return buffer.getvalue()

        return seal(pack, metadata, where, PROGRAM)

    def inspect(self, data: bytes, where: Any, *, complete: bool = True) -> Contents:
        with open_archive(data, where, PROGRAM) as archive:
            if any(n.startswith("data/aotinductor/") for n in archive.names):
                raise bad(where, PROGRAM, "it is an AOTInductor package: name it "
                          "NAME.aoti.pt2")
            entries = archive.entries_digest()  # reads every entry: checks every CRC
            text = archive.metadata_text()
            dims, out_dims, writer = check_program(archive, where)
        meta = decode_text(text, where, complete=complete)
        return Contents(metadata=meta, digest=lambda shape: archive_digest(entries, shape),
                        input_dims=dims, output_dims=out_dims,
                        notes={"torch_version": writer})

    def load(self, data: bytes, where: Any, contents: Contents, provider: str, *,
             threads: int | None = None) -> Session:
        device = torch_device(provider)
        return TorchSession(load_program(data, where, device), device)

    def runtime_rows(self, verification: dict[str, Any]) -> list[tuple[str, str]]:
        return [("runs with", f"torch (written by {verification.get('torch_version')}; a "
                 "release that reads its torch.export format), CPU or CUDA; no compiler")]


FORMAT = register(Pt2Format())
