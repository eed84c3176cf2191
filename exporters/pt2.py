"""``torch.export`` artifacts: the exported program (``.pt2``) and its AOTInductor package
(``.aoti.pt2``), written, checked and loaded without running code a crafted file brings.

What the files hold
-------------------
- ``NAME.pt2`` (format ``pt2``): what ``torch.export.save`` writes for the program of the
  inference graph (:func:`export_program`: ``torch.export.export`` with a dynamic batch
  dimension, batch >= 1): a zip of stored entries under one top folder, ``models/model.json``
  (the graph: ATen operators, as JSON), the weights and constants as raw tensor bytes
  (``data/weights/weight_N``, ``data/constants/tensor_N``, described by JSON configs),
  ``data/sample_inputs/model.pt`` (the example batch, in ``torch.save``'s format) and the
  metadata in ``extra/epdo.json``. Loading gives a ``torch.fx.GraphModule`` that PyTorch runs
  op by op: ``images (batch, C, H, W)`` float32 in [0, 1] -> ``logits (batch, classes)``.
- ``NAME.aoti.pt2`` (format ``aoti``): the AOTInductor package of the same program
  (:func:`torch._inductor.aot_compile` with ``aot_inductor.package``, packed by torch's
  ``package_pt2``): ``data/aotinductor/model/*.so`` (the compiled model, weights inside),
  its generated C++ sources and JSON notes, and ``extra/epdo.json``. Loading opens the shared
  library; it runs without Python model code.

The metadata is the dict of every format (:func:`epdo.exporters.metadata.build_metadata`);
its ``epdo.verification.graph_sha256`` is the TorchScript digest (:func:`archive_digest`):
the SHA-256 of every zip entry but ``extra/epdo.json`` and ``.data/serialization_id``
(name relative to the top folder, size, bytes; in name order), then of the declared
``epdo.input_shape``.

What the runtime needs
----------------------
- ``.pt2``: PyTorch, of a release that reads the program format the file was written in
  (``torch.export``'s format is still evolving: the schema major version must match; the
  file records the torch that wrote it). No compiler, no epdo model code; CPU or CUDA.
- ``.aoti.pt2``: the same PyTorch release that compiled it (the library calls into
  libtorch), on the platform, CPU architecture and vector instruction set it was compiled
  for (``linux``, ``x86_64``, ``AVX2`` on this machine: checked before loading); CPU only. No
  compiler and no Python model code at run time; compiling needs a C++ compiler
  (``$CXX``, else ``g++``, else ``c++``) and takes minutes.

Loading is safe for a ``.pt2``, not for a ``.aoti.pt2``
-------------------------------------------------------
``torch.export.load`` can run code that a crafted ``.pt2`` brings, along five paths:
pickles (a weight or constant marked ``use_pickle`` goes through
``torch.load(weights_only=False)``, an opaque constant through ``pickle.loads``, a torchbind
object through torch's pickler), the example inputs (``torch.load(weights_only=True)``,
retried with ``weights_only=False`` when that fails), guard code (``guards_code`` strings
that ``ExportedProgram.module()`` compiles with ``exec``), shape expressions (``expr_str``,
parsed by ``sympy.sympify``, which evaluates Python), and the graph itself (a node may call
any ``torch.*`` attribute, ``aten::from_file`` maps a file into a tensor). So epdo reads the
zip itself first (:func:`inspect_archive`) and refuses, before torch sees a byte, a program
that is not exactly what :func:`export_program` writes:

- entries: only the names ``torch.export.save`` gives one program of plain tensors
  (:data:`_PROGRAM_ENTRIES`): no AOTInductor code, no legacy pickled weights, no custom
  objects; every entry a CRC-checked member of one top folder, its inflated size bounded
  (:data:`~epdo.exporters.limits.MAX_ARCHIVE_INFLATION`);
- weights and constants: raw tensor bytes only (``use_pickle`` false everywhere);
- example inputs: they must load with ``torch.load(weights_only=True)`` (tensors, no
  objects), so torch's first try succeeds and its fallback is never reached;
- the graph: one tensor input, one tensor output, parameters, buffers and tensor constants;
  every node an operator of :data:`PT2_OPS` (pure tensor functions: no file names, no
  in-place or ``out=`` variants); no subgraphs, operators as arguments or custom objects;
  every shape expression a symbol or arithmetic on symbols and integers (a fixed grammar:
  no attributes, no strings but symbol names, no powers); no guard code; names plain
  identifiers.

Only then does ``torch.export.load`` read the checked bytes (never the path again), and
``ExportedProgram.module(check_guards=False)`` builds the module (no guard function is
generated). A tampered ``.pt2`` that passes these checks can still compute wrong logits (the
digest catches edits that did not also rewrite it) or ask for a huge allocation (an error);
it cannot run code of its own.

An AOTInductor package IS code: loading it opens the shared library it holds, with the
user's privileges. No check can make a hostile package harmless; epdo checks its layout (no
name that leaves the package folder), digest, metadata and that it fits this machine and
torch, but a ``.aoti.pt2`` deserves the trust of a program from the same source: load only
packages you compiled or whose origin you trust.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .formats import TS_EXTRA_FILE
from .metadata import (
    DIGEST_KEY,
    ArtifactError,
    ExportError,
    _archive_root,
    _entries_digest,
    _first_line,
    _ts_digest,
    check_digest,
    check_graph_agreement,
    decode_extra_metadata,
    read_artifact_bytes,
)

__all__ = [
    "PT2_OPS",
    "CompilerMissingError",
    "Pt2Contents",
    "ProgramWriter",
    "archive_digest",
    "check_pt2_archive",
    "export_program",
    "find_compiler",
    "inspect_archive",
    "load_package",
    "load_program",
    "read_pt2_metadata",
    "require_compiler",
    "torch_release",
]

PT2_OPS = frozenset({
    # what the shipped zoo's inference graphs use (every MNIST, RGB and CIFAR spec)
    "abs", "add", "amax", "avg_pool2d", "conv2d", "div", "group_norm", "linear",
    "max_pool2d", "mean", "mul", "pad", "relu", "reshape", "select", "slice", "sub", "sum",
    "sym_size", "transpose", "unflatten", "unsqueeze",
    # their decomposed forms and close kin, which another torch release may emit
    "addmm", "constant_pad_nd", "convolution", "expand", "flatten", "max_pool2d_with_indices",
    "mm", "native_group_norm", "permute", "view", "clone", "contiguous", "squeeze", "cat",
    "neg", "sqrt", "rsqrt", "clamp", "maximum", "minimum", "where", "sigmoid", "tanh",
})
"""The ATen operators a ``.pt2`` program may call (``torch.ops.aten.NAME.OVERLOAD``, any
overload but ``out`` ones; no in-place ``NAME_``): pure functions of tensors and numbers.
An operator outside it refuses the file; a new layer that needs one adds it here once its
schema is checked (no file names, no writes; ``tests/test_pt2.py`` checks every entry)."""

_OTHER_TARGETS = frozenset({"_operator.getitem"})
"""Node targets outside ATen that are allowed: picking one output of a multi-output op."""

_PROGRAM_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|extra/epdo\.json|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d{1,6}"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d{1,6}")
"""Every entry (relative to the top folder) ``torch.export.save`` writes for one program of
plain tensors named ``model``; any other entry refuses the file."""

_PACKAGE_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|extra/epdo\.json|data/aotinductor/model/[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")
"""Every entry an AOTInductor package of one CPU model may hold (no folder below the
model's, so no name can leave it when the loader unpacks it)."""

_REQUIRED_PROGRAM = ("archive_format", "archive_version", "models/model.json",
                     "data/sample_inputs/model.pt", "data/weights/model_weights_config.json",
                     "data/constants/model_constants_config.json")
_REQUIRED_PACKAGE = ("archive_format", "archive_version")
_UNDIGESTED = (f"extra/{TS_EXTRA_FILE}", ".data/serialization_id")

_ALLOWED_TAGS = frozenset({
    "as_none", "as_tensor", "as_tensors", "as_int", "as_ints", "as_float", "as_floats",
    "as_string", "as_strings", "as_sym_int", "as_sym_ints", "as_scalar_type",
    "as_memory_format", "as_layout", "as_device", "as_bool", "as_bools", "as_sym_bool",
    "as_sym_bools", "as_optional_tensors", "as_sym_float", "as_sym_floats",
    "as_optional_tensor", "as_complex", "as_int_lists", "as_float_lists", "as_expr",
    "as_name",
})
"""Argument kinds of the serialized graph epdo accepts: values, tensors and shapes; never
``as_graph`` (a subgraph), ``as_operator`` (an op passed around) or ``as_custom_obj``."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_FQN = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]{0,99}(\.(?!__)[A-Za-z0-9_]{1,100}){0,30}")
_SYMBOL = re.compile(r"[a-z]\d{1,9}")
_EXPR_TOKENS = re.compile(r"\s+|'[^']{0,20}'|[A-Za-z_][A-Za-z0-9_]*|\d+|\*\*|[-+*/(),=]")
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Add", "Mul", "FloorDiv", "CeilDiv", "Mod", "PythonMod", "Max",
    "Min", "positive", "integer", "nonnegative", "True", "False",
})
_MAX_EXPR = 300
_LOGGERS = ("torch.export", "torch._export", "torch._inductor.package",
            "torch.utils.cpp_extension")


class CompilerMissingError(ExportError):
    """``--format aoti`` on a machine without a C++ compiler (exit code 2)."""


@dataclass
class Pt2Contents:
    """What :func:`inspect_archive` read from a ``.pt2`` / ``.aoti.pt2`` zip.

    Attributes:
        entries: the running SHA-256 (hashlib object) of the digested entries.
        metadata_text: ``extra/epdo.json`` as text, None when absent.
        input_dims: ``(C, H, W)`` of the program's input (None for a package, whose
            compiled code does not say it before it is loaded).
        num_logits: the number of logits the program returns (None for a package).
        torch_version: the torch that wrote the program (a package: None).
        package_notes: a package's AOTInductor notes, one dict per ``*_metadata.json``
            (device, platform, machine, CPU ISA); empty for a program.
    """

    entries: Any
    metadata_text: str | None
    input_dims: tuple[int | None, ...] | None = None
    num_logits: int | None = None
    torch_version: str | None = None
    package_notes: list[dict[str, str]] | None = None


# --------------------------------------------------------------------------- helpers


def find_compiler() -> str | None:
    """The C++ compiler AOTInductor would use: ``$CXX`` when set, else ``g++``, else
    ``c++`` (full path), or None when none is found."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def torch_release(version: str | None = None) -> str:
    """``X.Y.Z`` of a torch version string (``2.14.1+cu130`` -> ``2.14.1``); the running
    torch's when ``version`` is None."""
    text = torch.__version__ if version is None else version
    return text.split("+", 1)[0]


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch's export and AOTInductor loggers silenced (they log a traceback when a
    program does not deserialise) and its warnings ignored."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def archive_digest(entries: Any, input_shape: Any) -> str:
    """The digest an artifact records (see the module docstring): the entries' running
    SHA-256 continued with the declared input shape (the TorchScript digest)."""
    return _ts_digest(entries, input_shape)


