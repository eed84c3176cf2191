"""Hostile image folders and image files (issue 20, "bombs under the limits, and hangs"):
16-bit and float images just under the pixel limit decode within a memory cap to the same
pixels as before; FIFOs, symbolic links out of the dataset folder and class names that differ
only in their Unicode form are one line each, never a hang or a walk of the file system."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_checks import cli, refused
from PIL import Image

from epdo.zoo.data import DataError
from epdo.zoo.data.folder import index_folder
from epdo.zoo.data.folder_dataset import load_folder
from epdo.zoo.data.folder_images import PixelSettings
from epdo.zoo.data.folder_info import folder_info
from epdo.zoo.data.images import decode_image, model_pixels

SIDE = 10_000
"""The bombs' width and height: 100 M pixels, just under epdo's limit."""
GRAY = PixelSettings(1, (8, 8))
SPEC = {
    "name": "hostile_folder", "group": "C4", "discretization": "gauss",
    "input": {"channels": 1, "size": 12, "mean": "auto", "std": "auto"},
    "layers": [{"op": "pdo_conv", "fields": 2, "order": 2, "pool": 2},
               {"op": "head", "classes": 2}],
    "train": {"dataset": "folder", "epochs": 1, "batch_size": 4},
}


def tiny_spec(folder: Path) -> Path:
    """A small spec that trains on a folder of images in a second."""
    path = folder / "hostile_folder.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


# ------------------------------------------------------------------- crafted files


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16(path: Path, row: np.ndarray, height: int) -> Path:
    """A 16-bit grayscale PNG whose rows all equal ``row`` (uint16): the first row as is,
    the others as PNG's "up" filter of zeros, so 200 MB of pixels take ~200 KB."""
    width = len(row)
    comp = zlib.compressobj(9)
    parts = [comp.compress(b"\x00" + row.astype(">u2").tobytes())]
    same = b"\x02" + bytes(2 * width)
    parts += [comp.compress(same) for _ in range(height - 1)]
    parts.append(comp.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))
    return path


def float_tiff(path: Path, row: np.ndarray, height: int, rows_per_strip: int = 16) -> Path:
    """A float32 TIFF whose rows all equal ``row``: one deflated strip of identical rows that
    every strip offset points to (an attacker's 400 MB image in well under 1 MB)."""
    width = len(row)
    strip = zlib.compress(np.tile(row.astype("<f4"), rows_per_strip).tobytes(), 9)
    strips = -(-height // rows_per_strip)
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 32), (259, 3, 1, 8),
               (262, 3, 1, 1), (273, 4, strips, None), (277, 3, 1, 1),
               (278, 4, 1, rows_per_strip), (279, 4, strips, None), (339, 3, 1, 3)]
    ifd_size = 2 + 12 * len(entries) + 4
    offsets_at = 8 + ifd_size
    counts_at = offsets_at + 4 * strips
    data_at = counts_at + 4 * strips
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 273:
            ifd += struct.pack("<HHII", tag, kind, count, offsets_at)
        elif tag == 279:
            ifd += struct.pack("<HHII", tag, kind, count, counts_at)
        elif kind == 3:
            ifd += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    # the last strip holds fewer rows: its byte count is that of a full one, read in part
    body = (struct.pack(f"<{strips}I", *([data_at] * strips))
            + struct.pack(f"<{strips}I", *([len(strip)] * strips)) + strip)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + body)
    return path


def _rows() -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit row over the whole range and a float row with NaN, infinities, values below
    0 and above 1, and values in [0, 1]."""
    rng = np.random.default_rng(20)
    wide = rng.integers(0, 65536, SIDE, dtype=np.uint16)
    wide[:4] = [0, 65535, 128, 65407]
    floats = rng.uniform(-0.2, 1.2, SIDE).astype(np.float32)
    floats[:6] = [np.nan, np.inf, -np.inf, 0.5, 1.0, 0.0]
    return wide, floats


def _as_8bit(row: np.ndarray) -> np.ndarray:
    """The module docstring's map, on a row (float64, as the reader before issue 20)."""
    values = row.astype(np.float64)
    if row.dtype.kind == "f":
        return np.rint(np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * 255).astype(np.uint8)
    return np.rint(np.clip(values, 0, 65535) * (255 / 65535)).astype(np.uint8)


_CASES = [(1, (28, 28), "resize"), (3, (20, 30), "center_crop")]

