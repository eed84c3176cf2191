"""The folder dataset (issue 12): layout, seeded split, bad files, streaming, the run record
and `epdo data info folder:PATH`, on real image files written with Pillow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo.data import DataError, folder_dataset
from epdo.zoo.data.folder import index_folder, stratified_split
from epdo.zoo.data.folder_dataset import (
    DEFAULT_MEMORY_BUDGET,
    MEMORY_ENV,
    load_folder,
    load_folder_split,
    memory_budget,
    parse_bytes,
    read_record,
)
from epdo.zoo.data.folder_images import ImageFiles, PixelSettings, decode_files
from epdo.zoo.data.images import decode_image
from epdo.zoo.data.statistics import channel_statistics

GRAY = PixelSettings(1, (8, 8))
RGB = PixelSettings(3, (6, 10), "center_crop")


def _png(path: Path, seed: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> Path:
    """A distinct small image (``size`` is width x height) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _classes(root: Path, counts: dict[str, int], *, start: int = 0, mode: str = "RGB",
             suffix: str = ".png") -> list[Path]:
    paths = []
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            size = (12 + i % 3, 10 + (i * 7) % 5)  # a few sizes: resized on reading
            paths.append(_png(root / name / f"img{i:02d}{suffix}", start + 100 * k + i, size,
                              mode))
    return paths


def _split_folders(root: Path, test: str = "test") -> Path:
    _classes(root / "train", {"ant": 4, "bee": 3})
    _classes(root / test, {"ant": 2, "bee": 1}, start=50)
    return root


def _one_line_naming(exc: DataError, folder: Path) -> str:
    text = str(exc)
    assert "\n" not in text and text.count(str(folder)) >= 1, text
    return text


