"""`epdo data fetch` of archive bombs, in bounded memory and time (issue 20).

Each crafted archive is served by a local HTTP server thread and fetched by `epdo data fetch`
in a subprocess whose address space is capped 256 MB above what it holds after its imports:
every one would take gigabytes if it were read before being checked (a 1.5 MB CIFAR
``.tar.gz`` whose GNU long-name header declares 1.5 GB reached 5.3 GB; a 557 KB MNIST-rot
zip, 2 GB). Each must be refused with exit 2 and one line naming the URL, within seconds,
leaving nothing behind.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from test_data_helpers import TEST_AMAT, TRAIN_AMAT, amat_rows, amat_text
from test_hostile_fetch import hostile  # noqa: F401 - the server fixture

ROW = (" ".join(["0"] * 784) + " 3\n").encode()  # a valid row, 1,570 bytes
_CAP_MB = 256

_CAPPED_FETCH = textwrap.dedent("""
    import contextlib, io, json, os, resource, sys, time
    import epdo.zoo.data.fetch
    from epdo.cli.main import app
    size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    cap = size + (int(sys.argv[2]) << 20)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    for case in json.loads(sys.argv[1]):
        os.environ.update(case["env"])
        err = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(err):
            try:
                app(case["args"], prog_name="epdo")
                code = 0
            except SystemExit as exc:
                code = exc.code
            except BaseException as exc:
                code = "crash: " + type(exc).__name__
        for key in case["env"]:
            del os.environ[key]
        print(json.dumps([case["name"], code, err.getvalue(), time.perf_counter() - start]),
              flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(["memory", base, peak]))
""")


def _header(info: tarfile.TarInfo) -> bytes:
    """One 512-byte tar header for ``info`` exactly as given (no long-name blocks added)."""
    return info._create_header(info.get_info(), tarfile.GNU_FORMAT, "utf-8",  # noqa: SLF001
                               "surrogateescape")


def _tar_gz(path: Path, blocks: list[bytes | int]) -> None:
    """A gzip of ``blocks``: bytes as they are, an int as that many zero bytes (streamed,
    so a gigabyte of zeros costs no memory here), then the end of the archive."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    zero = bytes(1 << 20)
    with open(path, "wb") as out:
        for block in [*blocks, bytes(1024)]:
            if isinstance(block, bytes):
                out.write(compressor.compress(block))
                continue
            for start in range(0, block, len(zero)):
                out.write(compressor.compress(zero[: min(len(zero), block - start)]))
        out.write(compressor.flush())


