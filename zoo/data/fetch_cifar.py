"""Checking a downloaded CIFAR-10 / CIFAR-100 archive and unpacking it safely.

:func:`install_cifar_archive` takes ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz``
(downloaded by :func:`~epdo.zoo.data.fetch.fetch_dataset`) and trusts nothing in it:

- it must be gzip (checked by its first bytes) holding a tar archive, and the whole gzip stream
  must be intact (read to its end, so a truncated download or a CRC error is caught);
- an extended header (a GNU long name or link, a pax record) is refused, before :mod:`tarfile`
  reads it into memory, when it declares more than :data:`_MAX_HEADER_BYTES` or when more than
  :data:`_MAX_HEADER_CHAIN` of them precede one member; a sparse member is refused (the
  original archives have none of these) — so a small archive cannot make the check use
  gigabytes;
- every member must be a regular file or a folder with a relative path without ``..``
  components: a symbolic or hard link, a device, a FIFO, an absolute path or a ``..`` makes the
  whole archive refused; at most :data:`_MAX_MEMBERS` members;
- the expected members (:data:`~epdo.zoo.data.cifar.CIFAR_LAYOUT`: ``data_batch_1`` ..
  ``data_batch_5``, ``test_batch`` and ``batches.meta`` under ``cifar-10-batches-py/``;
  ``train``, ``test`` and ``meta`` under ``cifar-100-python/``) must each be there exactly once,
  and no member may be larger than :data:`CIFAR_MAX_BYTES` (4x the real size; other members,
  such as the readme, 1 MiB) — checked from the tar header, before a byte of it is read;
- only the expected members are written (one by one, never with ``extractall``), into a
  temporary folder beside the destination; there each batch is read with the restricted
  unpickler (:mod:`.safe_pickle`) and must be ``(N, 3072)`` uint8 with N labels in range,
  N being :data:`CIFAR_ROWS` (10,000 per CIFAR-10 batch; 50,000 / 10,000 for CIFAR-100's
  train / test), and the meta file must name every class;
- only then is the folder renamed into place (``<dest>/cifar-10-batches-py``, where
  :func:`~epdo.zoo.data.cifar.load_cifar` reads it). A folder already there is moved aside first
  and removed once the new one is in place, so a failure leaves it untouched and the loader
  never sees a partial folder.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from .cifar import CIFAR_LAYOUT, _read_batch, cifar_classes
from .download import writing_into
from .errors import DataError

__all__ = [
    "CIFAR_ARCHIVES",
    "CIFAR_MAX_BYTES",
    "CIFAR_MD5",
    "CIFAR_ROWS",
    "CIFAR_URLS",
    "CIFAR_URL_ENV",
    "install_cifar_archive",
]

#: The archive of each dataset (the "python version" of the official site).
CIFAR_ARCHIVES: dict[str, str] = {
    "cifar10": "cifar-10-python.tar.gz",
    "cifar100": "cifar-100-python.tar.gz",
}
#: Where the archives are downloaded from by default.
CIFAR_URLS: dict[str, str] = {
    name: f"https://www.cs.toronto.edu/~kriz/{archive}" for name, archive in CIFAR_ARCHIVES.items()
}
#: The archives' md5 digests (as torchvision publishes them), checked for :data:`CIFAR_URLS`.
CIFAR_MD5: dict[str, str] = {
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}
#: Environment variables overriding the download address.
CIFAR_URL_ENV: dict[str, str] = {"cifar10": "EPDO_CIFAR10_URL", "cifar100": "EPDO_CIFAR100_URL"}
#: Images in each batch file of the genuine archives.
CIFAR_ROWS: dict[str, dict[str, int]] = {
    "cifar10": {**{f"data_batch_{i}": 10_000 for i in range(1, 6)}, "test_batch": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
}
_ROW_BYTES = 3_104  # one image in a pickled batch: 3,072 pixels, its label and file name
_META_BYTES = 1 << 16  # the meta files are 158 bytes (CIFAR-10) and about 1.5 KB (CIFAR-100)
#: The largest size allowed per expected member: 4x the real one (64 KiB for the meta files).
CIFAR_MAX_BYTES: dict[str, dict[str, int]] = {
    name: {**{f: 4 * rows * _ROW_BYTES for f, rows in CIFAR_ROWS[name].items()},
           CIFAR_LAYOUT[name]["meta"]: _META_BYTES}
    for name in CIFAR_ROWS
}
_MAX_OTHER_BYTES = 1 << 20  # members that are not extracted (readme.html, file.txt~)
_MAX_MEMBERS = 64  # the real archives hold 9 and 5
_MAX_TRAILING_BYTES = 1 << 20  # after the tar's end marker: only its padding (< 10 KiB)
_MAX_HEADER_BYTES = 1 << 16  # one GNU long name / pax record block (a path needs < 4 KiB)
_MAX_HEADER_CHAIN = 8  # extended headers before one member
_EXTENDED = {tarfile.GNUTYPE_LONGNAME: "GNU long name", tarfile.GNUTYPE_LONGLINK: "GNU long link",
             tarfile.XHDTYPE: "pax", tarfile.XGLTYPE: "pax global",
             tarfile.SOLARIS_XHDTYPE: "Solaris pax"}
_CHUNK = 1 << 16


class _HeaderRefused(Exception):
    """A tar header refused before :mod:`tarfile` acted on it (the message says why)."""


class _CheckedTarInfo(tarfile.TarInfo):
    """A tar header that refuses, before :mod:`tarfile` reads their payload into memory,
    extended headers larger than :data:`_MAX_HEADER_BYTES` or chained more than
    :data:`_MAX_HEADER_CHAIN` deep, and sparse members (whose maps :mod:`tarfile` would read
    whole). These hooks are the ones :meth:`tarfile.TarInfo.fromtarfile` calls for every header
    read; the archive's tests prove they still are."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED:
            chain = getattr(tar, "_epdo_chain", 0) + 1
            if self.size > _MAX_HEADER_BYTES:
                raise _HeaderRefused(f"a {_EXTENDED[self.type]} header declares {self.size:,} "
                                     f"bytes, more than the {_MAX_HEADER_BYTES:,} allowed")
            if chain > _MAX_HEADER_CHAIN:
                raise _HeaderRefused(f"more than {_MAX_HEADER_CHAIN} extended tar headers "
                                     "before one member")
            tar._epdo_chain = chain  # type: ignore[attr-defined]
        else:
            tar._epdo_chain = 0  # type: ignore[attr-defined]
            if self.type == tarfile.GNUTYPE_SPARSE:
                self._refuse_sparse(tar)
        return super()._proc_member(tar)

    def _refuse_sparse(self, *args: object) -> None:
        raise _HeaderRefused(f"member {self.name!r} is a sparse file")

    # the sparse formats of GNU tar, old and pax (0.0, 0.1, 1.0)
    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


