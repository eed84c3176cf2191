"""The zip archives of the torch formats (TorchScript, ``.pt2``, ``.aoti.pt2``): read them
checked, digest them, and pack them with the digest inside.

torch writes every such artifact as a zip of entries under one top folder; epdo adds its
metadata as the entry ``extra/epdo.json``. The digest an artifact records
(``epdo.verification.graph_sha256``) is

    SHA-256( for each entry in name order, but ``extra/epdo.json`` and the random
             ``.data/serialization_id``:  len(name) (8 bytes LE) . name . size (8 bytes LE)
             . bytes
             then  b"\\0epdo.input_shape\\0" . JSON(input_shape) )

where ``name`` is relative to the top folder. The input shape is part of it because a
TorchScript graph does not fix the size of its input.

:func:`open_archive` reads an archive's bytes and refuses, before any entry is inflated, an
archive torch would not have written: entries outside one top folder, a name given twice,
compression other than deflate, entries whose compressed sizes add up to more than the file
(overlap), or deflated entries that would inflate by more than
:data:`~epdo.exporters.limits.MAX_ARCHIVE_INFLATION` (a zip bomb). Reading an entry checks
its CRC.

It also refuses any archive whose layout two zip readers could read differently
(:func:`_check_layout`): Python's ``zipfile`` tolerates bytes before the archive and shifts
every offset by them, while torch's reader (miniz) takes offsets from the start of the
file, so a crafted file could show one set of entries to the check and another to torch.
The file must start with its first entry; the end records must sit at the very end, where
they say; the central directory where they say it is; and every entry's local header where
the directory says, with the same name, none overlapping another. Then both readers see the
same entries at the same bytes: what is checked is what torch loads.

:func:`seal` packs an artifact twice, once to digest it and once with the digest in its
metadata, and checks that the model entries came out the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from .artifact import DIGEST_KEY, EXTRA_FILE, ArtifactError, first_line
from .limits import MAX_ARCHIVE_INFLATION

__all__ = ["UNDIGESTED", "Archive", "archive_digest", "open_archive", "seal"]

UNDIGESTED = (f"extra/{EXTRA_FILE}", ".data/serialization_id")
"""The entries (relative to the top folder) the digest leaves out: epdo's metadata, which
carries the digest, and the id torch draws anew at every save."""

_READ_ERRORS = (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError,
                NotImplementedError, RecursionError)


class Archive:
    """An open, structurally checked torch zip archive.

    Attributes:
        root: the one top folder.
        names: every entry's name relative to ``root``, in archive order.
    """

    def __init__(self, zf: zipfile.ZipFile, root: str) -> None:
        self._zf = zf
        self.root = root
        self.names = [info.filename[len(root) + 1:] for info in zf.infolist()]

    def read(self, name: str) -> bytes:
        """The bytes of entry ``name`` (relative to the top folder); its CRC is checked."""
        return self._zf.read(f"{self.root}/{name}")

    def text(self, name: str) -> str | None:
        """Entry ``name`` as UTF-8 text, None when the archive has no such entry."""
        return self.read(name).decode("utf-8") if name in self.names else None

    def metadata_text(self) -> str | None:
        """The text of ``extra/epdo.json``, None when absent."""
        return self.text(f"extra/{EXTRA_FILE}")

    def entries_digest(self) -> Any:
        """The running SHA-256 (a hashlib object) of every entry but :data:`UNDIGESTED`, in
        name order (name length, name, size, bytes); reads every entry, checking its CRC."""
        digest = hashlib.sha256()
        infos = sorted(self._zf.infolist(), key=lambda i: i.filename)
        for info in infos:
            name = info.filename[len(self.root) + 1:]
            if name in UNDIGESTED:
                continue
            raw = name.encode("utf-8")
            digest.update(len(raw).to_bytes(8, "little") + raw
                          + info.file_size.to_bytes(8, "little"))
            with self._zf.open(info) as entry:
                while chunk := entry.read(1 << 20):
                    digest.update(chunk)
        return digest


def _root(zf: zipfile.ZipFile, size: int, where: Any, kind: str) -> str:
    """The top folder of an archive torch would have written (see the module docstring)."""
    infos = zf.infolist()
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if not infos or len(roots) != 1 or any("/" not in info.filename for info in infos):
        raise ArtifactError(f"{where}: not a {kind} (its entries are not in one folder)")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise ArtifactError(f"{where}: corrupted {kind} (an entry name appears twice)")
    if any(info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
           for info in infos):
        raise ArtifactError(f"{where}: not a {kind} as torch writes it (entries compressed "
                            "other than by deflate)")
    if sum(info.compress_size for info in infos) > size:
        raise ArtifactError(f"{where}: corrupted {kind} (overlapping entries)")
    inflated = sum(max(0, info.file_size - info.compress_size) for info in infos)
    if inflated > MAX_ARCHIVE_INFLATION:
        raise ArtifactError(f"{where}: its compressed entries would inflate by {inflated:,} "
                            f"bytes, over the limit of {MAX_ARCHIVE_INFLATION:,} (a zip bomb?)")
    return roots.pop()


_LOCAL, _CENTRAL = b"PK\x03\x04", b"PK\x01\x02"
_END, _END64, _LOCATOR64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"


def _check_layout(data: bytes, zf: zipfile.ZipFile, where: Any, kind: str) -> None:
    """Refuse a layout two zip readers could disagree on (see the module docstring)."""
    def bad(why: str) -> ArtifactError:
        return ArtifactError(f"{where}: not a {kind} as torch writes it ({why}; zip readers "
                             "could disagree on what it holds)")

    if not data.startswith(_LOCAL):
        raise bad("bytes before the first entry")
    end = len(data) - 22
    if end < 0 or data[end:end + 4] != _END:
        raise bad("bytes after the end record, or no end record at the end")
    count, cd_size, cd_offset, comment = struct.unpack_from("<HIIH", data, end + 10)
    if comment:
        raise bad("an archive comment")
    cd_end = end
    locator = end - 20
    if locator >= 0 and data[locator:locator + 4] == _LOCATOR64:
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if record + 56 != locator or data[record:record + 4] != _END64:
            raise bad("the zip64 end record is not where its locator says")
        count, cd_size, cd_offset = struct.unpack_from("<QQQ", data, record + 32)
        cd_end = record
    if cd_offset + cd_size != cd_end or data[cd_offset:cd_offset + 4] != _CENTRAL:
        raise bad("the central directory is not where the end record says")
    if getattr(zf, "start_dir", cd_offset) != cd_offset or count != len(zf.infolist()):
        raise bad("its offsets are shifted")
    last = 0
    for info in sorted(zf.infolist(), key=lambda i: i.header_offset):
        at = info.header_offset
        if at < last:
            raise bad("overlapping entries")
        if data[at:at + 4] != _LOCAL:
            raise bad("an entry is not where the central directory says")
        name_len, extra_len = struct.unpack_from("<HH", data, at + 26)
        name = data[at + 30:at + 30 + name_len]
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if name.decode(encoding, "replace") != info.orig_filename:
            raise bad("an entry's local name is not its directory name")
        last = at + 30 + name_len + extra_len + info.compress_size
        if last > cd_offset:
            raise bad("an entry runs into the central directory")


@contextlib.contextmanager
def open_archive(data: bytes, where: Any, kind: str) -> Iterator[Archive]:
    """The checked :class:`Archive` of ``data``; ``kind`` names the format in messages
    ("TorchScript archive", "torch.export program", ...).

    Any failure to read it, inside the ``with`` block too, is one ArtifactError line:
    ``<where>: not a loadable <kind> (truncated or corrupted?): <why>``.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            root = _root(zf, len(data), where, kind)
            _check_layout(data, zf, where, kind)
            yield Archive(zf, root)
    except ArtifactError:
        raise
    except _READ_ERRORS as exc:
        raise ArtifactError(f"{where}: not a loadable {kind} (truncated or corrupted?): "
                            f"{first_line(exc)}") from exc