# --------------------------------------------------------------------------- writing


def export_program(module: nn.Module, example: torch.Tensor) -> Any:
    """The ``torch.export`` program (an ``ExportedProgram``) of ``module`` run on
    ``example`` ``(B, C, H, W)`` (B >= 2), its batch dimension dynamic (any batch >= 1)."""
    batch = torch.export.Dim("batch", min=1)
    with _quiet_torch(), torch.no_grad():
        return torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))


def require_compiler() -> str:
    """The C++ compiler :func:`find_compiler` finds; CompilerMissingError (one line, exit
    code 2) when there is none."""
    compiler = find_compiler()
    if compiler is None:
        raise CompilerMissingError(
            "--format aoti compiles C++ code but no C++ compiler was found ($CXX, g++ or "
            "c++); install one (e.g. apt-get install g++) or export --format pt2")
    return compiler


class ProgramWriter:
    """The program of a module, and for ``compiled`` its AOTInductor build, written to
    files with or without metadata.

    Building compiles (minutes, for ``compiled``) once; :meth:`write` then packs it, as
    often as asked, in deterministic bytes (the same but for the entries the digest leaves
    out, so the digest of a packing without metadata is that of one with it).

    Args:
        module: the inference graph (raw images in, logits out), on the CPU.
        example: a batch ``(B, C, H, W)`` of B >= 2 inputs to export it with.
        compiled: build the AOTInductor package instead of the program.

    Raises:
        CompilerMissingError: ``compiled`` without a C++ compiler.
        ExportError: torch cannot export (or compile) the module; the message is one line.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, compiled: bool = False) -> None:
        self.compiled = compiled
        compiler = require_compiler() if compiled else None
        try:
            self.program = export_program(module, example)
        except Exception as exc:  # torch.export raises many kinds of errors
            raise ExportError(f"torch.export could not export the model: "
                              f"{_first_line(exc)}") from exc
        self.files: list[Any] = []
        self.compiled_for: dict[str, str] = {}
        self._entries: Any = None  # of the last packing without metadata
        if compiled:
            options = {"aot_inductor.package": True, "cpp.cxx": (None, compiler)}
            try:
                args, kwargs = self.program.example_inputs
                with _quiet_torch():
                    self.files = torch._inductor.aot_compile(
                        self.program.module(check_guards=False), args, kwargs,
                        options=options)
            except Exception as exc:  # inductor's lowering or the compiler failed
                raise ExportError(f"AOTInductor could not compile the model: "
                                  f"{_first_line(exc)}") from exc
            self.compiled_for = _compiled_for(self.files)

    def pack(self, metadata: dict[str, Any] | None) -> bytes:
        """The artifact's bytes, ``metadata`` (when given) in ``extra/epdo.json``."""
        extra = None if metadata is None else {TS_EXTRA_FILE: json.dumps(metadata,
                                                                         sort_keys=True)}
        buffer = io.BytesIO()
        with _quiet_torch():
            if self.compiled:
                from torch.export.pt2_archive._package import package_pt2

                package_pt2(buffer, aoti_files=self.files, extra_files=extra)
            else:
                torch.export.save(self.program, buffer, extra_files=extra)
        return buffer.getvalue()

    def write(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None) -> str | None:
        """Write the artifact at ``path``; with ``metadata``, its ``epdo.verification``
        completed with the digest, which is returned (None without metadata).

        The digest is that of a packing without metadata (the last one written, else a new
        one); the packing that carries it is checked to have it.
        """
        if metadata is None:
            data = self.pack(None)
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                self._entries = _entries_digest(zf, _archive_root(zf, len(data), path))
            _write_bytes(path, data)
            return None
        if self.compiled:  # what the package needs, for `epdo info` (not digested)
            metadata = {**metadata, "epdo.verification": {
                **metadata.get("epdo.verification", {}), "compiled_for": self.compiled_for}}
        shape = metadata.get("epdo.input_shape")
        entries = self._entries
        if entries is None:
            entries = inspect_archive(self.pack(None), path, compiled=self.compiled).entries
        digest = archive_digest(entries, shape)
        ver = {**metadata.get("epdo.verification", {}), DIGEST_KEY: digest}
        data = self.pack({**metadata, "epdo.verification": ver})
        if archive_digest(inspect_archive(data, path, compiled=self.compiled).entries,
                          shape) != digest:
            raise ArtifactError(f"{path}: torch packed different bytes twice; cannot record "
                                "its digest")
        _write_bytes(path, data)
        return digest