def install_cifar_archive(archive: str | os.PathLike[str], name: str,
                          dest: str | os.PathLike[str],
                          expected_rows: Mapping[str, int] | None | Literal["default"] = "default",
                          label: str | None = None) -> Path:
    """Check CIFAR archive ``archive`` and unpack it as ``dest/<folder>`` (see the module).

    Args:
        archive: the downloaded ``.tar.gz`` (left where it is).
        name: ``"cifar10"`` or ``"cifar100"``.
        dest: an existing folder; the result is ``dest/cifar-10-batches-py`` or
            ``dest/cifar-100-python``, replacing a folder of that name once all checks passed.
        expected_rows: images required per batch file; ``"default"`` means :data:`CIFAR_ROWS`
            (read at call time), ``None`` skips the count (for small test fixtures).
        label: how messages name the archive (e.g. its URL); default its path.

    Returns:
        The folder the loader reads.

    Raises:
        DataError: one line, for any failed check or a folder that cannot be written.
        DiskFullError: ``dest``'s disk is full (naming ``dest``).
    """
    layout = CIFAR_LAYOUT[name]
    rows = CIFAR_ROWS[name] if expected_rows == "default" else expected_rows
    archive = Path(archive)
    dest = Path(dest)
    label = label or str(archive)
    final = dest / layout["folder"]
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise DataError(f"{final} exists and is not a plain folder (a link or a file); move it "
                        "away or pass another --dest")
    with writing_into(dest):
        staging = Path(tempfile.mkdtemp(prefix=f".{layout['folder']}.", suffix=".part", dir=dest))
    try:
        _unpack(archive, name, staging, label, dest)
        _check_batches(name, staging, rows, label)
        try:
            os.chmod(staging, 0o755)
            _swap_into_place(staging, final)
        except OSError as exc:
            raise DataError(f"cannot move the checked folder into place ({exc.strerror or exc})",
                            final) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _expected_members(name: str) -> dict[str, str]:
    """``{path in the archive: file name}`` of the members that are extracted."""
    layout = CIFAR_LAYOUT[name]
    files = [*layout["train"], *layout["test"], layout["meta"]]
    return {f"{layout['folder']}/{f}": f for f in files}