def _cut(path: Path) -> Path:
    """Truncate an image file to half its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ------------------------------------------------------------------- layout


@pytest.mark.parametrize("test_folder", ["test", "val"])
def test_split_folders(tmp_path, test_folder) -> None:
    root = _split_folders(tmp_path / "d", test_folder)
    layout = index_folder(root)
    assert layout.layout == "split folders"
    assert layout.classes == ["ant", "bee"]
    assert layout.counts("train") == [4, 3] and layout.counts("test") == [2, 1]
    assert all(p.startswith("train/") for p, _ in layout.splits["train"])
    assert all(p.startswith(f"{test_folder}/") for p, _ in layout.splits["test"])
    assert ("train/bee/img00.png", 1) in layout.splits["train"]
    assert layout.notes == [] and layout.outside == []


def test_test_folder_wins_over_val_and_val_is_named(tmp_path) -> None:
    root = _split_folders(tmp_path / "d")
    _classes(root / "val", {"ant": 1, "bee": 1}, start=70)
    layout = index_folder(root)
    assert all(p.startswith("test/") for p, _ in layout.splits["test"])
    assert any("val/" in n and "left out" in n for n in layout.notes), layout.notes


def test_test_class_not_in_train(tmp_path) -> None:
    root = _split_folders(tmp_path / "d")
    _classes(root / "test", {"wasp": 1}, start=90)
    with pytest.raises(DataError) as caught:
        index_folder(root)
    text = _one_line_naming(caught.value, root / "test")
    assert "wasp" in text and "not in train/" in text


def test_no_class_folders(tmp_path) -> None:
    root = tmp_path / "d"
    _png(root / "loose.png", 1)
    with pytest.raises(DataError, match="no class folders") as caught:
        index_folder(root)
    _one_line_naming(caught.value, root)
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        index_folder(tmp_path / "e")


def test_single_class(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"only": 5})
    with pytest.raises(DataError, match="single class folder") as caught:
        index_folder(root)
    assert "only/" in _one_line_naming(caught.value, root)


def test_empty_class_folder(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 3, "bee": 3})
    (root / "cat").mkdir()
    with pytest.raises(DataError, match="cat/ holds no images") as caught:
        index_folder(root)
    _one_line_naming(caught.value, root)
    (root / "cat" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="cat/ holds no images"):
        index_folder(root)


def test_missing_folder_and_a_file_for_a_folder(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist") as caught:
        index_folder(tmp_path / "nope")
    _one_line_naming(caught.value, tmp_path / "nope")
    file = _png(tmp_path / "f.png", 1)
    with pytest.raises(DataError, match="is not a folder"):
        index_folder(file)


def test_images_outside_class_folders_are_named_in_notes(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 3, "bee": 3})
    _png(root / "stray.png", 7)
    layout = index_folder(root)
    assert layout.outside == ["stray.png"]
    assert all("stray" not in p for split in layout.splits.values() for p, _ in split)
    assert any("stray.png" in n and "not in a class folder" in n for n in layout.notes)

    split = _split_folders(tmp_path / "s")
    _png(split / "train" / "loose.jpg", 8)
    _png(split / "top.png", 9)
    layout = index_folder(split)
    assert sorted(layout.outside) == ["top.png", "train/loose.jpg"]
    assert any("2 image files are not in a class folder" in n for n in layout.notes)


def test_non_image_files_are_counted(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 3, "bee": 3})
    (root / "ant" / "labels.csv").write_text("a,b\n")
    (root / "bee" / "notes.txt").write_text("x")
    layout = index_folder(root)
    assert layout.other_files == 2
    assert any(n.startswith("2 files in class folders are not an image") for n in layout.notes)
    assert sum(layout.counts("train")) + sum(layout.counts("test")) == 6


def test_hidden_files_and_folders_are_skipped(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 3, "bee": 3})
    _png(root / "ant" / ".hidden.png", 1)
    _png(root / "ant" / ".thumbs" / "t.png", 2)
    _png(root / ".ipynb_checkpoints" / "x.png", 3)  # not a class
    (root / "bee" / ".DS_Store").write_bytes(b"\x00\x01")
    layout = index_folder(root)
    assert layout.classes == ["ant", "bee"]
    files = [p for split in layout.splits.values() for p, _ in split]
    assert len(files) == 6 and not any("/." in p or p.startswith(".") for p in files)
    assert layout.other_files == 0 and layout.notes == []


def test_nested_subfolders_of_a_class_are_read(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 2, "bee": 2})
    _png(root / "ant" / "day1" / "a.PNG", 4)
    _png(root / "ant" / "day1" / "deep" / "b.tif", 5)
    layout = index_folder(root, test_fraction=0.5)
    everything = dict(layout.splits["train"] + layout.splits["test"])
    assert everything["ant/day1/a.PNG"] == 0 and everything["ant/day1/deep/b.tif"] == 0
    assert layout.counts("train")[0] + layout.counts("test")[0] == 4


# ------------------------------------------------------------------- the seeded split


def _names(counts: list[int]) -> list[tuple[str, int]]:
    return [(f"c{label}/f{i:03d}.png", label) for label, n in enumerate(counts) for i in range(n)]


def test_seeded_split_is_reproducible_and_depends_on_the_seed() -> None:
    files = _names([20, 30])
    a = stratified_split(files, 2, 0.25, seed=3)
    assert a == stratified_split(list(files), 2, 0.25, seed=3)
    assert a != stratified_split(files, 2, 0.25, seed=4)
    assert sorted(a["train"] + a["test"]) == sorted(files)
    assert not set(a["train"]) & set(a["test"])
    assert a["test"] == sorted(a["test"]) and a["train"] == sorted(a["train"])


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_seeded_split_is_stratified(fraction) -> None:
    counts = [1, 2, 3, 5, 10, 17]
    split = stratified_split(_names(counts), len(counts), fraction, seed=0)
    for label, n in enumerate(counts):
        n_test = sum(1 for _, y in split["test"] if y == label)
        n_train = sum(1 for _, y in split["train"] if y == label)
        want = 0 if n == 1 else min(max(round(n * fraction), 1), n - 1)
        assert (n_test, n_train) == (want, n - want), (label, n)


def test_seeded_split_ignores_the_order_files_are_given_in() -> None:
    files = _names([9, 14])
    shuffled = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    assert stratified_split(files, 2, 0.3, 7) == stratified_split(shuffled, 2, 0.3, 7)


def test_seeded_split_independent_of_creation_order(tmp_path) -> None:
    names = [f"{c}/{i:02d}.png" for c in ("ant", "bee") for i in range(8)]
    for root, order in ((tmp_path / "one", names), (tmp_path / "two", names[::-1])):
        for k, name in enumerate(order):
            _png(root / name, k, (8, 8), "L")
    one = index_folder(tmp_path / "one", seed=5, test_fraction=0.25)
    two = index_folder(tmp_path / "two", seed=5, test_fraction=0.25)
    assert one.layout == "seeded split" and one.splits == two.splits
    assert one.counts("test") == [2, 2]
    assert index_folder(tmp_path / "one", seed=6, test_fraction=0.25).splits != one.splits


def test_a_class_of_one_image_trains(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 5, "bee": 1})
    layout = index_folder(root)
    assert ("bee/img00.png", 1) in layout.splits["train"]
    assert layout.counts("test") == [1, 0]
    assert any("bee has no test images" in n for n in layout.notes)


def test_test_fraction_out_of_range(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 3, "bee": 3})
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(DataError, match="strictly between 0 and 1"):
            index_folder(root, test_fraction=fraction)


def test_every_class_of_one_image_leaves_no_test_split(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 1, "bee": 1})
    with pytest.raises(DataError, match="test split is empty") as caught:
        index_folder(root)
    _one_line_naming(caught.value, root)


# ------------------------------------------------------------------- decoding, bad files


def test_load_folder_in_memory_matches_the_reader(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 4, "bee": 4})
    data = load_folder(root, RGB, seed=1, test_fraction=0.25)
    assert data.in_memory and data.classes == ["ant", "bee"] and data.layout == "seeded split"
    for ds in (data.train, data.test):
        assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape[1:]) == (3, 6, 10)
        for i, (path, label) in enumerate(zip(ds.files, ds.labels.tolist(), strict=True)):
            pixels, _ = decode_image(root / path, 3, (6, 10), "center_crop")
            assert torch.equal(ds.images[i], torch.from_numpy(pixels))
            assert path.startswith(data.classes[label] + "/")
    assert len(data.train) == 6 and len(data.test) == 2
    assert data.info["train"]["channels"] == {3: 6}
    assert data.info["train"]["bits"] == {8: 6}


def _bad_folder(root: Path) -> tuple[Path, list[str]]:
    _split_folders(root)
    _cut(root / "train" / "ant" / "img01.png")
    (root / "test" / "bee" / "junk.png").write_bytes(b"not an image at all")
    return root, ["train/ant/img01.png", "test/bee/junk.png"]


def test_bad_files_of_both_splits_refused_in_one_line(tmp_path) -> None:
    root, bad = _bad_folder(tmp_path / "d")
    with pytest.raises(DataError) as caught:
        load_folder(root, GRAY)
    text = _one_line_naming(caught.value, root)
    assert text.count("cannot be read") == 1 and "2 image files cannot be read" in text
    assert all(b in text for b in bad) and "--skip-bad" in text


def test_a_split_of_bad_files_only_lists_them(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root / "train", {"ant": 2, "bee": 2})
    for name in ("ant", "bee"):
        (root / "test" / name).mkdir(parents=True)
        (root / "test" / name / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="2 image files cannot be read") as caught:
        load_folder(root, GRAY)
    assert "test/ant/x.png" in str(caught.value) and "test/bee/x.png" in str(caught.value)
    with pytest.raises(DataError, match="no image of the test split can be read"):
        load_folder(root, GRAY, skip_bad=True)


def test_skip_bad_leaves_them_out_and_records_them(tmp_path) -> None:
    root, bad = _bad_folder(tmp_path / "d")
    data = load_folder(root, GRAY, skip_bad=True)
    assert [p for p, _ in data.skipped] == bad
    assert all(why for _, why in data.skipped)
    files = data.train.files + data.test.files
    assert not set(bad) & set(files) and len(files) == 7 + 3 + 1 - 2  # junk.png added
    record = data.record()
    assert [p for p, _ in record["skipped"]] == bad
    assert any("left out (--skip-bad)" in n for n in data.notes)
    assert json.loads(json.dumps(record)) == record


def test_recorded_run_with_a_file_that_now_fails_is_refused(tmp_path) -> None:
    root = _split_folders(tmp_path / "d")
    record = load_folder(root, GRAY).record()
    _cut(root / "test" / "ant" / "img01.png")
    with pytest.raises(DataError, match="test/ant/img01.png"):
        load_folder(root, GRAY, record=record, skip_bad=True)
    with pytest.raises(DataError, match="test/ant/img01.png"):
        load_folder_split(root, GRAY, "test", record=record)


def test_mixed_channels_and_gray_to_rgb_notes(tmp_path) -> None:
    root = tmp_path / "d"
    _classes(root, {"ant": 3, "bee": 3}, mode="L")
    data = load_folder(root, RGB)
    assert any("copied to R, G and B" in n for n in data.notes)
    _png(root / "bee" / "colour.png", 9, mode="RGB")
    data = load_folder(root, GRAY)
    assert any("mixed channel counts: 6 grayscale and 1 colour" in n for n in data.notes)


# ------------------------------------------------------------------- streaming


@pytest.fixture()
def rgb_folder(tmp_path) -> Path:
    root = tmp_path / "d"
    _classes(root, {"ant": 6, "bee": 5, "cat": 5})
    _png(root / "ant" / "gray.png", 77, (9, 14), "L")
    return root


def test_streamed_splits_equal_the_in_memory_ones(rgb_folder) -> None:
    memory = load_folder(rgb_folder, RGB, seed=2)
    streamed = load_folder(rgb_folder, RGB, seed=2, budget=RGB.image_bytes * 2)  # < each split
    assert memory.in_memory and not streamed.in_memory
    assert any("exceed the memory budget" in n for n in streamed.notes)
    for mem, disk in ((memory.train, streamed.train), (memory.test, streamed.test)):
        assert isinstance(disk.images, ImageFiles)
        assert disk.files == mem.files and torch.equal(disk.labels, mem.labels)
        assert disk.images.shape == mem.images.shape and disk.images.dtype == torch.uint8
        every = disk.images[torch.arange(len(disk))]
        assert every.dtype == torch.uint8 and torch.equal(every, mem.images)
        assert torch.equal(disk.images[1], mem.images[1])
        assert torch.equal(disk.images[torch.tensor([2, 0])], mem.images[[2, 0]])
    assert streamed.mean == memory.mean and streamed.std == memory.std
    assert streamed.record() == memory.record()


def test_train_in_memory_and_test_streamed(rgb_folder) -> None:
    memory = load_folder(rgb_folder, RGB)
    budget = len(memory.train) * RGB.image_bytes  # room for train only
    data = load_folder(rgb_folder, RGB, budget=budget)
    assert isinstance(data.train.images, torch.Tensor)
    assert isinstance(data.test.images, ImageFiles)
    assert any(n.startswith("test images") for n in data.notes)


def test_statistics_equal_channel_statistics(rgb_folder) -> None:
    memory = load_folder(rgb_folder, RGB)
    mean, std = channel_statistics(memory.train.images)
    assert np.allclose(memory.mean, mean, rtol=0, atol=1e-9)
    assert np.allclose(memory.std, std, rtol=0, atol=1e-9)
    streamed = load_folder(rgb_folder, RGB, budget=0)
    mean_s, std_s = channel_statistics(streamed.train.images)  # indexing the files
    assert np.allclose(mean_s, mean, rtol=0, atol=1e-9)
    assert np.allclose(std_s, std, rtol=0, atol=1e-9)
    # by hand: over every pixel of every training image, x = pixels / 255
    x = memory.train.images.to(torch.float64).div(255).transpose(0, 1).reshape(3, -1)
    assert np.allclose(mean, x.mean(dim=1).tolist(), atol=1e-12)
    assert np.allclose(std, x.std(dim=1, unbiased=False).tolist(), atol=1e-12)


def test_decode_files_in_workers_equals_in_process(rgb_folder, tmp_path) -> None:
    files = sorted(p.relative_to(rgb_folder).as_posix() for p in rgb_folder.rglob("*.png"))
    (rgb_folder / "bee" / "bad.png").write_bytes(b"junk")
    files.insert(3, "bee/bad.png")
    here = decode_files(rgb_folder, files, RGB, keep=True, workers=0)
    there = decode_files(rgb_folder, files, RGB, keep=True, workers=2)
    assert torch.equal(here.images, there.images) and len(here.images) == len(files) - 1
    assert here.good == there.good and 3 not in here.good
    assert [p for p, _ in here.bad] == [p for p, _ in there.bad] == ["bee/bad.png"]
    assert np.array_equal(here.sums, there.sums) and here.pixels == there.pixels
    assert here.channel_counts == there.channel_counts == {3: len(files) - 2, 1: 1}
    assert here.sizes == there.sizes == (9, 10, 14, 14)
    checked = decode_files(rgb_folder, files, RGB, keep=False)
    assert checked.images is None and checked.good == here.good
    assert checked.statistics() == here.statistics()


def test_image_files_name_a_file_that_no_longer_decodes(rgb_folder) -> None:
    data = load_folder(rgb_folder, RGB, budget=0)
    files = data.train.images
    _cut(rgb_folder / files.files[0])
    with pytest.raises(DataError) as caught:
        files[torch.tensor([0])]
    assert files.files[0] in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("text", "value"), [
    ("800M", 800 * 2**20), ("4G", 4 * 2**30), ("0", 0), ("512", 512), ("1.5K", 1536),
    ("4GiB", 4 * 2**30), ("2gb", 2 * 2**30), (" 1T ", 2**40),
])
def test_parse_bytes(text, value) -> None:
    assert parse_bytes(text, "--memory-budget") == value
    assert memory_budget(text) == value


@pytest.mark.parametrize("text", ["lots", "-1", "", "4X", "1e9", "4 G B"])
def test_parse_bytes_refuses_text(text) -> None:
    with pytest.raises(DataError, match="--memory-budget must be a number of bytes"):
        memory_budget(text)


def test_memory_budget_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    assert memory_budget() == DEFAULT_MEMORY_BUDGET == 2 * 2**30
    monkeypatch.setenv(MEMORY_ENV, "300M")
    assert memory_budget() == 300 * 2**20
    assert memory_budget("1G") == 2**30  # the option wins
    assert memory_budget(1234) == 1234
    with pytest.raises(DataError):
        memory_budget(-1)
    monkeypatch.setenv(MEMORY_ENV, "plenty")
    with pytest.raises(DataError, match=r"\$EPDO_DATA_MEMORY"):
        memory_budget()


# ------------------------------------------------------------------- the run record


def _write_record(tmp_path: Path, record: object) -> Path:
    path = tmp_path / "run" / "data.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_record_round_trip_gives_the_same_files(rgb_folder, tmp_path) -> None:
    data = load_folder(rgb_folder, RGB, seed=4, test_fraction=0.3)
    path = _write_record(tmp_path, data.record())
    record = read_record(path)
    assert record == data.record()
    assert record["input"] == {"channels": 3, "size": [6, 10], "fit": "center_crop"}
    _png(rgb_folder / "cat" / "added-later.png", 99)  # the folder changes after the run
    for split, ds in (("test", data.test), ("train", data.train)):
        again = load_folder_split(rgb_folder, RGB, split, record=record)
        assert again.files == ds.files and torch.equal(again.labels, ds.labels)
        assert torch.equal(again.images, ds.images)
    resumed = load_folder(rgb_folder, RGB, record=record)
    assert resumed.test.files == data.test.files and resumed.train.files == data.train.files
    assert load_folder_split(rgb_folder, RGB, "test", record=record, limit=2).files == \
        data.test.files[:2]


def _good_record() -> dict:
    return {"format": "epdo-folder-data/1", "root": "/data/cells", "layout": "seeded split",
            "classes": ["a", "b"], "input": {"channels": 1, "size": [8, 8], "fit": "resize"},
            "seed": 0, "test_fraction": 0.2, "mean": [0.5], "std": [0.2],
            "train": [["a/1.png", 0], ["b/2.png", 1]], "test": [["a/3.png", 0]],
            "skipped": []}


def _broken(change):
    def make() -> dict:
        record = _good_record()
        change(record)
        return record
    return make


RECORD_CASES = {
    "dot dot": (_broken(lambda r: r["train"].append(["../secret.png", 0])), "not [relative"),
    "dot dot inside": (_broken(lambda r: r["test"].append(["a/../../x.png", 0])), "test holds"),
    "absolute": (_broken(lambda r: r["test"].append(["/etc/passwd", 1])), "test holds"),
    "backslash": (_broken(lambda r: r["test"].append(["..\\x.png", 1])), "test holds"),
    "label too big": (_broken(lambda r: r["train"].append(["b/9.png", 2])), "train holds"),
    "negative label": (_broken(lambda r: r["train"].append(["b/9.png", -1])), "train holds"),
    "label as text": (_broken(lambda r: r["train"].append(["b/9.png", "1"])), "train holds"),
    "label as bool": (_broken(lambda r: r["train"].append(["b/9.png", True])), "train holds"),
    "row not a pair": (_broken(lambda r: r["train"].append(["b/9.png"])), "train holds"),
    "empty test": (_broken(lambda r: r.update(test=[])), "test must be a non-empty list"),
    "one class": (_broken(lambda r: r.update(classes=["a"])), "two or more names"),
    "classes not text": (_broken(lambda r: r.update(classes=["a", 2])), "two or more names"),
    "root not text": (_broken(lambda r: r.update(root=3)), "root and layout must be text"),
    "skipped wrong": (_broken(lambda r: r.update(skipped=[["a/x.png"]])), "skipped must be"),
    "format": (_broken(lambda r: r.update(format="epdo-folder-data/9")), "its format is not"),
    "not an object": (lambda: [1, 2], "its format is not"),
}


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_read_record_refuses(tmp_path, case) -> None:
    make, words = RECORD_CASES[case]
    path = _write_record(tmp_path, make())
    with pytest.raises(DataError) as caught:
        read_record(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and words in text and "\n" not in text, text


def test_read_record_refuses_bad_json_and_big_files(tmp_path, monkeypatch) -> None:
    good = _write_record(tmp_path, _good_record())
    assert read_record(good) == _good_record()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "epdo-folder-data/1", ')
    with pytest.raises(DataError, match="cannot read the dataset record") as caught:
        read_record(bad)
    assert str(caught.value).startswith(str(bad)) and "\n" not in str(caught.value)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="cannot read the dataset record"):
        read_record(binary)
    monkeypatch.setattr(folder_dataset, "MAX_RECORD_BYTES", 100)
    with pytest.raises(DataError, match="more than a dataset record can be") as caught:
        read_record(good)
    assert str(caught.value).startswith(str(good))
    with pytest.raises(DataError, match="cannot read the dataset record"):
        read_record(tmp_path / "missing.json")


def test_record_of_a_moved_folder(tmp_path) -> None:
    record = _good_record()
    with pytest.raises(DataError, match="--data-dir"):
        load_folder_split(tmp_path / "moved", GRAY, "test", record=record)


# ------------------------------------------------------------------- epdo data info folder:PATH

runner = CliRunner()


def _info_folder(root: Path) -> Path:
    _classes(root, {"ant": 4, "bee": 3}, mode="L")
    _png(root / "bee" / "colour.jpg", 5, (20, 16))
    _cut(_png(root / "ant" / "broken.png", 6))
    (root / "ant" / "notes.txt").write_text("x")
    return root


def test_data_info_lists_classes_and_bad_files(tmp_path) -> None:
    root = _info_folder(tmp_path / "d")
    result = runner.invoke(app, ["data", "info", f"folder:{root}"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ant" in out and "bee" in out and "seeded split" in out
    assert "1 file cannot be read" in out and "ant/broken.png" in out
    assert "Traceback" not in result.output


def test_data_info_json(tmp_path) -> None:
    root = _info_folder(tmp_path / "d")
    result = runner.invoke(app, ["data", "info", f"folder:{root}", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["layout"] == "seeded split" and info["root"] == str(root.resolve())
    assert [c["name"] for c in info["classes"]] == ["ant", "bee"]
    assert [c["train"] + c["test"] for c in info["classes"]] == [5, 4]
    assert info["images"]["train"] + info["images"]["test"] == 9
    assert [b["file"] for b in info["bad"]] == ["ant/broken.png"] and info["bad"][0]["error"]
    assert info["channels"] == {"grayscale": 7, "colour": 1}
    assert info["bits"] == {"8": 8}
    assert info["largest"] == [20, 16] and info["smallest"][0] == 12
    assert info["split"] == {"seed": 0, "test_fraction": 0.2}
    assert any("not an image" in n for n in info["notes"])


@pytest.mark.parametrize("case", ["single class", "missing"])
def test_data_info_refuses_in_one_line(tmp_path, case) -> None:
    root = tmp_path / "d"
    if case == "single class":
        _classes(root, {"only": 3})
    result = runner.invoke(app, ["data", "info", f"folder:{root}"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert str(root) in lines[0]
    assert ("single class" in lines[0]) if case == "single class" else "does not exist" in lines[0]