def _compiled_for(files: list[Any]) -> dict[str, str]:
    """Platform, machine and CPU ISA from AOTInductor's ``*_metadata.json`` notes."""
    notes: dict[str, str] = {}
    for file in files:
        if isinstance(file, str) and file.endswith("_metadata.json"):
            with open(file, encoding="utf-8") as f:
                notes.update({str(k): str(v) for k, v in json.load(f).items()})
    return {key.lower(): notes[f"AOTI_{key.upper()}"] for key in ("platform", "machine",
                                                                  "cpu_isa")
            if f"AOTI_{key.upper()}" in notes}


def _write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


# --------------------------------------------------------------------------- checking


def _kind(compiled: bool) -> str:
    return "AOTInductor package" if compiled else "torch.export program"


def _bad(where: Any, compiled: bool, why: str) -> ArtifactError:
    return ArtifactError(f"{where}: not a {_kind(compiled)} epdo loads ({why})")


def _json_entry(zf: zipfile.ZipFile, name: str, where: Any, compiled: bool) -> Any:
    try:
        return json.loads(zf.read(name).decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise _bad(where, compiled, f"{name.split('/', 1)[1]} is not valid JSON") from exc


def inspect_archive(data: bytes, where: str | os.PathLike[str], *,
                    compiled: bool) -> Pt2Contents:
    """Read a ``.pt2`` (``compiled`` False) or ``.aoti.pt2`` zip and check it as the module
    docstring says, running nothing: the layout, every entry's CRC, and for a program the
    weight and constant configs, the example inputs and the graph.

    Raises:
        ArtifactError: one line naming the file and what is wrong.
    """
    kind = _kind(compiled)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            root = _archive_root(zf, len(data), where, kind)
            names = [info.filename[len(root) + 1:] for info in zf.infolist()]
            if compiled and "models/model.json" in names:
                raise _bad(where, True, "it is a torch.export program: name it NAME.pt2, "
                           "without .aoti")
            if not compiled and any(n.startswith("data/aotinductor/") for n in names):
                raise _bad(where, False, "it is an AOTInductor package: name it "
                           "NAME.aoti.pt2")
            pattern = _PACKAGE_ENTRIES if compiled else _PROGRAM_ENTRIES
            for name in names:
                if not pattern.fullmatch(name) or ".." in name:
                    raise _bad(where, compiled, f"it holds the entry {_show(name)}, which "
                               "epdo export does not write")
            missing = [n for n in (_REQUIRED_PACKAGE if compiled else _REQUIRED_PROGRAM)
                       if n not in names]
            if missing:
                raise _bad(where, compiled, f"it lacks {', '.join(missing)}")
            entries = _entries_digest(zf, root)  # reads every entry: checks every CRC
            extra = f"{root}/extra/{TS_EXTRA_FILE}"
            text = zf.read(extra).decode("utf-8") if extra in zf.namelist() else None
            if compiled:
                return _inspect_package(zf, root, names, entries, text, where)
            return _inspect_program(zf, root, names, entries, text, where)
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError,
            NotImplementedError, RecursionError) as exc:
        raise ArtifactError(f"{where}: not a loadable {kind} (truncated or corrupted?): "
                            f"{_first_line(exc)}") from exc


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _inspect_package(zf: zipfile.ZipFile, root: str, names: list[str], entries: Any,
                     text: str | None, where: Any) -> Pt2Contents:
    model = "data/aotinductor/model/"
    if not any(n.startswith(model) and n.endswith(".so") for n in names):
        raise _bad(where, True, "it holds no compiled library data/aotinductor/model/*.so")
    notes: list[dict[str, str]] = []
    for name in names:
        if name.startswith(model) and name.endswith("_metadata.json"):
            value = _json_entry(zf, f"{root}/{name}", where, True)
            if not isinstance(value, dict):
                raise _bad(where, True, f"{name} is not a JSON object")
            notes.append({str(k): str(v) for k, v in value.items()})
    return Pt2Contents(entries=entries, metadata_text=text, package_notes=notes)


