"""Hostile files for the stencil cache, the fused kernel's build, IDX data and angle lists:
damaged entries are rebuilt with one warning, bombs are refused in bounded time and memory,
concurrent builds are serialised."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from epdo.zoo import build_model, cache, stencils
from epdo.zoo.data import DataError
from epdo.zoo.data.idx import IMAGE_MAGIC, MAX_IDX_BYTES_ENV, read_idx
from epdo.zoo.evaluation import MAX_ANGLES, EvalError, parse_angles
from epdo.zoo.layers import native

# --------------------------------------------------------------------------- stencil cache


@pytest.fixture
def genuine_gauss(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A private cache holding the real gauss stencils; deriving them again is patched to
    return those same numbers at once (the real derivation takes ~10 s)."""
    real = np.array(stencils.stencils("gauss", 4))
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    monkeypatch.setitem(stencils._DERIVE, "gauss", lambda order, size: real.copy())
    stencils.clear_memory_cache()
    stencils.stencils("gauss", 4)
    entry = next(tmp_path.glob("stencils-*.npz"))
    yield entry, real
    stencils.clear_memory_cache()


def _rewrite(entry: Path, arrays: dict[str, np.ndarray], digest: str | None) -> None:
    with np.load(entry, allow_pickle=False) as npz:
        key = npz[cache.KEY_FIELD]
        kept = {cache.DIGEST_FIELD: npz[cache.DIGEST_FIELD]} if digest is None else {}
    extra = {cache.KEY_FIELD: key, **kept}
    if digest is not None:
        extra[cache.DIGEST_FIELD] = np.array(digest)
    with open(entry, "wb") as fh:
        np.savez(fh, **arrays, **extra)


@pytest.mark.parametrize("attack", ["zeroed, old digest", "zeroed, new digest",
                                    "noise, new digest", "no digest"])
def test_damaged_stencil_entry_is_rebuilt_with_one_warning(genuine_gauss, attack) -> None:
    entry, real = genuine_gauss
    bad = np.zeros_like(real)
    if attack.startswith("noise"):
        bad = np.random.default_rng(0).normal(size=real.shape)
    arrays = {"stencils": bad}
    if attack == "no digest":
        arrays = {"stencils": real}
        with np.load(entry, allow_pickle=False) as npz:
            key = npz[cache.KEY_FIELD]
        with open(entry, "wb") as fh:
            np.savez(fh, stencils=real * 0, **{cache.KEY_FIELD: key})
    else:
        digest = cache.content_digest(arrays) if "new digest" in attack else None
        _rewrite(entry, arrays, digest)
    stencils.clear_memory_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = stencils.stencils("gauss", 4)
    messages = [str(w.message) for w in caught if "content check" in str(w.message)]
    assert len(messages) == 1 and entry.name in messages[0]
    np.testing.assert_array_equal(got, real)
    stencils.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: the next read is a clean hit
        np.testing.assert_array_equal(stencils.stencils("gauss", 4), real)


def test_a_model_never_runs_on_zeroed_stencils(genuine_gauss) -> None:
    entry, real = genuine_gauss
    torch.manual_seed(0)
    good = build_model("quickstart").eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = good(x)
    zeroed = {"stencils": np.zeros_like(real)}
    _rewrite(entry, zeroed, cache.content_digest(zeroed))  # a consistent, malicious entry
    stencils.clear_memory_cache()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        torch.manual_seed(0)
        again = build_model("quickstart").eval()
        with torch.no_grad():
            torch.testing.assert_close(again(x), want)


def test_stencil_problem_names_what_is_wrong() -> None:
    real = np.array(stencils.stencils("fd", 4))
    assert stencils.stencil_problem(real, 4, 5) is None
    assert "shape" in stencils.stencil_problem(real[:10], 4, 5)
    flipped = real.copy()
    flipped[1] = flipped[1][:, ::-1] * -1 + 0.5
    assert "symmetry" in stencils.stencil_problem(flipped, 4, 5)
    nan = real.copy()
    nan[3, 0, 0] = np.nan
    assert "finite" in stencils.stencil_problem(nan, 4, 5)


# --------------------------------------------------------------------------- fused kernel build


def test_build_name_depends_on_what_the_library_depends_on() -> None:
    source = native.SOURCE.read_bytes()
    name = native.build_name(source)
    assert name == native.build_name(source)  # two installs of the same source share it
    assert name != native.build_name(source + b"\n// another checkout")
    assert name != native.build_name(source, ("-O2",))
    assert name.startswith("epdo_stencil_product_")


