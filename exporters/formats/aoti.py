"""The AOTInductor package (``.aoti.pt2``): the ``torch.export`` program compiled to a
native library by AOTInductor. It runs without Python model code, but it IS code.

- Written by ``torch._inductor.aot_compile`` (``aot_inductor.package``) and torch's
  ``package_pt2``: ``data/aotinductor/model/*.so`` (the compiled model, weights inside), its
  generated C++ sources, JSON build notes (``*_metadata.json``: platform, machine, CPU
  vector ISA) and ``extra/epdo.json``. Compiling needs a C++ compiler (``$CXX``, else
  ``g++``, else ``c++``) and takes minutes.
- Digest: the archive digest (:mod:`epdo.exporters.archive`).
- Read: the zip checked, no entry outside the model's folder (no name can leave it when
  the loader unpacks it), and the build notes checked against this machine as torch itself
  decides which vector code runs here (:func:`cpu_isa_flags`), and against this torch
  release (the library calls into libtorch).
- Run: on the CPU, only with ``--trust``: loading opens the shared library with the user's
  privileges, and no check can make a hostile library harmless (the digest shows it is
  intact, not who made it).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import tempfile
from typing import Any

from ..archive import archive_digest, open_archive, seal
from ..artifact import (
    EXTRA_FILE,
    ArtifactError,
    Contents,
    ExportError,
    ServingError,
    decode_text,
    first_line,
    show,
)
from .base import ArtifactFormat, Session, check_provider, register
from .pt2_checks import bad, check_entries, json_entry
from .torch_common import TorchSession, export_program, quiet_torch, torch_release

__all__ = ["AotiFormat", "CompilerMissingError", "cpu_isa_flags", "find_compiler",
           "isa_runs_here", "require_compiler"]

PACKAGE = "AOTInductor package"
_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|extra/epdo\.json|data/aotinductor/model/[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")
"""Every entry an AOTInductor package of one CPU model may hold (no folder below the
model's)."""
_REQUIRED = ("archive_format", "archive_version")
_MODEL = "data/aotinductor/model/"


class CompilerMissingError(ExportError):
    """``--format aoti`` on a machine without a C++ compiler (exit code 2)."""


def find_compiler() -> str | None:
    """The C++ compiler AOTInductor would use: ``$CXX`` when set, else ``g++``, else
    ``c++`` (full path), or None when none is found."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_compiler() -> str:
    """The C++ compiler :func:`find_compiler` finds; CompilerMissingError (one line, exit
    code 2) when there is none."""
    compiler = find_compiler()
    if compiler is None:
        raise CompilerMissingError(
            "--format aoti compiles C++ code but no C++ compiler was found ($CXX, g++ or "
            "c++); install one (e.g. apt-get install g++) or export --format pt2")
    return compiler


def cpu_isa_flags() -> set[str] | None:
    """The vector-ISA flags this CPU offers, named as inductor names them (``avx2``,
    ``avx512``, ``avx512_vnni``, ``amx_tile``, ``asimd``, ...), from torch's own checks:
    on x86 its CPU-flag checker (no compiler run), elsewhere its list of valid ISAs. None
    when this torch does not say."""
    try:
        from torch._inductor import cpu_vec_isa as vec
    except ImportError:  # pragma: no cover - a torch without it
        return None
    if platform.machine() in ("x86_64", "AMD64"):
        checker = getattr(vec, "x86_isa_checker", None)
        return set(checker()) if checker else None
    return {flag for isa in vec.valid_vec_isa_list() for flag in str(isa).split()}


def _scalar_names() -> set[str]:
    """What a package records when inductor generated no vector code."""
    try:
        from torch._inductor import cpu_vec_isa as vec
    except ImportError:  # pragma: no cover
        return {"default"}
    return {str(vec.invalid_vec_isa).lower(), "default"}


def isa_runs_here(recorded: str) -> bool:
    """Whether code compiled for the ISA a package records (``AOTI_CPU_ISA``, e.g.
    ``AVX512 AVX512_VNNI``) runs on this CPU: every flag of it is one this CPU offers
    (:func:`cpu_isa_flags`), the rule inductor applies to choose the ISA it compiles for.
    Scalar code runs anywhere; a torch that does not say is taken at its word."""
    flags = recorded.lower().split()
    if not flags or set(flags) <= _scalar_names():
        return True
    offered = cpu_isa_flags()
    return offered is None or all(flag in offered for flag in flags)


def load_package(data: bytes, where: Any) -> Any:
    """The compiled model of a checked package: its bytes written to a private temporary
    file (what was checked is what is loaded) and opened by
    ``torch._inductor.aoti_load_package``. This runs the package's native code."""
    import torch

    import epdo.zoo.layers.product_op  # noqa: F401  (the package calls it by the dispatcher)

    try:
        with tempfile.TemporaryDirectory(prefix="epdo-aoti-") as folder:
            path = os.path.join(folder, "model.aoti.pt2")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with quiet_torch():
                return torch._inductor.aoti_load_package(path)
    except Exception as exc:  # the C++ loader raises RuntimeError on bad packages
        raise ArtifactError(f"{where}: not a loadable AOTInductor package "
                            f"({first_line(exc)[:200]})") from exc


def _compiled_for(files: list[Any]) -> dict[str, str]:
    """Platform, machine and CPU ISA from AOTInductor's ``*_metadata.json`` notes."""
    notes: dict[str, str] = {}
    for file in files:
        if isinstance(file, str) and file.endswith("_metadata.json"):
            with open(file, encoding="utf-8") as f:
                notes.update({str(k): str(v) for k, v in json.load(f).items()})
    return {key: notes[f"AOTI_{key.upper()}"] for key in ("platform", "machine", "cpu_isa")
            if f"AOTI_{key.upper()}" in notes}


class AotiFormat(ArtifactFormat):
    """See the module docstring."""

    name = "aoti"
    family = "pt2"
    suffixes = (".aoti.pt2",)
    title = PACKAGE
    summary = ("aoti (its AOTInductor package: compiled code, needs a C++ compiler and "
               "minutes to build; runs with the same torch on the same kind of CPU)")
    native_code = True
    bench_key = "aoti"
    bench_by_default = False

    def require(self) -> None:
        require_compiler()

    def build(self, graph: Any, example: Any, *, opset: int | None = None) -> Any:
        import torch

        compiler = require_compiler()
        program = export_program(graph, example)
        options = {"aot_inductor.package": True, "cpp.cxx": (None, compiler)}
        try:
            args, kwargs = program.example_inputs
            with quiet_torch():
                return torch._inductor.aot_compile(program.module(check_guards=False), args,
                                                   kwargs, options=options)
        except Exception as exc:  # inductor's lowering or the compiler failed
            raise ExportError(f"AOTInductor could not compile the model: "
                              f"{first_line(exc)}") from exc

    def notes(self, built: Any) -> dict[str, Any]:
        import torch

        return {"torch_version": torch.__version__, "compiled_for": _compiled_for(built)}

    def seal(self, built: Any, metadata: dict[str, Any], where: Any) -> tuple[bytes, str]:
        import io

        from torch.export.pt2_archive._package import package_pt2

        def pack(meta: dict[str, Any] | None) -> bytes:
            extra = None if meta is None else {EXTRA_FILE: json.dumps(meta, sort_keys=True)}
            buffer = io.BytesIO()
            with quiet_torch():
                package_pt2(buffer, aoti_files=built, extra_files=extra)
            return buffer.getvalue()

        return seal(pack, metadata, where, PACKAGE)

    def inspect(self, data: bytes, where: Any, *, complete: bool = True) -> Contents:
        with open_archive(data, where, PACKAGE) as archive:
            if "models/model.json" in archive.names:
                raise bad(where, PACKAGE, "it is a torch.export program: name it NAME.pt2, "
                          "without .aoti")
            check_entries(archive, _ENTRIES, _REQUIRED, where, PACKAGE)
            if not any(n.startswith(_MODEL) and n.endswith(".so") for n in archive.names):
                raise bad(where, PACKAGE, f"it holds no compiled library {_MODEL}*.so")
            entries = archive.entries_digest()  # reads every entry: checks every CRC
            text = archive.metadata_text()
            notes: list[dict[str, str]] = []
            for name in archive.names:
                if name.startswith(_MODEL) and name.endswith("_metadata.json"):
                    value = json_entry(archive, name, where, PACKAGE)
                    if not isinstance(value, dict):
                        raise bad(where, PACKAGE, f"{name} is not a JSON object")
                    notes.append({str(k): str(v) for k, v in value.items()})
        meta = decode_text(text, where, complete=complete)
        return Contents(metadata=meta, digest=lambda shape: archive_digest(entries, shape),
                        notes={"package_notes": notes})

    def check_fits(self, contents: Contents, where: Any) -> None:
        """The compiled code was built for this platform, CPU and torch release."""
        for notes in contents.notes["package_notes"] or [{}]:
            device = notes.get("AOTI_DEVICE_KEY", "cpu")
            if device != "cpu":
                raise ArtifactError(f"{where}: compiled for {show(device)}; epdo serves "
                                    "AOTInductor packages on the CPU only")
            for key, here in (("AOTI_PLATFORM", sys.platform),
                              ("AOTI_MACHINE", platform.machine())):
                there = notes.get(key)
                if there and there != here:
                    raise ArtifactError(f"{where}: compiled for {show(there)}, this machine is "
                                        f"{here}; compile it here (epdo export --format aoti) "
                                        "or use the .pt2 program")
            isa = notes.get("AOTI_CPU_ISA", "")
            if not isa_runs_here(isa):
                offered = " ".join(sorted(cpu_isa_flags() or ())).upper() or "none"
                raise ArtifactError(f"{where}: compiled for CPUs with {isa}, this one offers "
                                    f"{offered}; compile it here (epdo export --format aoti) "
                                    "or use the .pt2 program")
        ver = contents.metadata.get("epdo.verification") or {}
        built = ver.get("torch_version")
        if isinstance(built, str) and torch_release(built) != torch_release():
            import torch

            raise ArtifactError(f"{where}: compiled against torch {show(built)}, this is "
                                f"torch {torch.__version__}; AOTInductor code runs only with "
                                "the torch it was compiled against: re-export it here")

    def accepts(self, provider: str, where: Any) -> None:
        check_provider(provider)
        if provider == "cuda":
            raise ServingError(f"{where}: an AOTInductor package compiled for the CPU runs on "
                               "the CPU only; use --provider cpu, or the .pt2 program")

    def load(self, data: bytes, where: Any, contents: Contents, provider: str, *,
             threads: int | None = None) -> Session:
        import torch

        self.accepts(provider, where)
        return TorchSession(load_package(data, where), torch.device("cpu"))

    def runtime_rows(self, verification: dict[str, Any]) -> list[tuple[str, str]]:
        target = verification.get("compiled_for") or {}
        cpu = " ".join(str(target[k]) for k in ("platform", "machine", "cpu_isa")
                       if k in target)
        return [("runs with", f"torch {verification.get('torch_version')} (the release "
                              f"that compiled it), on {cpu or 'the CPU it was compiled for'}; "
                              "no compiler"),
                ("contains", "compiled native code: load only packages you built or trust")]


FORMAT = register(AotiFormat())