def archive_digest(entries: Any, input_shape: Any) -> str:
    """The digest an archive artifact records: the entries' running SHA-256
    (:meth:`Archive.entries_digest`) continued with the declared input shape."""
    digest = entries.copy()
    digest.update(b"\0epdo.input_shape\0" + json.dumps(input_shape).encode("utf-8"))
    return digest.hexdigest()


def seal(pack: Callable[[dict[str, Any] | None], bytes], metadata: dict[str, Any],
         where: Any, kind: str) -> tuple[bytes, str]:
    """``(bytes, digest)`` of an archive artifact that carries ``metadata`` in
    ``extra/epdo.json``, its ``epdo.verification`` completed with the digest.

    ``pack(meta)`` must pack the same model entries whatever ``meta`` is (None: no
    metadata): the digest of a first packing is recorded in the second, which is checked
    to have it.
    """
    def digest_of(data: bytes) -> str:
        with open_archive(data, where, kind) as archive:
            return archive_digest(archive.entries_digest(), metadata.get("epdo.input_shape"))

    digest = digest_of(pack(None))
    ver = {**metadata.get("epdo.verification", {}), DIGEST_KEY: digest}
    data = pack({**metadata, "epdo.verification": ver})
    if digest_of(data) != digest:
        raise ArtifactError(f"{where}: torch packed different bytes twice; cannot record "
                            "the digest")
    return data, digest