_BOMB_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from epdo.exporters.runtime import Preprocessing, preprocess_input
    from epdo.zoo.data.folder_info import folder_info
    from epdo.zoo.data.images import decode_image

    def status(key):
        text = open("/proc/self/status").read()
        return int(text.split(key + ":")[1].split()[0]) * 1024

    base = status("VmSize")
    cap = base + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    out = {}
    for path in sys.argv[3:]:
        for channels, size, fit in json.loads(sys.argv[2]):
            pixels, info = decode_image(path, channels, tuple(size), fit)
            out[f"{path}|{channels}"] = [info.mode, info.bits, pixels.tolist()]
        served = preprocess_input(path, Preprocessing(channels=1, size=(28, 28)))
        out[f"{path}|predict"] = (served * 255).round().astype(int).tolist()
    folder = folder_info(sys.argv[3].rsplit("/", 2)[0], workers=0)
    out["info"] = [folder["bits"], folder["bad"], folder["largest"]]
    out["peak"] = status("VmPeak") - base
    print(json.dumps(out))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_wide_and_float_images_decode_under_a_memory_cap(tmp_path: Path) -> None:
    """A 10000x10000 16-bit PNG (200 MB decoded) and float TIFF (400 MB decoded) decode, in
    ``decode_image`` (training), ``epdo predict``'s reader and ``epdo data info``, in a
    process allowed 600 MB more than it holds after its imports (the reader before issue 20
    took 2.5 GB more), to exactly the pixels of mapping to 8 bits first, then fitting."""
    wide, floats = _rows()
    root = tmp_path / "bombs"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("L", (12, 12), 7).save(root / name / "small.png")
    png = png16(root / "a" / "wide.png", wide, SIDE)
    tif = float_tiff(root / "b" / "float.tif", floats, SIDE)
    assert png.stat().st_size < 400_000 and tif.stat().st_size < 1_000_000
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT, str(600 << 20),
                           json.dumps(_CASES), str(png), str(tif)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - start < 120
    out = json.loads(proc.stdout)
    assert out["peak"] < 600 << 20
    assert out["info"] == [{"8": 2, "16": 1, "32": 1}, [], [SIDE, SIDE]]
    for path, row, mode, bits in ((png, wide, "I;16", 16), (tif, floats, "F", 32)):
        # the expected pixels: the 8-bit image built directly (100 MB), then fitted
        eight = Image.fromarray(np.ascontiguousarray(np.broadcast_to(_as_8bit(row),
                                                                     (SIDE, SIDE))))
        for channels, size, fit in _CASES:
            got_mode, got_bits, pixels = out[f"{path}|{channels}"]
            assert (got_mode, got_bits) == (mode, bits)
            np.testing.assert_array_equal(np.array(pixels, np.uint8),
                                          model_pixels(eight, channels, size, fit))
        np.testing.assert_array_equal(np.array(out[f"{path}|predict"]),
                                      model_pixels(eight, 1, (28, 28)))
        eight.close()


def _old_model_pixels(image: Image.Image, channels: int, size: tuple[int, int],
                      fit: str) -> np.ndarray:
    """The reader before issue 20, step by step (whole-image float64 map, then convert,
    crop, resize), as the reference for ordinary images."""
    from epdo.zoo.data.images import fit_box

    if image.mode in ("I", "I;16", "F"):
        image = Image.fromarray(_as_8bit(np.asarray(image)))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    image = image.convert("L" if channels == 1 else "RGB")
    box = fit_box(image.width, image.height, size, fit)
    if box != (0, 0, image.width, image.height):
        image = image.crop(box)
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _small_images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(5)
    h, w = 37, 53
    images = {
        "i16.png": Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)),
        "i32.tif": Image.fromarray(rng.integers(-70000, 140000, (h, w), dtype=np.int32)),
        "f.tif": Image.fromarray(np.r_[[[np.nan, np.inf, -np.inf, 2, -1] * 10 + [0.5] * 3],
                                       rng.normal(0.5, 0.6, (h - 1, w))].astype(np.float32)),
        "l.png": Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)),
        "rgb.png": Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8)),
        "tall.tif": Image.fromarray(rng.normal(0.5, 0.3, (200, 9)).astype(np.float32)),
    }
    images["la.png"] = images["rgba.png"].convert("LA")
    images["one.png"] = images["l.png"].convert("1")
    images["cmyk.jpg"] = images["rgb.png"].convert("CMYK")
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(folder / name)
    palette = images["rgb.png"].convert("P")
    palette.save(folder / "p.png", transparency=3)
    return [*paths, folder / "p.png"]