def _unpack(archive: Path, name: str, staging: Path, label: str, dest: Path) -> None:
    """Check every member's header and copy the expected ones into ``staging`` (a hidden
    folder in ``dest``, the folder that write errors name)."""
    wanted = _expected_members(name)
    not_original = f"it is not {CIFAR_ARCHIVES[name]} - check the URL"
    try:
        with open(archive, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise DataError(f"cannot read the download ({exc.strerror or exc})", label) from None
    if magic != b"\x1f\x8b":
        raise DataError(f"not a gzip file; {not_original}", label)
    found: set[str] = set()
    try:
        with gzip.open(archive, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|", tarinfo=_CheckedTarInfo) as tar:
                for count, member in enumerate(tar, 1):
                    if count > _MAX_MEMBERS:
                        raise DataError(f"more than {_MAX_MEMBERS} members; {not_original}",
                                        label)
                    key = _member_key(member, label)
                    if member.isdir():
                        continue
                    target = wanted.get(key)
                    limit = CIFAR_MAX_BYTES[name][target] if target else _MAX_OTHER_BYTES
                    if member.size > limit:
                        raise DataError(f"member {key} is {member.size:,} bytes, more than the "
                                        f"{limit:,} allowed; {not_original}", label)
                    if target is None:
                        continue  # skipped unread (readme.html, file.txt~)
                    if key in found:
                        raise DataError(f"member {key} appears twice; {not_original}", label)
                    found.add(key)
                    source = tar.extractfile(member)
                    if source is None:  # pragma: no cover - a regular member always has data
                        raise DataError(f"member {key} has no data; {not_original}", label)
                    _copy(source, staging / target, member.size, f"{label}/{key}", dest)
            trailing = 0
            while chunk := gz.read(_CHUNK):  # to the end: gzip checks its CRC and length
                trailing += len(chunk)
                if trailing > _MAX_TRAILING_BYTES:
                    raise DataError(f"more than {_MAX_TRAILING_BYTES:,} bytes after the end of "
                                    f"the tar archive; {not_original}", label)
    except DataError:
        raise
    except _HeaderRefused as exc:
        raise DataError(f"unsafe archive refused: {exc}; {not_original}", label) from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"damaged or truncated archive ({type(exc).__name__}: {exc}); download "
                        f"it again, or {not_original}", label) from None
    missing = [key for key in wanted if key not in found]
    if missing:
        raise DataError(f"the archive lacks {', '.join(missing)}; {not_original}", label)


def _member_key(member: tarfile.TarInfo, label: str) -> str:
    """The member's normalised path; a refusal for anything but a safe file or folder."""
    name = member.name
    path = PurePosixPath(name)
    why = None
    if path.is_absolute() or (name[:1].isalpha() and name[1:2] == ":"):
        why = "has an absolute path"
    elif ".." in path.parts:
        why = "has a '..' component"
    elif member.issym():
        why = f"is a symbolic link (to {member.linkname!r})"
    elif member.islnk():
        why = f"is a hard link (to {member.linkname!r})"
    elif member.ischr() or member.isblk():
        why = "is a device"
    elif member.isfifo():
        why = "is a FIFO"
    elif not (member.isreg() or member.isdir()):
        why = f"has the unknown tar type {member.type!r}"
    if why is not None:
        raise DataError(f"unsafe archive refused: member {name!r} {why}; the original holds only "
                        "regular files and folders - do not use this archive, check the URL",
                        label)
    return "/".join(path.parts)


def _copy(source: IO[bytes], target: Path, size: int, label: str, dest: Path) -> None:
    """Copy one member (``size`` bytes by its header) into the new file ``target``; a write
    that fails (a full disk) names ``dest``, a read that fails is left to the caller."""
    written = 0
    with writing_into(dest):
        out = open(target, "xb")  # noqa: SIM115 - closed below, where a full disk is reported
    try:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            with writing_into(dest):
                out.write(chunk)
        with writing_into(dest):
            out.close()
    finally:
        with contextlib.suppress(OSError):
            out.close()
    if written != size:
        raise DataError(f"{written:,} of {size:,} bytes; the archive is truncated - download it "
                        "again", label)


def _check_batches(name: str, folder: Path, rows: Mapping[str, int] | None, label: str) -> None:
    """Read every unpacked batch and the meta file with the restricted unpickler."""
    layout = CIFAR_LAYOUT[name]
    prefix = f"{label}/{layout['folder']}"
    for file in [*layout["train"], *layout["test"]]:
        try:
            _, labels = _read_batch(folder / file, layout["labels"], len(layout["classes"]))
        except DataError as exc:  # name the member, not the temporary file
            raise DataError(exc.message, f"{prefix}/{file}", exc.record) from None
        want = None if rows is None else rows.get(file)
        if want is not None and len(labels) != want:
            raise DataError(f"{len(labels):,} images, expected {want:,}; the archive is "
                            "incomplete or not the original - check the URL", f"{prefix}/{file}")
    try:
        cifar_classes(name, folder)
    except DataError as exc:
        raise DataError(exc.message, f"{prefix}/{layout['meta']}", exc.record) from None


def _swap_into_place(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``; a folder already there is kept until that succeeded."""
    if not final.exists():
        os.replace(staging, final)
        return
    holder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    old = holder / final.name
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)
        shutil.rmtree(holder, ignore_errors=True)
        raise
    shutil.rmtree(holder, ignore_errors=True)