def _extended(kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo("././@LongLink" if kind in b"LK" else "pax")
    info.type, info.size = kind, size
    return _header(info)


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, len(data), 0o644
    return _header(info) + data + bytes(-len(data) % 512)


def write_tar_bombs(www: Path) -> None:
    """The CIFAR archive bombs of :data:`CASES`."""
    batch = "cifar-10-batches-py/data_batch_1"
    declared = 600_000_000  # real zeros: old tarfile code held them all, twice
    _tar_gz(www / "longname.tar.gz",
            [_extended(tarfile.GNUTYPE_LONGNAME, declared), declared + (-declared % 512),
             _member(batch)])
    _tar_gz(www / "pax.tar.gz", [_extended(tarfile.XHDTYPE, 1 << 40), 4096])
    name = b"cifar-10-batches-py/x\0".ljust(512, b"\0")
    _tar_gz(www / "chain.tar.gz",
            [*(_extended(tarfile.GNUTYPE_LONGNAME, 512) + name for _ in range(3000)),
             _member(batch)])
    _tar_gz(www / "sparse.tar.gz", [_member(batch, b"", tarfile.GNUTYPE_SPARSE)])


def write_zip_bombs(www: Path) -> None:
    """The MNIST-rot archive bombs of :data:`CASES`."""
    good_test = amat_text(*amat_rows(3, 2))
    with zipfile.ZipFile(www / "rows.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open(TRAIN_AMAT, "w") as member:  # 100,000 valid rows, 12,000 expected
            for _ in range(100):
                member.write(ROW * 1000)
        z.writestr(TEST_AMAT, good_test)
    with zipfile.ZipFile(www / "line.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open(TRAIN_AMAT, "w") as member:  # one line of 150 MB
            for _ in range(150):
                member.write(b"0 " * 500_000)
        z.writestr(TEST_AMAT, good_test)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(TRAIN_AMAT, ROW * 3)
        z.writestr(TEST_AMAT, good_test)
    data = bytearray(buffer.getvalue())
    at = data.find(b"PK\x01\x02")  # the train member's central entry: declare 4 GB
    struct.pack_into("<I", data, at + 24, 0xFFFF0000)
    (www / "declared.zip").write_bytes(bytes(data))
    with zipfile.ZipFile(www / "entries.zip", "w") as z:
        for i in range(70):
            z.writestr(f"junk/{i}", b"")
        z.writestr(TRAIN_AMAT, ROW)
        z.writestr(TEST_AMAT, good_test)


CASES: dict[str, tuple[str, str, list[str], dict[str, str]]] = {
    # name: (dataset, served file, what the line must say, environment)
    "longname": ("cifar10", "longname.tar.gz",
                 ["unsafe archive refused: a GNU long name header declares 600,000,000 bytes",
                  "more than the 65,536 allowed"], {}),
    "pax": ("cifar10", "pax.tar.gz", ["a pax header declares 1,099,511,627,776 bytes"], {}),
    "chain": ("cifar10", "chain.tar.gz", ["more than 8 extended tar headers"], {}),
    "sparse": ("cifar10", "sparse.tar.gz", ["is a sparse file"], {}),
    "rows": ("mnist-rot", "rows.zip",
             [f"{TRAIN_AMAT}:12001: more than 12,000 rows, expected 12,000"], {}),
    "line": ("mnist-rot", "line.zip", [f"{TRAIN_AMAT}:1: a line longer than 65,536 bytes"], {}),
    "declared": ("mnist-rot", "declared.zip",
                 [f"{TRAIN_AMAT}: the member declares 4,294,901,760 bytes"], {}),
    "entries": ("mnist-rot", "entries.zip", ["the zip's directory declares 72 entries"], {}),
    "endless": ("mnist-rot", "endless", ["more than the 50,000,000 allowed",
                                         "EPDO_MAX_DOWNLOAD_BYTES"],
                {"EPDO_MAX_DOWNLOAD_BYTES": "50_000_000"}),
}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_archive_bombs_are_refused_under_a_memory_cap(hostile, tmp_path: Path) -> None:  # noqa: F811
    base, www = hostile
    write_tar_bombs(www)
    write_zip_bombs(www)
    served = {p.name: p.stat().st_size for p in www.iterdir()}
    assert served["longname.tar.gz"] < 1_000_000 and served["rows.zip"] < 1_000_000
    stores = tmp_path / "stores"
    stores.mkdir()
    cases = [{"name": name, "env": env,
              "args": ["data", "fetch", dataset, "--url", f"{base}/{file}", "--dest",
                       str(stores / name)]}
             for name, (dataset, file, _, env) in CASES.items()]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CAPPED_FETCH, json.dumps(cases),
                           str(_CAP_MB)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    outcomes = {name: (code, err, seconds) for name, code, err, seconds in rows[:-1]}
    for name, (_, file, needles, _) in CASES.items():
        code, err, seconds = outcomes[name]
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, code, err)
        for needle in [f"{base}/{file}", *needles]:
            assert needle in lines[0], (name, needle, lines[0])
        assert "Traceback" not in err and seconds < 10, (name, seconds)
    _, base_kb, peak_kb = rows[-1]
    assert (peak_kb - base_kb) < _CAP_MB * 1024  # the cap held, with room to spare
    assert list(stores.iterdir()) == []  # every dest was made by its fetch and removed again
    assert {p.name: p.stat().st_size for p in www.iterdir()} == served
    assert time.perf_counter() - start < 120
