"""TorchScript (``.ts``; readers also take ``.pt`` and ``.torchscript``): the traced
inference graph, run by torch (``torch.jit.load``).

- Written by ``torch.jit.trace`` of the inference graph and ``torch.jit.save``.
- Metadata: the extra file ``extra/epdo.json``.
- Digest: the archive digest (:mod:`epdo.exporters.archive`): every entry but the metadata
  and the per-save id, and the declared input shape, which a TorchScript graph does not fix.
- Read: the zip checked (:func:`~epdo.exporters.archive.open_archive`: layout, CRCs, zip
  bombs) before torch sees a byte. TorchScript is code: its code files may not define
  ``__setstate__`` (which would run on load), and once torch has compiled the checked bytes
  (nothing of the file runs), every node of the forward graph, submodules inlined, must be
  structural (:data:`STRUCTURAL`) or an ATen operator that touches nothing but tensors
  (:func:`tensor_operator`: no file name, path or storage among its arguments). A graph
  that calls anything else (``aten::from_file``, ``aten::save``, ``prim::Print``, a Python
  call) is refused unless the user vouches for the file (``--trust``).
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
from .pt2_checks import bad
from .torch_common import TorchSession, torch_device

__all__ = ["STRUCTURAL", "TorchScriptFormat", "save_torchscript", "tensor_operator",
           "torchscript_digest", "unsafe_operators"]

_KIND = "TorchScript model"
STRUCTURAL = frozenset({"prim::Constant", "prim::GetAttr", "prim::ListConstruct",
                        "prim::ListUnpack", "prim::TupleConstruct", "prim::TupleUnpack",
                        "prim::NumToTensor", "prim::dtype", "prim::device", "prim::If",
                        "prim::Loop"})
"""TorchScript's structural nodes a graph may hold: constants, attributes, lists, tuples,
and control flow (whose blocks are checked node by node)."""


def tensor_operator(node: Any) -> bool:
    """Whether a graph node is an ATen operator that touches nothing but tensors: no
    argument of its schema is a file name or path (``aten::from_file``, ``aten::save``) or a
    storage (``aten::set_``). Without such a source no tensor of the graph is backed by a
    file, so even an in-place operator writes only the graph's own memory."""
    import torch

    if not node.kind().startswith("aten::"):
        return False
    try:
        schema = torch._C.parse_schema(node.schema())
    except RuntimeError:  # "(no schema)": a node torch cannot describe
        return False
    return not any(("str" in str(a.type) and ("file" in a.name or "path" in a.name))
                   or "Storage" in str(a.type) for a in schema.arguments)


def unsafe_operators(module: Any) -> list[str]:
    """The node kinds of a loaded TorchScript module's forward graph (submodules inlined,
    nested blocks included) that are neither :data:`STRUCTURAL` nor a
    :func:`tensor_operator`."""
    unsafe: set[str] = set()
    blocks = [module.inlined_graph]
    while blocks:
        for node in blocks.pop().nodes():
            if node.kind() not in STRUCTURAL and not tensor_operator(node):
                unsafe.add(node.kind())
            blocks.extend(node.blocks())
    return sorted(unsafe)


def _load(data: bytes, where: Any, device: Any) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
            return torch.jit.load(io.BytesIO(data), map_location=device).eval()
    except Exception as exc:  # torch raises RuntimeError and friends on bad archives
        raise ArtifactError(f"{where}: not a loadable TorchScript model "
                            f"({first_line(exc)})") from exc


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
            for name in archive.names:
                if name.startswith("code/") and name.endswith(".py") \
                        and b"__setstate__" in archive.read(name):
                    raise bad(where, _KIND, f"{name} defines __setstate__, code that would "
                              "run when it is loaded")
        meta = decode_text(text, where, complete=complete)
        import torch

        module = _load(data, where, torch.device("cpu"))
        return Contents(metadata=meta, digest=lambda shape: archive_digest(entries, shape),
                        unsafe=unsafe_operators(module),
                        notes={"module": module})

    def load(self, data: bytes, where: Any, contents: Contents, provider: str, *,
             threads: int | None = None) -> Session:
        device = torch_device(provider)
        module = contents.notes.get("module")
        if module is None or device.type != "cpu":
            module = _load(data, where, device)
        return TorchSession(module, device)


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