def _inspect_program(zf: zipfile.ZipFile, root: str, names: list[str], entries: Any,
                     text: str | None, where: Any) -> Pt2Contents:
    program = _json_entry(zf, f"{root}/models/model.json", where, False)
    for folder, prefix in (("weights", "weight_"), ("constants", "tensor_")):
        config = _json_entry(zf, f"{root}/data/{folder}/model_{folder}_config.json", where,
                             False)
        _check_payloads(config, folder, prefix, set(names), where)
    _check_example_inputs(zf.read(f"{root}/data/sample_inputs/model.pt"), where)
    return _check_program(program, entries, text, where)


def _check_payloads(config: Any, folder: str, prefix: str, names: set[str],
                    where: Any) -> None:
    """Every weight / constant is raw tensor bytes on the CPU (never a pickle)."""
    table = config.get("config") if isinstance(config, dict) else None
    if not isinstance(table, dict):
        raise _bad(where, False, f"data/{folder}/model_{folder}_config.json has no config")
    for fqn, meta in table.items():
        if not _FQN.fullmatch(str(fqn)) or not isinstance(meta, dict):
            raise _bad(where, False, f"the {folder} config names {_show(fqn)}")
        if meta.get("use_pickle") is not False:
            raise _bad(where, False, f"{folder} entry {_show(fqn)} is a pickle, which epdo "
                       "never loads (a pickle can run code)")
        path = meta.get("path_name")
        if (not isinstance(path, str) or not re.fullmatch(rf"{prefix}\d{{1,6}}", path)
                or f"data/{folder}/{path}" not in names):
            raise _bad(where, False, f"{folder} entry {_show(fqn)} points at {_show(path)}")
        tensor = meta.get("tensor_meta")
        device = tensor.get("device") if isinstance(tensor, dict) else None
        if not isinstance(device, dict) or device.get("type") != "cpu":
            raise _bad(where, False, f"{folder} entry {_show(fqn)} is not a CPU tensor")
        _check_tree(tensor, where)


