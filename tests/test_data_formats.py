"""epdo.zoo.data parsers on tiny fixtures in the real formats, and every malformed case."""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_helpers import (
    TEST_AMAT,
    TRAIN_AMAT,
    amat_rows,
    amat_text,
    idx_bytes,
    write_amat_pair,
    write_cifar10,
    write_cifar100,
    write_idx_dataset,
    write_idx_split,
    write_mnist_rot_zip,
)

from epdo.zoo.data import (
    DATASETS,
    DataError,
    ImageDataset,
    dataset_classes,
    default_data_dir,
    load_dataset,
)
from epdo.zoo.data import mnist_rot as mnist_rot_module
from epdo.zoo.data.names import CIFAR10_CLASSES, DIGIT_CLASSES, FASHION_CLASSES


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPDO_DATA", raising=False)


def one_line(err: pytest.ExceptionInfo[DataError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# --- DataError ---------------------------------------------------------------------------

def test_data_error_format_and_pickling() -> None:
    err = DataError("bad value;\n fix it", "/x/f.amat", 7)
    assert str(err) == "/x/f.amat:7: bad value; fix it"
    assert (err.file, err.record) == ("/x/f.amat", 7)
    assert str(DataError("gone", "f.bin")) == "f.bin: gone"
    assert str(DataError("nothing")) == "nothing"
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.file, again.record, str(again)) == (err.file, err.record, str(err))


def test_unknown_name_and_split_list_the_allowed_ones() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "train")
    assert all(name in str(err.value) for name in DATASETS)
    with pytest.raises(DataError) as err:
        load_dataset("sample", "valid")
    assert "train" in str(err.value) and "test" in str(err.value)
    with pytest.raises(DataError):
        default_data_dir("nope")


def test_default_data_dir_follows_cache_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EPDO_CACHE_DIR", str(tmp_path))
    assert default_data_dir("mnist-rot") == tmp_path / "data" / "mnist-rot"
    assert not (tmp_path / "data").exists()  # never created by asking


def test_dataset_classes() -> None:
    assert dataset_classes("mnist-rot") == DIGIT_CLASSES
    assert dataset_classes("sample") == dataset_classes("sample-upright") == FASHION_CLASSES
    assert dataset_classes("cifar10") == CIFAR10_CLASSES
    assert len(dataset_classes("cifar100")) == 100
    for name in DATASETS:
        assert len(dataset_classes(name)) >= 10


# --- MNIST-rot .amat ---------------------------------------------------------------------