@pytest.mark.parametrize("fit", ["resize", "center_crop"])
def test_ordinary_images_give_the_pixels_they_gave_before(tmp_path: Path, fit: str) -> None:
    """Every mode, both fits, gray and colour models, smaller, equal and larger sizes: the
    tiled, copy-saving reader gives exactly the previous reader's pixels."""
    for path in _small_images(tmp_path):
        for channels in (1, 3):
            for size in ((16, 16), (20, 12), (37, 53), (60, 80)):
                pixels, _ = decode_image(path, channels, size, fit)
                with Image.open(path) as image:
                    image.load()
                    expected = _old_model_pixels(image, channels, size, fit)
                np.testing.assert_array_equal(pixels, expected, err_msg=f"{path.name} "
                                              f"{channels} {size}")


def test_model_pixels_leaves_the_callers_image_usable(tmp_path: Path) -> None:
    image = Image.fromarray(np.arange(60, dtype=np.uint16).reshape(6, 10) * 1000)
    first = model_pixels(image, 3, (4, 4))
    assert image.getpixel((1, 0)) == 1000  # not closed: only a handed-over image is
    np.testing.assert_array_equal(model_pixels(image, 3, (4, 4)), first)


def test_a_tiny_tile_maps_like_the_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of a few pixels (rows cut mid-way) give the whole-image map."""
    from epdo.zoo.data import images

    rng = np.random.default_rng(1)
    wide = Image.fromarray(rng.integers(0, 65536, (13, 29), dtype=np.uint16))
    whole = model_pixels(wide, 1, (13, 29))
    monkeypatch.setattr(images, "TILE_PIXELS", 7)
    np.testing.assert_array_equal(model_pixels(wide, 1, (13, 29)), whole)


# ------------------------------------------------------------------- FIFOs and links


def _classes(root: Path, names: tuple[str, ...] = ("ant", "bee"), n: int = 3) -> Path:
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("L", (10, 10), 40 * k + i).save(root / name / f"{i}.png")
    return root


def _unblock_later(fifo: Path, after: float = 20.0) -> None:
    """A regression that waits on the FIFO ends, late, instead of never."""

    def unblock() -> None:
        time.sleep(after)
        try:
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        except OSError:
            pass

    threading.Thread(target=unblock, daemon=True).start()


def test_fifo_and_link_to_fifo_in_a_class_folder_are_bad_files(tmp_path: Path) -> None:
    root = _classes(tmp_path / "d")
    os.mkfifo(tmp_path / "pipe")
    os.mkfifo(root / "ant" / "fifo.png")
    os.symlink(root / "ant" / "fifo.png", root / "bee" / "to-fifo.png")
    _unblock_later(root / "ant" / "fifo.png")
    start = time.perf_counter()
    result = cli("data", "info", f"folder:{root}", "--json")
    assert result.exit_code == 0, result.stderr
    bad = {b["file"]: b["error"] for b in json.loads(result.stdout)["bad"]}
    assert bad == {"ant/fifo.png": "not a regular file: a FIFO (named pipe)",
                   "bee/to-fifo.png": "not a regular file: a FIFO (named pipe)"}
    with pytest.raises(DataError, match="2 image files cannot be read: ant/fifo.png: not a "
                       "regular file: a FIFO"):
        load_folder(root, GRAY, workers=1)
    data = load_folder(root, GRAY, skip_bad=True, workers=0)
    assert sorted(p for p, _ in data.skipped) == ["ant/fifo.png", "bee/to-fifo.png"]
    assert len(data.train) + len(data.test) == 6
    assert time.perf_counter() - start < 15


def test_train_refuses_a_fifo_in_one_line(tmp_path: Path) -> None:
    root = _classes(tmp_path / "d")
    os.mkfifo(root / "bee" / "fifo.png")
    _unblock_later(root / "bee" / "fifo.png")
    start = time.perf_counter()
    result = cli("train", tiny_spec(tmp_path), "--dataset", f"folder:{root}",
                 "--out", tmp_path / "run", "--device", "cpu")
    refused(result, 2, str(root), "bee/fifo.png: not a regular file: a FIFO", "--skip-bad")
    assert time.perf_counter() - start < 15


def test_class_folder_linked_to_the_root_of_the_file_system_is_refused(tmp_path: Path) -> None:
    root = _classes(tmp_path / "d")
    os.symlink("/", root / "everything")
    start = time.perf_counter()
    result = cli("data", "info", f"folder:{root}")
    line = refused(result, 2, str(root), "class folder everything/ leads to /",
                   "outside the image folder")
    assert "\n" not in line and time.perf_counter() - start < 5
    result = cli("train", tiny_spec(tmp_path), "--dataset", f"folder:{root}",
                 "--out", tmp_path / "run", "--device", "cpu", "--skip-bad")
    refused(result, 2, "class folder everything/ leads to /")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("target", ["..", ".", "ant"])
def test_class_folder_linked_above_itself_or_to_another_class_is_refused(
        tmp_path: Path, target: str) -> None:
    root = _classes(tmp_path / "d")
    os.symlink(target, root / "cow")
    with pytest.raises(DataError) as caught:
        index_folder(root)
    text = str(caught.value)
    assert text.startswith(f"{root.resolve()}: class folder cow/ leads to ") and "\n" not in text
    words = {"..": "outside the image folder", ".": "which holds it", "ant": "class folder ant/"}
    assert words[target] in text


def test_split_folder_linked_outside_is_refused(tmp_path: Path) -> None:
    outside = _classes(tmp_path / "elsewhere")
    root = _classes(tmp_path / "d" / "train")
    os.symlink(outside, tmp_path / "d" / "test")
    with pytest.raises(DataError, match=r"class folder test/ant/ leads to .*elsewhere/ant "
                       r"\(through a symbolic link\), outside"):
        index_folder(root.parent)


def test_links_inside_the_folder_are_read(tmp_path: Path) -> None:
    root = _classes(tmp_path / "d")
    os.symlink(root / "ant", root / "cow")  # a second name for ant/: refused above
    os.remove(root / "cow")
    (root / "store").mkdir()
    os.rename(root / "bee", root / "store" / "bee")
    os.symlink(Path("store") / "bee", root / "bee")
    os.symlink(root / "ant" / "0.png", root / "ant" / "again.png")
    info = folder_info(root)
    assert info["bad"] == []
    assert {c["name"]: c["train"] + c["test"] for c in info["classes"]} == \
        {"ant": 4, "bee": 3, "store": 3}


def test_image_linked_outside_the_folder_is_a_bad_file(tmp_path: Path) -> None:
    root = _classes(tmp_path / "d")
    secret = tmp_path / "secret.png"
    Image.new("L", (10, 10), 99).save(secret)
    os.symlink(secret, root / "ant" / "leak.png")
    os.symlink("/etc/passwd", root / "bee" / "passwd.png")
    info = folder_info(root)
    bad = {b["file"]: b["error"] for b in info["bad"]}
    assert set(bad) == {"ant/leak.png", "bee/passwd.png"}
    assert bad["ant/leak.png"].startswith(f"a symbolic link to {secret}, outside the dataset "
                                          "folder")
    with pytest.raises(DataError, match="ant/leak.png: a symbolic link to"):
        load_folder(root, GRAY)
    data = load_folder(root, GRAY, skip_bad=True)
    assert sorted(p for p, _ in data.skipped) == ["ant/leak.png", "bee/passwd.png"]
    assert data.record()["skipped"][0][0] == "ant/leak.png"


def test_image_swapped_for_a_link_after_indexing_is_not_read(tmp_path: Path) -> None:
    """A streamed file replaced by a link out of the folder between two reads."""
    root = _classes(tmp_path / "d")
    data = load_folder(root, GRAY, budget=0)
    name = data.train.files[0]
    os.remove(root / name)
    os.symlink(tmp_path / "elsewhere.png", root / name)
    Image.new("L", (10, 10), 1).save(tmp_path / "elsewhere.png")
    with pytest.raises(DataError, match=f"{name}: a symbolic link to .*outside the dataset"):
        data.train.images.read(0)


# ------------------------------------------------------------------- Unicode names


def test_class_names_differing_only_in_normalisation_are_refused(tmp_path: Path) -> None:
    composed = unicodedata.normalize("NFC", "café")
    decomposed = unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    root = _classes(tmp_path / "d", (composed, decomposed, "tea"))
    result = cli("data", "info", f"folder:{root}")
    line = refused(result, 2, str(root), "different Unicode characters", "rename or merge")
    assert "'caf\\xe9'" in line and "'cafe\\u0301'" in line
    train = _classes(tmp_path / "s" / "train", (composed, "tea"))
    _classes(tmp_path / "s" / "test", (decomposed, "tea"))
    with pytest.raises(DataError, match=r"is train/'s café/ \('caf\\xe9'\) written with other "
                       "Unicode characters"):
        index_folder(train.parent)
