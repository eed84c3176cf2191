"""The fused CPU kernels of the stencil product (``csrc/stencil_product.cpp``), built on
first use with PyTorch's C++ extension loader and cached by it.

``stencil_kernels()`` returns the loaded module, or ``None`` when it cannot be had (no C++
compiler or ninja, a failed build, or ``EPDO_NATIVE=0``); callers then use the PyTorch
implementation, which computes the same numbers more slowly. The build takes ~30 s once per
build key (a line on stderr says so).

The build folder (under torch's extensions folder) is named by a hash of everything the
library depends on: the source's bytes, the compiler flags, the torch and Python versions
and the CPU's feature flags (it is compiled with ``-march=native``). Two installs of epdo on
one machine with the same source share one build; different sources never rebuild each
other's. Concurrent first builds are serialised by an OS lock on a file in that folder
(released when a process dies, so a killed build leaves no lock behind: torch's own lock
file, which a killed build does leave, is removed under ours before building).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "stencil_product.cpp"
_UNSET = object()
_kernels: ModuleType | None | object = _UNSET


def _cpu_tag() -> str:
    """A short hash of the CPU's feature flags (the library is built for this CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha256((flags + platform.machine()).encode()).hexdigest()[:10]


FLAGS = ("-O3", "-march=native", "-fopenmp")
LDFLAGS = ("-fopenmp",)


def build_name(source: bytes, flags: tuple[str, ...] = FLAGS) -> str:
    """``epdo_stencil_product_<hash>``: the hash of the source, the flags, the torch and
    Python versions and the CPU tag, so different builds never share a folder."""
    import torch

    h = hashlib.sha256(source)
    for part in (*flags, torch.__version__, sys.version, _cpu_tag()):
        h.update(b"\0" + part.encode())
    return f"epdo_stencil_product_{h.hexdigest()[:16]}"


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """An exclusive OS lock on ``folder/epdo-build.lock`` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "epdo-build.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def native_enabled() -> bool:
    """False when the user opted out with ``EPDO_NATIVE=0``."""
    return os.environ.get("EPDO_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _build() -> ModuleType:
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its "no CUDA runtime" notice is irrelevant on a CPU
    try:
        from torch.utils import cpp_extension

        name = build_name(SOURCE.read_bytes())
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        with _build_lock(build_dir):
            (build_dir / "lock").unlink(missing_ok=True)  # torch's, left by a killed build
            if not any(build_dir.glob("*.so")):
                print("epdo: compiling the fused CPU stencil kernel (once, ~30 s)...",
                      file=sys.stderr, flush=True)
            return cpp_extension.load(name=name, sources=[str(SOURCE)],
                                      extra_cflags=list(FLAGS), extra_ldflags=list(LDFLAGS),
                                      build_directory=str(build_dir), verbose=False)
    finally:
        logger.setLevel(level)


def stencil_kernels() -> ModuleType | None:
    """The compiled kernels (``forward``, ``backward``), or None where they cannot be built."""
    global _kernels
    if not native_enabled():
        return None
    if _kernels is _UNSET:
        try:
            _kernels = _build()
        except Exception as exc:  # no compiler, no ninja, a failed build: fall back
            warnings.warn(
                f"epdo: the fused CPU stencil kernel is unavailable ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}); using "
                "the PyTorch implementation (same numbers, slower). Install a C++ compiler "
                "and ninja to enable it, or set EPDO_NATIVE=0 to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
            _kernels = None
    return _kernels  # type: ignore[return-value]