def _check_example_inputs(raw: bytes, where: Any) -> None:
    """The example inputs load as plain tensors: ``torch.load(weights_only=True)``, the very
    call ``torch.export.load`` tries first (so it never falls back to ``weights_only=False``)."""
    try:
        with _quiet_torch():
            value = torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as exc:  # the restricted unpickler refused something, or bad bytes
        raise _bad(where, False, "its example inputs are not plain tensors "
                   f"({_first_line(exc)[:80]})") from exc
    del value


def _safe_expression(text: Any) -> bool:
    """Whether a shape expression is a symbol or arithmetic of symbols and integers in
    sympy's printed forms (``s34``, ``Symbol('s34', positive=True, integer=True)``,
    ``Mul(Integer(2), ...)``, ``2*s34``), nothing that ``sympify`` could turn into code."""
    if not isinstance(text, str) or len(text) > _MAX_EXPR:
        return False
    tokens = _EXPR_TOKENS.findall(text)
    if "".join(tokens) != text:
        return False
    for token in tokens:
        if token == "**":
            return False
        if token.startswith("'"):
            if not _SYMBOL.fullmatch(token[1:-1]):
                return False
        elif token[0].isalpha() or token[0] == "_":
            if token not in _EXPR_NAMES and not _SYMBOL.fullmatch(token):
                return False
        elif token.isdigit() and len(token) > 18:
            return False
    return True