def test_amat_files_load_row_major(tmp_path: Path) -> None:
    data = write_amat_pair(tmp_path, train=5, test=3)
    train = load_dataset("mnist-rot", "train", data_dir=tmp_path)
    test = load_dataset("mnist-rot", "test", data_dir=tmp_path)
    assert isinstance(train, ImageDataset) and len(train) == 5 and len(test) == 3
    assert train.images.shape == (5, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64 and train.classes == DIGIT_CLASSES
    pixels, labels = data["train"]
    assert torch.allclose(train.images.reshape(5, 784), torch.from_numpy(pixels), atol=1e-6)
    assert train.labels.tolist() == labels.tolist()
    # value k of a row is pixel (row k // 28, column k % 28)
    assert train.images[0, 0, 2, 5] == pytest.approx(float(pixels[0, 2 * 28 + 5]), abs=1e-6)
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.source == str(tmp_path / TRAIN_AMAT) and train.angles is None


def test_amat_read_straight_from_the_zip(tmp_path: Path) -> None:
    data = write_mnist_rot_zip(tmp_path / "mnist_rotation_new.zip", prefix="mnist_rotation_new/")
    test = load_dataset("mnist-rot", "test", data_dir=tmp_path)
    assert test.images.shape == (3, 1, 28, 28)
    assert test.labels.tolist() == data["test"][1].tolist()
    assert test.source.endswith(f"mnist_rotation_new.zip/mnist_rotation_new/{TEST_AMAT}")


def test_amat_found_through_epdo_data(tmp_path: Path, monkeypatch) -> None:
    write_amat_pair(tmp_path / "shared")
    monkeypatch.setenv("EPDO_DATA", str(tmp_path / "shared"))
    assert len(load_dataset("mnist-rot", "train")) == 5


def test_amat_parse_is_cached(tmp_path: Path, monkeypatch) -> None:
    write_amat_pair(tmp_path)
    first = load_dataset("mnist-rot", "train", data_dir=tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(mnist_rot_module, "parse_amat", boom)
    again = load_dataset("mnist-rot", "train", data_dir=tmp_path)
    assert torch.equal(first.images, again.images)
    # a changed file is parsed again
    pixels, labels = amat_rows(2, 9)
    (tmp_path / TRAIN_AMAT).write_text(amat_text(pixels, labels))
    with pytest.raises(AssertionError, match="parsed again"):
        load_dataset("mnist-rot", "train", data_dir=tmp_path)


def _amat_with(tmp_path: Path, line: int, edit) -> Path:
    """The train file with ``edit(tokens)`` applied to the given (1-based) line."""
    pixels, labels = amat_rows(5, 1)
    lines = amat_text(pixels, labels).splitlines()
    tokens = lines[line - 1].split()
    lines[line - 1] = " ".join(edit(tokens))
    (tmp_path / TRAIN_AMAT).write_text("\n".join(lines) + "\n")
    return tmp_path / TRAIN_AMAT


@pytest.mark.parametrize(
    ("line", "edit", "words"),
    [
        (3, lambda t: t[1:], "784 values"),
        (4, lambda t: t + ["0.0"], "786 values"),
        (2, lambda t: t[:10] + ["abc"] + t[11:], "value 11 is not a number: 'abc'"),
        (5, lambda t: t[:-1] + ["1.200000e+01"], "label 12 is not an integer in 0..9"),
        (1, lambda t: t[:-1] + ["3.5"], "label 3.5"),
        (2, lambda t: t[:-1] + ["-1"], "label -1"),
        (4, lambda t: ["1.5"] + t[1:], "pixel value 1.5 (value 1) is outside [0, 1]"),
        (3, lambda t: t[:7] + ["nan"] + t[8:], "pixel value nan (value 8)"),
    ],
)
def test_malformed_amat_names_file_and_line(tmp_path: Path, line, edit, words) -> None:
    path = _amat_with(tmp_path, line, edit)
    with pytest.raises(DataError) as err:
        load_dataset("mnist-rot", "train", data_dir=tmp_path)
    text = one_line(err)
    assert err.value.file == str(path) and err.value.record == line
    assert text.startswith(f"{path}:{line}: ") and words in text, text
    assert "epdo data fetch mnist-rot" in text


def test_amat_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    pixels, labels = amat_rows(3, 1)
    good = amat_text(pixels, labels).splitlines()
    bad = " ".join(good[2].split()[:-1] + ["11"])
    (tmp_path / TRAIN_AMAT).write_text("\n".join([good[0], "", good[1], "   ", bad]) + "\n")
    with pytest.raises(DataError) as err:
        load_dataset("mnist-rot", "train", data_dir=tmp_path)
    assert err.value.record == 5


def test_amat_every_row_short_is_reported_at_line_1(tmp_path: Path) -> None:
    pixels, labels = amat_rows(3, 1)
    (tmp_path / TRAIN_AMAT).write_text(amat_text(pixels[:, :783], labels))
    with pytest.raises(DataError) as err:
        load_dataset("mnist-rot", "train", data_dir=tmp_path)
    assert err.value.record == 1 and "784 values in a row" in str(err.value)


def test_amat_empty_file(tmp_path: Path) -> None:
    (tmp_path / TRAIN_AMAT).write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_dataset("mnist-rot", "train", data_dir=tmp_path)


def test_malformed_member_of_zip_names_archive_member_and_line(tmp_path: Path) -> None:
    pixels, labels = amat_rows(4, 1)
    lines = amat_text(pixels, labels).splitlines()
    lines[2] = lines[2].replace("e+00", "e+0x", 1)
    archive = tmp_path / "mnist_rotation_new.zip"
    write_mnist_rot_zip(archive, texts={TEST_AMAT: "\n".join(lines) + "\n"})
    with pytest.raises(DataError) as err:
        load_dataset("mnist-rot", "test", data_dir=tmp_path)
    assert err.value.file == f"{archive}/{TEST_AMAT}" and err.value.record == 3
    assert "is not a number" in one_line(err)


def test_broken_zip_and_zip_without_the_member(tmp_path: Path) -> None:
    archive = tmp_path / "mnist_rotation_new.zip"
    archive.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError) as err:
        load_dataset("mnist-rot", "train", data_dir=tmp_path)
    assert err.value.file == str(archive) and "zip" in str(err.value)
    write_mnist_rot_zip(archive, members=(TRAIN_AMAT,))
    with pytest.raises(DataError, match=f"holds no {TEST_AMAT}"):
        load_dataset("mnist-rot", "test", data_dir=tmp_path)


def test_missing_mnist_rot_says_what_where_and_how(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("mnist-rot", "train", data_dir=empty)
    text = one_line(err)
    for words in (TRAIN_AMAT, TEST_AMAT, "mnist_rotation_new.zip", str(empty),
                  "epdo data fetch mnist-rot", "--data-dir", "EPDO_DATA",
                  "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"):
        assert words in text, words
    monkeypatch.setenv("EPDO_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("EPDO_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        load_dataset("mnist-rot", "test", data_dir=None)
    text = one_line(err)
    assert str(tmp_path / "shared") in text
    assert str(tmp_path / "cache" / "data" / "mnist-rot") in text


# --- IDX ---------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_idx_loads(tmp_path: Path, compress: bool) -> None:
    data = write_idx_dataset(tmp_path / "digits", train=30, test=12, compress=compress)
    train = load_dataset("idx", "train", data_dir=tmp_path / "digits")
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.float32
    expected = torch.from_numpy(data["train"][0]).float().unsqueeze(1) / 255
    assert torch.equal(train.images, expected)
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == data["train"][1].tolist()
    assert train.classes == DIGIT_CLASSES and train.source == str(tmp_path / "digits")
    assert len(load_dataset("idx", "test", data_dir=tmp_path / "digits")) == 12


def test_idx_class_names_follow_the_folder(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "Fashion-MNIST", train=10, test=10)
    assert load_dataset("idx", "test", data_dir=tmp_path / "Fashion-MNIST").classes \
        == FASHION_CLASSES
    assert dataset_classes("idx", tmp_path / "Fashion-MNIST") == FASHION_CLASSES


def test_idx_dotted_names_accepted(tmp_path: Path) -> None:
    images, labels = write_idx_split(tmp_path, "test", np.zeros((2, 28, 28), np.uint8),
                                     np.array([1, 2], np.uint8), compress=False)
    images.rename(tmp_path / "t10k-images.idx3-ubyte")
    labels.rename(tmp_path / "t10k-labels.idx1-ubyte")
    assert load_dataset("idx", "test", data_dir=tmp_path).labels.tolist() == [1, 2]


def test_idx_wrong_magic(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, train=5, test=5)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8), 2049)))  # a label file
    with pytest.raises(DataError) as err:
        load_dataset("idx", "test", data_dir=tmp_path)
    text = one_line(err)
    assert err.value.file == str(bad) and "wrong magic number 2049" in text
    assert "expected 2051" in text and "label file" in text


