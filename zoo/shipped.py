"""The shipped model zoo: where the spec files live and how a name finds its file.

A spec source is either a path to a YAML file or the name of a shipped spec (the stem of a
file in the ``epdo.specs`` package, i.e. the repository's ``specs/`` folder).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

_SUFFIXES = (".yaml", ".yml")


def specs_dir() -> Path:
    """The folder that holds the shipped ``*.yaml`` specs (package ``epdo.specs``)."""
    return Path(str(files("epdo.specs")))


def list_specs() -> list[str]:
    """Sorted names (file stems) of the shipped specs."""
    return sorted(p.stem for p in specs_dir().glob("*.yaml") if p.is_file())


def shipped_spec_path(name: str) -> Path | None:
    """The file of the shipped spec ``name`` (``"quickstart"`` or ``"quickstart.yaml"``)."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if not stem or Path(stem).name != stem:
        return None
    path = specs_dir() / f"{stem}.yaml"
    return path if path.is_file() else None


def resolve_spec_source(name_or_path: str | os.PathLike[str]) -> Path:
    """The YAML file for a path or a shipped spec name; an existing file wins.

    Raises FileNotFoundError naming the shipped specs when neither exists.
    """
    path = Path(name_or_path)
    shown = str(name_or_path) if len(str(name_or_path)) <= 80 else f"{str(name_or_path)[:77]}..."
    try:
        if path.is_file():
            return path
        shipped = shipped_spec_path(str(name_or_path))
        if shipped is not None:
            return shipped
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as exc:  # a name too long for the file system, ...
        raise FileNotFoundError(f"{shown!r}: {exc.strerror or exc}") from None
    if is_dir:
        raise FileNotFoundError(f"{shown!r} is a directory, not a spec file")
    if exists:
        raise FileNotFoundError(
            f"{shown!r} is not a regular file (a FIFO, a socket or a device); a spec is a "
            "YAML file"
        )
    names = ", ".join(list_specs()) or "(none)"
    raise FileNotFoundError(
        f"no spec file {shown!r} and no shipped spec of that name; "
        f"shipped specs: {names}"
    )