def _check_tree(value: Any, where: Any) -> None:
    """The rules that hold anywhere in the serialized program: known argument kinds only,
    safe shape expressions, plain names."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
            continue
        if not isinstance(item, dict):
            continue
        for key, child in item.items():
            if key.startswith("as_") and key not in _ALLOWED_TAGS:
                raise _bad(where, False, f"the graph has an argument of kind {_show(key)} "
                           "(subgraphs, operators and custom objects are refused)")
            if key == "expr_str" and not _safe_expression(child):
                raise _bad(where, False, f"the shape expression {_show(child)} is not "
                           "arithmetic on sizes")
            if key in ("name", "as_name") and isinstance(child, str) \
                    and not _IDENTIFIER.fullmatch(child):
                raise _bad(where, False, f"the graph names a value {_show(child)}")
            if isinstance(child, (dict, list)):
                stack.append(child)


def _sizes(graph: dict[str, Any], arg: Any, where: Any) -> list[int | None]:
    """The sizes of a graph tensor argument (None for a symbolic size)."""
    name = arg.get("as_tensor", {}).get("name") if isinstance(arg, dict) else None
    meta = graph.get("tensor_values", {}).get(name) if isinstance(name, str) else None
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list):
        raise _bad(where, False, "the graph does not describe its input or output tensor")
    out: list[int | None] = []
    for size in sizes:
        value = size.get("as_int") if isinstance(size, dict) else None
        out.append(value if isinstance(value, int) and not isinstance(value, bool) else None)
    return out


def _check_signature(module: dict[str, Any], where: Any) -> tuple[Any, Any]:
    """One tensor input, one tensor output, and otherwise parameters, buffers and tensor
    constants under plain dotted names; returns the (input, output) arguments."""
    signature = module.get("signature")
    if not isinstance(signature, dict):
        raise _bad(where, False, "the graph has no signature")
    user_inputs = []
    for spec in signature.get("input_specs") or []:
        if not isinstance(spec, dict) or len(spec) != 1:
            raise _bad(where, False, "the graph's signature is malformed")
        (kind, body), = spec.items()
        if kind == "user_input":
            user_inputs.append(body.get("arg") if isinstance(body, dict) else None)
        elif kind in ("parameter", "buffer", "tensor_constant"):
            fqn = body.get(f"{kind}_name") if isinstance(body, dict) else None
            if not isinstance(fqn, str) or not _FQN.fullmatch(fqn):
                raise _bad(where, False, f"the graph's {kind} is named {_show(fqn)}")
        else:
            raise _bad(where, False, f"the graph takes an input of kind {_show(kind)}")
    outputs = signature.get("output_specs") or []
    if (len(user_inputs) != 1 or not isinstance(user_inputs[0], dict)
            or "as_tensor" not in user_inputs[0] or len(outputs) != 1
            or not isinstance(outputs[0], dict) or list(outputs[0]) != ["user_output"]):
        raise _bad(where, False, "the graph does not map one tensor to one tensor")
    out = outputs[0]["user_output"]
    arg = out.get("arg") if isinstance(out, dict) else None
    if not isinstance(arg, dict) or "as_tensor" not in arg:
        raise _bad(where, False, "the graph does not return one tensor")
    return user_inputs[0], arg


def _check_nodes(graph: dict[str, Any], where: Any) -> None:
    for node in graph.get("nodes") or []:
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str):
            raise _bad(where, False, "a graph node has no operator")
        if target in _OTHER_TARGETS:
            continue
        match = re.fullmatch(r"torch\.ops\.aten\.([a-z0-9_]+)\.([A-Za-z0-9_]+)", target)
        if (match is None or match.group(1) not in PT2_OPS
                or "out" in match.group(2).split("_")):
            raise _bad(where, False, f"the graph calls {_show(target)}, which is not one of "
                       "the pure tensor operators epdo loads (PT2_OPS)")


def _check_program(program: Any, entries: Any, text: str | None, where: Any) -> Pt2Contents:
    """The checks of the serialized ``ExportedProgram`` (``models/model.json``)."""
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise _bad(where, False, "models/model.json holds no graph")
    version = program.get("schema_version")
    major = version.get("major") if isinstance(version, dict) else None
    writer = program.get("torch_version")
    writer = writer if isinstance(writer, str) else "an unknown torch"
    try:
        from torch._export.serde.schema import SCHEMA_VERSION
    except ImportError:  # pragma: no cover - torch moved it; let torch.export.load judge
        SCHEMA_VERSION = (major, None)
    if major != SCHEMA_VERSION[0]:
        raise ArtifactError(
            f"{where}: written by torch {_show(writer, 40)} in torch.export format "
            f"{_show(major)}.x; this torch {torch.__version__} reads format "
            f"{SCHEMA_VERSION[0]}.x: run it with a torch of the writer's series or re-export "
            "it")
    if program.get("guards_code") not in ([], None):
        raise _bad(where, False, "it carries guard code, which epdo never runs")
    verifiers = program.get("verifiers") or []
    if not isinstance(verifiers, list) or not set(verifiers) <= {"", "ATEN", "TRAINING"}:
        raise _bad(where, False, f"it names the verifiers {_show(verifiers)}")
    ranges = program.get("range_constraints") or {}
    if not isinstance(ranges, dict) or not all(_SYMBOL.fullmatch(str(k)) for k in ranges):
        raise _bad(where, False, "its range constraints are not on size symbols")
    module = program["graph_module"]
    graph = module.get("graph")
    if not isinstance(graph, dict):
        raise _bad(where, False, "models/model.json holds no graph")
    if graph.get("custom_obj_values") or module.get("treespec_namedtuple_fields"):
        raise _bad(where, False, "the graph holds custom objects or named tuples")
    _check_tree(program, where)
    _check_nodes(graph, where)
    inp, out = _check_signature(module, where)
    in_sizes, out_sizes = _sizes(graph, inp, where), _sizes(graph, out, where)
    if len(in_sizes) != 4 or len(out_sizes) != 2:
        raise _bad(where, False, f"the graph maps a tensor of {len(in_sizes)} dimensions to "
                   f"one of {len(out_sizes)}, not (batch, C, H, W) to (batch, classes)")
    return Pt2Contents(entries=entries, metadata_text=text, input_dims=tuple(in_sizes[1:]),
                       num_logits=out_sizes[1], torch_version=writer)


def check_pt2_archive(data: bytes, where: str | os.PathLike[str], *, compiled: bool,
                      trust: bool = False, complete: bool = True) -> tuple[dict[str, Any],
                                                                          Pt2Contents]:
    """The decoded, checked metadata of a ``.pt2`` / ``.aoti.pt2`` artifact's bytes and
    what :func:`inspect_archive` read: its layout and graph (the module docstring), every
    metadata value's type (:func:`~epdo.exporters.metadata.validate_metadata`), the digest
    (a missing one refused unless ``trust``), metadata against the program's input shape
    and logits, and for a package that it fits this machine and torch. Nothing is run.

    Raises:
        ArtifactError: one line naming the file; UnverifiedArtifactError for a missing
            digest without ``trust``.
    """
    contents = inspect_archive(data, where, compiled=compiled)
    meta = decode_extra_metadata(contents.metadata_text, where, complete=complete)
    check_digest(meta, archive_digest(contents.entries, meta.get("epdo.input_shape")), where,
                 trust=trust)
    if compiled:
        for notes in contents.package_notes or [{}]:
            _check_package_fits(meta, notes, where)
    else:
        check_graph_agreement(meta, contents.input_dims, contents.num_logits, where)
    return meta, contents


_X86_NEEDS = {"AVX2": ("AVX2", "AVX512"), "AVX512": ("AVX512",)}


def _check_package_fits(meta: dict[str, Any], notes: dict[str, str], where: Any) -> None:
    """The compiled code was built for this platform, CPU and torch release."""
    device = notes.get("AOTI_DEVICE_KEY", "cpu")
    if device != "cpu":
        raise ArtifactError(f"{where}: compiled for {_show(device)}; epdo serves AOTInductor "
                            "packages on the CPU only")
    for key, here in (("AOTI_PLATFORM", sys.platform), ("AOTI_MACHINE", platform.machine())):
        there = notes.get(key)
        if there and there != here:
            raise ArtifactError(f"{where}: compiled for {_show(there)}, this machine is "
                                f"{here}; compile it here (epdo export --format aoti) or "
                                "use the .pt2 program")
    isa = notes.get("AOTI_CPU_ISA", "")
    here = torch.backends.cpu.get_cpu_capability()
    fits = _X86_NEEDS.get(isa, (isa,)) if isa and isa != "DEFAULT" else None
    if fits is not None and here not in fits:
        raise ArtifactError(f"{where}: compiled for CPUs with {isa}, this one offers {here}; "
                            "compile it here (epdo export --format aoti) or use the .pt2 "
                            "program")
    ver = meta.get("epdo.verification")
    built = ver.get("torch_version") if isinstance(ver, dict) else None
    if isinstance(built, str) and torch_release(built) != torch_release():
        raise ArtifactError(f"{where}: compiled against torch {_show(built, 40)}, this is "
                            f"torch {torch.__version__}; AOTInductor code runs only with the "
                            "torch it was compiled against: re-export it here")


def read_pt2_metadata(path: str | os.PathLike[str], trust: bool = False, *,
                      compiled: bool = False) -> dict[str, Any]:
    """The decoded metadata of a ``.pt2`` (``compiled`` False) or ``.aoti.pt2`` artifact,
    checked as :func:`check_pt2_archive` says (read from the zip, nothing run)."""
    return check_pt2_archive(read_artifact_bytes(path), path, compiled=compiled,
                             trust=trust)[0]


# --------------------------------------------------------------------------- loading


def load_program(data: bytes, where: str | os.PathLike[str],
                 device: torch.device | str = "cpu") -> nn.Module:
    """The module of a ``.pt2`` program's bytes, which :func:`inspect_archive` must have
    accepted (the caller checks; this loads): ``torch.export.load`` from the bytes, moved to
    ``device``, ``.module(check_guards=False)``.

    Raises:
        ArtifactError: torch cannot load it (one line).
    """
    try:
        with _quiet_torch():
            program = torch.export.load(io.BytesIO(data))
            if torch.device(device).type != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, torch.device(device))
            return program.module(check_guards=False)
    except Exception as exc:  # torch's deserializer raises many kinds of errors
        raise ArtifactError(f"{where}: not a loadable torch.export program "
                            f"({_first_line(exc)[:200]})") from exc


def load_package(data: bytes, where: str | os.PathLike[str]) -> Callable[[torch.Tensor], Any]:
    """The compiled model of an ``.aoti.pt2`` package's bytes (checked by the caller):
    written to a private temporary file (what was checked is what is loaded) and opened by
    ``torch._inductor.aoti_load_package``. This runs the package's native code.

    Raises:
        ArtifactError: torch cannot load it (one line).
    """
    try:
        with tempfile.TemporaryDirectory(prefix="epdo-aoti-") as folder:
            path = os.path.join(folder, "model.aoti.pt2")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with _quiet_torch():
                return torch._inductor.aoti_load_package(path)
    except Exception as exc:  # the C++ loader raises RuntimeError on bad packages
        raise ArtifactError(f"{where}: not a loadable AOTInductor package "
                            f"({_first_line(exc)[:200]})") from exc


def program_runner(path: str | os.PathLike[str],
                   compiled: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of a freshly written artifact (metadata not yet in it): the file read once,
    inspected, loaded as serving loads it; for :func:`epdo.exporters.export.verify`."""
    data = read_artifact_bytes(path)
    inspect_archive(data, path, compiled=compiled)
    model = load_package(data, path) if compiled else load_program(data, path)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x).clone()

    return run