def test_idx_truncated_gz_names_the_record(tmp_path: Path) -> None:
    images = np.arange(20 * 784, dtype=np.int64).reshape(20, 28, 28).astype(np.uint8)
    path, _ = write_idx_split(tmp_path, "train", images, np.zeros(20, np.uint8), level=0)
    raw = path.read_bytes()
    # stored (level 0) deflate: 10-byte gzip header, 5-byte block header, then the data
    keep = 10 + 5 + 16 + 7 * 784 + 100  # header + 7 whole images + part of the 8th
    path.write_bytes(raw[:keep])
    with pytest.raises(DataError) as err:
        load_dataset("idx", "train", data_dir=tmp_path)
    text = one_line(err)
    assert err.value.file == str(path) and err.value.record == 8
    assert "truncated gzip" in text and "record 8 of 20" in text


def test_idx_corrupt_gz_and_short_file(tmp_path: Path) -> None:
    images = np.ones((6, 28, 28), np.uint8)
    path, _ = write_idx_split(tmp_path, "test", images, np.zeros(6, np.uint8))
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF  # the CRC
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt gzip data") as err:
        load_dataset("idx", "test", data_dir=tmp_path)
    assert err.value.file == str(path)
    path.unlink()
    short = tmp_path / "t10k-images-idx3-ubyte"
    short.write_bytes(idx_bytes(images, 2051)[: 16 + 3 * 784 + 5])
    with pytest.raises(DataError) as err:
        load_dataset("idx", "test", data_dir=tmp_path)
    assert err.value.file == str(short) and err.value.record == 4
    assert "too short" in str(err.value)


