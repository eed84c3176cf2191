"""Keyed on-disk cache of numpy arrays.

Slow derivations (symbolic stencils, SVD null spaces, ...) are stored as ``.npz`` files
under :func:`cache_dir`. An entry is identified by a *kind* (a short file-name prefix such
as ``"stencils"``) and a *key*: a JSON-serialisable dict holding everything that changes
the numbers. The file name is::

    <kind>-<sha256(f"{CACHE_FORMAT}\\n{canonical_json(key)}")[:16]>.npz

and the canonical key JSON is also stored inside the archive (a 0-d unicode array named
``__key__``), so a truncated-hash collision or a stale file is detected and treated as a
miss. Unreadable (corrupt) files are misses too and get rewritten. Every entry also carries
a content check, the SHA-256 of its arrays (names, dtypes, shapes and bytes) in
``__digest__``; an entry whose arrays do not match it (damaged or edited: zeroed stencils
would otherwise build a model that silently computes nothing useful) is rebuilt, with one
warning naming the file, and a caller may add its own check of the values (``check``).
Writes are atomic (:func:`epdo.zoo.fileio.atomic_open`: a temporary file in the same
directory, renamed over the entry), so concurrent processes never see half-written
entries. When the cache directory cannot be created or written, the computed arrays are
still returned and a warning is issued once per directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from .fileio import atomic_open

__all__ = ["CACHE_FORMAT", "ENV_VAR", "cache_dir", "cache_path", "cached_arrays",
           "content_digest"]

#: Version of the on-disk layout; bumping it invalidates every existing entry (2: the
#: content digest).
CACHE_FORMAT = 2
#: Environment variable overriding the cache location.
ENV_VAR = "EPDO_CACHE_DIR"
#: Name under which the canonical key JSON is stored inside each archive.
KEY_FIELD = "__key__"
#: Name under which the content digest of the arrays is stored inside each archive.
DIGEST_FIELD = "__digest__"

_KIND_RE = re.compile(r"[A-Za-z0-9_-]+")
_warned_dirs: set[str] = set()


def cache_dir() -> Path:
    """Return the cache directory, creating it if needed.

    ``$EPDO_CACHE_DIR`` when set (and non-empty), else ``platformdirs.user_cache_dir("epdo")``.
    Raises :class:`OSError` when the directory cannot be created.
    """
    override = os.environ.get(ENV_VAR)
    path = Path(override) if override else Path(platformdirs.user_cache_dir("epdo"))
    path = path.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _canonical_json(key: Mapping[str, Any]) -> str:
    """Deterministic JSON text of ``key`` (sorted keys, no whitespace, no NaN)."""
    if not isinstance(key, Mapping):
        raise TypeError(f"cache key must be a mapping, got {type(key).__name__}")
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _file_name(kind: str, key_json: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise ValueError(f"cache kind must match [A-Za-z0-9_-]+, got {kind!r}")
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{key_json}".encode()).hexdigest()
    return f"{kind}-{digest[:16]}.npz"


def cache_path(kind: str, key: Mapping[str, Any]) -> Path:
    """Path of the cache file for ``(kind, key)`` (the file need not exist)."""
    return cache_dir() / _file_name(kind, _canonical_json(key))


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the arrays' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class _Damaged(Exception):
    """An entry that was read but fails its content check."""


def _load(path: Path, key_json: str,
          check: Callable[[dict[str, np.ndarray]], str | None] | None
          ) -> dict[str, np.ndarray] | None:
    """Arrays stored at ``path``; ``None`` if missing, unreadable or stored under another key.

    Raises :class:`_Damaged` (with the reason) when the entry is readable but its arrays do
    not match its digest or fail ``check``.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if KEY_FIELD not in npz.files or str(npz[KEY_FIELD][()]) != key_json:
                return None
            stored = str(npz[DIGEST_FIELD][()]) if DIGEST_FIELD in npz.files else None
            arrays = {n: npz[n] for n in npz.files if n not in (KEY_FIELD, DIGEST_FIELD)}
    except Exception:  # any read/parse failure means a corrupt entry: recompute it
        return None
    if stored != content_digest(arrays):
        raise _Damaged("its arrays do not match their content digest")
    problem = check(arrays) if check is not None else None
    if problem:
        raise _Damaged(problem)
    return arrays


def _save(path: Path, key_json: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` (plus the key and their digest) to ``path`` atomically; raises
    :class:`OSError`."""
    extra = {KEY_FIELD: np.array(key_json), DIGEST_FIELD: np.array(content_digest(arrays))}
    with atomic_open(path, "wb", fsync=True, mkdir=False) as fh:
        np.savez(fh, **arrays, **extra)


def _check_arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate the output of ``compute``: ``str`` names, non-object numpy arrays."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"compute() must return a dict of arrays, got {type(arrays).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name in (KEY_FIELD, DIGEST_FIELD):
            raise ValueError(f"invalid array name {name!r} returned by compute()")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object, which cannot be cached")
        out[name] = arr
    return out


def _warn_unwritable(where: str, err: OSError) -> None:
    if where in _warned_dirs:
        return
    _warned_dirs.add(where)
    warnings.warn(
        f"epdo cache directory {where!r} is not usable ({err}); results will be recomputed "
        f"each time. Set ${ENV_VAR} to a writable directory to enable caching.",
        RuntimeWarning,
        stacklevel=3,
    )


def cached_arrays(
    kind: str,
    key: Mapping[str, Any],
    compute: Callable[[], Mapping[str, np.ndarray]],
    check: Callable[[dict[str, np.ndarray]], str | None] | None = None,
) -> dict[str, np.ndarray]:
    """Return ``compute()``'s arrays, loading them from the disk cache when available.

    Args:
        kind: file-name prefix, ``[A-Za-z0-9_-]+``.
        key: JSON-serialisable mapping with everything that determines the arrays.
        compute: zero-argument function returning ``{name: array}``; called only on a miss
            (missing, corrupt or key-mismatched file) or a damaged entry.
        check: optional check of a loaded entry's values: None when they are fine, else why
            not (the entry is then rebuilt, with a warning).

    Returns:
        ``{name: array}`` with the same names, dtypes and shapes as ``compute()`` returns.
    """
    key_json = _canonical_json(key)
    name = _file_name(kind, key_json)
    try:
        directory = cache_dir()
    except OSError as err:
        _warn_unwritable(os.environ.get(ENV_VAR) or "<platform cache dir>", err)
        return _check_arrays(compute())

    path = directory / name
    try:
        hit = _load(path, key_json, check)
    except _Damaged as damage:
        warnings.warn(f"epdo cache entry {str(path)!r} failed its content check ({damage}); "
                      "rebuilt it", RuntimeWarning, stacklevel=2)
        hit = None
    if hit is not None:
        return hit

    arrays = _check_arrays(compute())
    try:
        _save(path, key_json, arrays)
    except OSError as err:
        _warn_unwritable(str(directory), err)
    return arrays