def test_concurrent_first_builds_are_serialised(tmp_path: Path) -> None:
    inside, overlaps = [], []

    def build() -> None:
        with native._build_lock(tmp_path):
            if inside:
                overlaps.append(True)
            inside.append(1)
            time.sleep(0.2)
            inside.pop()

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and (tmp_path / "epdo-build.lock").exists()


def test_a_killed_build_leaves_no_lock_behind(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from epdo.zoo.layers import native
        with native._build_lock(Path({str(tmp_path)!r})):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script], timeout=120)
    start = time.monotonic()
    with native._build_lock(tmp_path):  # does not wait for the dead process
        pass
    assert time.monotonic() - start < 5


# --------------------------------------------------------------------------- IDX files


def _gz(path: Path, header: bytes, body_chunks: int, chunk: bytes = b"\0" * (1 << 20)) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header)
        for _ in range(body_chunks):
            fh.write(chunk)
    return path


def test_gzip_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """A 1 MB .gz that inflates to 1 GiB behind a header announcing ten 28x28 images."""
    bomb = _gz(tmp_path / "bomb-idx3-ubyte.gz", struct.pack(">IIII", IMAGE_MAGIC, 10, 28, 28),
               1024)
    assert bomb.stat().st_size < 2 << 20
    script = textwrap.dedent(f"""
        import sys, time
        from epdo.zoo.data.idx import read_idx
        from epdo.zoo.data import DataError
        start = time.monotonic()
        try:
            read_idx({str(bomb)!r}, 2051)
        except DataError as exc:
            print(exc)
        print(time.monotonic() - start)
        # the peak resident memory of this process image (ru_maxrss would also count what a
        # large parent held when it forked this child)
        status = open("/proc/self/status").read()
        print(int(status.split("VmHWM:")[1].split()[0]) * 1024)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "more data after the 10 records" in lines[0] and str(bomb) in lines[0], lines
    assert float(lines[1]) < 5, lines
    assert int(lines[2]) < 900 << 20, lines  # the process (torch included) never held the GiB


def test_header_announcing_too_much_is_refused_before_reading(tmp_path: Path,
                                                               monkeypatch) -> None:
    huge = _gz(tmp_path / "huge.gz", struct.pack(">IIII", IMAGE_MAGIC, 2**32 - 1, 255, 255), 0)
    with pytest.raises(DataError, match=f"more than the limit .* set {MAX_IDX_BYTES_ENV}"):
        read_idx(huge, IMAGE_MAGIC)
    plain = tmp_path / "small"
    plain.write_bytes(struct.pack(">IIII", IMAGE_MAGIC, 3, 4, 5) + bytes(60))
    monkeypatch.setenv(MAX_IDX_BYTES_ENV, "59")
    with pytest.raises(DataError, match="more than the limit"):
        read_idx(plain, IMAGE_MAGIC)
    monkeypatch.setenv(MAX_IDX_BYTES_ENV, "60")
    assert read_idx(plain, IMAGE_MAGIC).shape == (3, 4, 5)
    monkeypatch.setenv(MAX_IDX_BYTES_ENV, "lots")
    with pytest.raises(DataError, match="positive number of bytes"):
        read_idx(plain, IMAGE_MAGIC)


def test_compressed_and_plain_files_still_read(tmp_path: Path) -> None:
    arr = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    header = struct.pack(">IIII", IMAGE_MAGIC, 3, 4, 5)
    packed = tmp_path / "ok.gz"
    with gzip.open(packed, "wb") as fh:
        fh.write(header[:6])
    with gzip.open(packed, "ab") as fh:  # two gzip members
        fh.write(header[6:] + arr.tobytes())
    np.testing.assert_array_equal(read_idx(packed, IMAGE_MAGIC), arr)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(DataError, match="ends inside record"):
        read_idx(cut, IMAGE_MAGIC)


# --------------------------------------------------------------------------- angles


@pytest.mark.parametrize("text", ["0:1000000:1e-3", "0:1e300:1e-300", "0:360:0.1",
                                  ",".join(str(i) for i in range(MAX_ANGLES + 1))])
def test_too_many_angles_are_refused_at_once(text: str) -> None:
    start = time.monotonic()
    with pytest.raises(EvalError, match=f"at most {MAX_ANGLES}|more than {MAX_ANGLES}"):
        parse_angles(text, option="--angles")
    assert time.monotonic() - start < 1


def test_a_full_turn_by_half_degrees_is_allowed() -> None:
    angles = parse_angles("0:360:0.5")
    assert len(angles) == MAX_ANGLES and angles[1] == 0.5
    assert os.environ.get("EPDO_MAX_ANGLES") is None  # a fixed limit, documented
