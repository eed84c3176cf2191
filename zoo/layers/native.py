"""The fused CPU kernels of the stencil product (``csrc/stencil_product.cpp``), built on
first use with PyTorch's C++ extension loader and cached by it.

``stencil_kernels()`` returns the loaded module, or ``None`` when it cannot be had (no C++
compiler or ninja, a failed build, or ``EPDO_NATIVE=0``); callers then use the PyTorch
implementation, which computes the same numbers more slowly. The build takes ~30 s once per
machine, Python and torch version (a line on stderr says so); it is compiled with
``-march=native``, so the library name carries a hash of the CPU's feature flags.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import warnings
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


def native_enabled() -> bool:
    """False when the user opted out with ``EPDO_NATIVE=0``."""
    return os.environ.get("EPDO_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _build() -> ModuleType:
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its "no CUDA runtime" notice is irrelevant on a CPU
    try:
        from torch.utils import cpp_extension

        name = f"epdo_stencil_product_{_cpu_tag()}"
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        if not any(build_dir.glob("*.so")):
            print("epdo: compiling the fused CPU stencil kernel (once, ~30 s)...",
                  file=sys.stderr, flush=True)
        flags = ["-O3", "-march=native", "-fopenmp"]
        return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=flags,
                                  extra_ldflags=["-fopenmp"], verbose=False)
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