def test_idx_label_out_of_range_count_mismatch_and_extra_bytes(tmp_path: Path) -> None:
    images = np.zeros((6, 28, 28), np.uint8)
    _, labels = write_idx_split(tmp_path, "test", images, np.array([0, 1, 2, 3, 10, 5],
                                                                    np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset("idx", "test", data_dir=tmp_path)
    assert (err.value.file, err.value.record) == (str(labels), 5)
    assert "label 10 is out of range 0..9" in one_line(err)
    write_idx_split(tmp_path, "test", images, np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="5 labels, but .* holds 6 images"):
        load_dataset("idx", "test", data_dir=tmp_path)
    path, _ = write_idx_split(tmp_path, "test", images, np.zeros(6, np.uint8), compress=False)
    for gz in tmp_path.glob("*.gz"):
        gz.unlink()
    path.write_bytes(path.read_bytes() + b"\0\0\0")
    with pytest.raises(DataError, match="3 extra bytes"):
        load_dataset("idx", "test", data_dir=tmp_path)


def test_missing_idx_says_what_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("rotated-idx", "train", data_dir=tmp_path)
    text = one_line(err)
    for words in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", str(tmp_path),
                  "apt-get install dataset-fashion-mnist", "--data-dir"):
        assert words in text, words


# --- CIFAR -------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_loads(tmp_path: Path, protocol: int) -> None:
    folder = write_cifar10(tmp_path, per_batch=4, protocol=protocol)
    train = load_dataset("cifar10", "train", data_dir=tmp_path)
    test = load_dataset("cifar10", "test", data_dir=folder)  # the folder itself works too
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 3
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.classes == CIFAR10_CLASSES
    batch = pickle.loads((folder / "data_batch_2").read_bytes())
    row = batch[b"data"][1]
    # 1024 red values, then green, then blue, each a 32 x 32 image row by row
    expected = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(train.images[5], expected)
    assert train.labels[5].item() == batch[b"labels"][1]


def test_cifar100_fine_labels_and_meta_names(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    train = load_dataset("cifar100", "train", data_dir=tmp_path)
    assert train.images.shape == (7, 3, 32, 32)
    assert train.classes[3] == "class3" and len(train.classes) == 100
    assert int(train.labels.max()) < 100


def test_pickle_calling_os_system_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = write_cifar10(tmp_path)
    bad = folder / "data_batch_3"
    bad.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    text = one_line(err)
    assert err.value.file == str(bad) and "system" in text and "refused" in text
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",  # builtins.eval
        b"c_codecs\nencode\n(X\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13tR.",  # not latin-1
        b"cnumpy\nload\n(S'x'\ntR.",  # a numpy function outside the list
    ],
)
def test_other_forbidden_globals(tmp_path: Path, payload: bytes) -> None:
    folder = write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert err.value.file == str(folder / "test_batch")


def test_truncated_pickle_and_wrong_content(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="not a readable pickle") as err:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert err.value.file == str(folder / "test_batch")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8),
                                                      b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                                      b"labels": [0, 10]}, protocol=2))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert err.value.record == 2 and "label 10 is out of range" in str(err.value)


def test_missing_cifar(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", "test", data_dir=tmp_path)
    text = one_line(err)
    assert "cifar-100-python" in text and str(tmp_path) in text


def test_zip_member_stream_closes_its_file(tmp_path: Path) -> None:
    archive = tmp_path / "mnist_rotation_new.zip"
    write_mnist_rot_zip(archive)
    source = mnist_rot_module.AmatSource(archive, TRAIN_AMAT)
    with source.open() as stream:
        assert stream.read(5)
    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None
