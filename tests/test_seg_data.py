"""Segmentation data (issue 22): ``seg:PATH`` folders of images and masks on real PNG and
JPEG files written with Pillow (pairing, classes, splits, bad pairs, fits, the run record,
the memory budget), the spec's ``seg:PATH``, and mask augmentation that follows the image's."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from epdo.zoo.data import IGNORE, DataError, MaskDataset
from epdo.zoo.data.folder_dataset import read_record
from epdo.zoo.data.folder_images import PixelSettings
from epdo.zoo.data.images import ImageError, decode_mask
from epdo.zoo.data.seg_dataset import load_seg_folder, load_seg_split, read_seg_record
from epdo.zoo.spec import AugmentSpec, load_spec
from epdo.zoo.spec.schema import TrainSpec
from epdo.zoo.training.augment import AugmentDraws
from epdo.zoo.training.config import with_overrides
from epdo.zoo.transforms import rotate_images

GRAY = PixelSettings(1, (8, 12))
REPO = Path(__file__).resolve().parents[1]


def _mask_array(seed: int, height: int, width: int, classes: int = 3) -> np.ndarray:
    """Vertical bands of classes, shifted by ``seed``, and one ignore pixel."""
    bands = (np.arange(width) * classes // width + seed) % classes
    mask = np.repeat(bands[None, :], height, axis=0).astype(np.uint8)
    mask[0, 0] = IGNORE
    return mask


def _pair(root: Path, name: str, seed: int = 0, size: tuple[int, int] = (8, 12),
          image_suffix: str = ".png", classes: int = 3) -> tuple[Path, Path]:
    """An RGB image and its L mask of ``size`` (height, width) below ``root``; the image's
    red channel is the class times 60 (so a fit can be followed)."""
    height, width = size
    mask = _mask_array(seed, height, width, classes)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.where(mask == IGNORE, 0, mask * 60)
    image[..., 1] = seed * 7 % 256
    image_path = root / "images" / f"{name}{image_suffix}"
    mask_path = root / "masks" / f"{name}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path)
    Image.fromarray(mask, mode="L").save(mask_path)
    return image_path, mask_path


def _folder(root: Path, n: int = 6, classes: list[str] | None = ("sky", "tree", "road")
            ) -> Path:
    for i in range(n):
        _pair(root, f"p{i:02d}", seed=i)
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def _raw_png(width: int, height: int, depth: int, colour: int, rows: list[bytes]) -> bytes:
    """A PNG written byte by byte (Pillow does not write 2-bit grayscale)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- loading


def test_a_folder_loads_as_uint8_images_and_masks_with_its_classes(tmp_path) -> None:
    root = _folder(tmp_path / "data")
    data = load_seg_folder(root, GRAY)
    assert data.classes == ["sky", "tree", "road"] and data.layout == "seeded split"
    assert data.in_memory and data.classes_from == "classes.txt"
    assert (len(data.train), len(data.test)) == (5, 1)
    assert data.train.images.shape == (5, 1, 8, 12) and data.train.images.dtype == torch.uint8
    assert data.train.labels.shape == (5, 8, 12) and data.train.labels.dtype == torch.uint8
    assert isinstance(data.train, MaskDataset) and data.train.num_classes == 3
    for ds, split in ((data.train, "train"), (data.test, "test")):
        for row, (image, mask) in enumerate(data.pairs[split]):
            assert ds.files[row] == image and mask == "masks/" + Path(image).stem + ".png"
            seed = int(Path(image).stem[1:])
            assert ds.labels[row].numpy().tolist() == _mask_array(seed, 8, 12).tolist()
    # mean and std of the training images (gray = luma of red = class * 60, green = seed * 7)
    pixels = data.train.images.double() / 255
    assert data.mean == pytest.approx([pixels.mean().item()])
    assert data.std == pytest.approx([pixels.std(unbiased=False).item()])
    image, mask = data.test[0]
    assert image.shape == (1, 8, 12) and mask.shape == (8, 12)


def test_pairs_pair_by_relative_path_and_name_whatever_the_image_suffix(tmp_path) -> None:
    root = tmp_path / "data"
    _pair(root, "a/one", seed=1, image_suffix=".jpg")
    _pair(root, "b/one", seed=2)
    _pair(root, "two", seed=0, image_suffix=".bmp")
    data = load_seg_folder(root, GRAY)
    pairs = sorted(data.pairs["train"] + data.pairs["test"])
    assert pairs == [("images/a/one.jpg", "masks/a/one.png"),
                     ("images/b/one.png", "masks/b/one.png"),
                     ("images/two.bmp", "masks/two.png")]


def test_without_classes_txt_the_largest_mask_value_names_the_classes(tmp_path) -> None:
    root = tmp_path / "data"
    for i in range(4):
        _pair(root, f"p{i}", seed=i, classes=5)
    data = load_seg_folder(root, GRAY)
    assert data.classes == [f"class_{k}" for k in range(5)]
    assert data.classes_from == "mask values" and data.record()["classes_from"] == "mask values"
    assert any("no classes.txt" in note for note in data.notes)


def test_only_class_zero_is_refused(tmp_path) -> None:
    root = tmp_path / "data"
    for i in range(3):
        _pair(root, f"p{i}", seed=0, classes=1)
    with pytest.raises(DataError, match="class 0 only"):
        load_seg_folder(root, GRAY)


def test_split_folders_are_the_splits_and_val_serves_as_test(tmp_path) -> None:
    root = tmp_path / "data"
    for i in range(3):
        _pair(root / "train", f"t{i}", seed=i)
    _pair(root / "val", "v0", seed=1)
    _pair(root / "extra", "x0", seed=2)
    (root / "classes.txt").write_text("a\nb\nc\n")
    data = load_seg_folder(root, GRAY, test_fraction=0.5, seed=3)
    assert data.layout == "split folders"
    assert [p for p, _ in data.pairs["train"]] == [f"train/images/t{i}.png" for i in range(3)]
    assert data.pairs["test"] == [("val/images/v0.png", "val/masks/v0.png")]
    assert any("extra/ is left out" in note for note in data.notes)


def test_the_seeded_split_depends_on_the_seed_only(tmp_path) -> None:
    root = _folder(tmp_path / "data", n=20)
    first = load_seg_folder(root, GRAY, seed=1, test_fraction=0.25)
    again = load_seg_folder(root, GRAY, seed=1, test_fraction=0.25)
    other = load_seg_folder(root, GRAY, seed=2, test_fraction=0.25)
    assert first.pairs == again.pairs and len(first.pairs["test"]) == 5
    assert first.pairs["test"] != other.pairs["test"]
    every = sorted(first.pairs["train"] + first.pairs["test"])
    assert every == sorted(other.pairs["train"] + other.pairs["test"]) and len(every) == 20


def test_the_record_reproduces_the_split_after_the_folder_changed(tmp_path) -> None:
    root = _folder(tmp_path / "data", n=10)
    data = load_seg_folder(root, GRAY, seed=4)
    record = data.record()
    assert record["format"] == "epdo-seg-data/1" and record["task"] == "segment"
    assert record["input"] == {"channels": 1, "size": [8, 12], "fit": "resize"}
    assert record["classes"] == ["sky", "tree", "road"] and record["ignore"] == IGNORE
    assert record["train"] == [list(p) for p in data.pairs["train"]]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(record))
    for i in range(10, 16):  # new pairs would change an indexed split
        _pair(root, f"p{i:02d}", seed=i)
    again = load_seg_folder(root, GRAY, seed=4, record=read_seg_record(path))
    assert again.pairs == data.pairs and again.classes == data.classes
    assert torch.equal(again.train.labels, data.train.labels)
    assert torch.equal(again.test.images, data.test.images)
    test = load_seg_split(root, GRAY, "test", record=read_seg_record(path))
    assert torch.equal(test.labels, data.test.labels) and test.files == data.test.files
    # a classification record is not a segmentation record, and the other way round
    with pytest.raises(DataError, match="format is not epdo-folder-data/1"):
        read_record(path)
    broken = dict(record, train=[["images/p00.png", 0]])
    path.write_text(json.dumps(broken))
    with pytest.raises(DataError, match="not \\[relative image path, relative mask path\\]"):
        read_seg_record(path)
    path.write_text(json.dumps(dict(record, train=[["../x.png", "masks/p00.png"]])))
    with pytest.raises(DataError, match="not \\[relative image path"):
        read_seg_record(path)


def test_a_recorded_pair_whose_mask_now_holds_another_class_is_refused(tmp_path) -> None:
    root = _folder(tmp_path / "data", n=4)
    record = load_seg_folder(root, GRAY).record()
    image, mask = record["train"][0]
    Image.fromarray(np.full((8, 12), 7, np.uint8), mode="L").save(root / mask)
    with pytest.raises(DataError) as caught:
        load_seg_folder(root, GRAY, record=record, skip_bad=True)
    text = str(caught.value)
    assert f"{image}: its mask {mask} holds class value 7, beyond the 3 classes of the " \
           "run's data.json" in text and "--skip-bad" not in text


# --------------------------------------------------------------------------- bad pairs


def _bad_folder(root: Path) -> dict[str, str]:
    """A folder with two good pairs and one bad pair of each kind; path -> words of its
    reason."""
    _folder(root, n=2)
    _pair(root, "lonely")
    (root / "masks" / "lonely.png").unlink()
    _pair(root, "orphan")
    (root / "images" / "orphan.png").unlink()
    _pair(root, "sizes")
    Image.fromarray(np.zeros((9, 12), np.uint8), mode="L").save(root / "masks" / "sizes.png")
    _pair(root, "beyond")
    Image.fromarray(np.full((8, 12), 3, np.uint8), mode="L").save(root / "masks" / "beyond.png")
    _pair(root, "garbage")
    (root / "images" / "garbage.png").write_bytes(b"not a png at all")
    _pair(root, "cut")
    data = (root / "masks" / "cut.png").read_bytes()
    (root / "masks" / "cut.png").write_bytes(data[: len(data) // 2])
    _pair(root, "colour")
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(root / "masks" / "colour.png")
    _pair(root, "wide")
    Image.fromarray(np.zeros((8, 12), np.uint16)).save(root / "masks" / "wide.png")
    _pair(root, "lossy")
    (root / "masks" / "lossy.png").unlink()
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(root / "masks" / "lossy.jpg")
    _pair(root, "twice")
    _pair(root, "twice", image_suffix=".jpg")
    return {
        "images/lonely.png": "no mask (masks/lonely.png is missing)",
        "masks/orphan.png": "no image named orphan in images/",
        "images/sizes.png": "its mask masks/sizes.png is 12x9 pixels, the image 12x8",
        "images/beyond.png": "holds class value 3, beyond the 3 classes of classes.txt",
        "images/garbage.png": "the image: not an image file Pillow can read",
        "images/cut.png": "its mask masks/cut.png: cannot decode the image",
        "images/colour.png": "the mask is colour (RGB); a mask is a grayscale (L) or palette",
        "images/wide.png": "the mask is 16-bit grayscale",
        "images/lossy.png": "its mask masks/lossy.jpg is not a PNG",
        "images/twice.jpg": "2 images are named twice (images/twice.jpg, images/twice.png)",
    }


def test_every_bad_pair_is_named_with_its_reason_in_one_refusal(tmp_path) -> None:
    root = tmp_path / "data"
    expected = _bad_folder(root)
    with pytest.raises(DataError) as caught:
        load_seg_folder(root, GRAY)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{root}: 10 image/mask pairs are bad: ")
    for path, words in expected.items():
        assert f"{path}: " in text and words in text, (path, text)
    assert "--skip-bad" in text


def test_skip_bad_trains_on_the_good_pairs_and_records_the_others(tmp_path) -> None:
    root = tmp_path / "data"
    expected = _bad_folder(root)
    data = load_seg_folder(root, GRAY, skip_bad=True, test_fraction=0.5)
    assert sorted(data.pairs["train"] + data.pairs["test"]) == [
        ("images/p00.png", "masks/p00.png"), ("images/p01.png", "masks/p01.png")]
    assert sorted(p for p, _ in data.skipped) == sorted(expected)
    assert sorted(p for p, _ in data.record()["skipped"]) == sorted(expected)
    assert any("10 bad image/mask pairs are left out (--skip-bad)" in n for n in data.notes)


def test_a_folder_whose_every_pair_is_bad_names_them(tmp_path) -> None:
    root = tmp_path / "data"
    _pair(root, "a")
    (root / "masks" / "a.png").rename(root / "masks" / "b.png")
    with pytest.raises(DataError, match="2 image/mask pairs are bad: images/a.png: no mask"):
        load_seg_folder(root, GRAY)


@pytest.mark.parametrize("layout, words", [
    ("nothing", "holds neither images/ and masks/"),
    ("no masks", "has no masks/ folder"),
    ("one pair", "the test split is empty"),
])
def test_layout_problems_are_one_line(tmp_path, layout, words) -> None:
    root = tmp_path / "data"
    root.mkdir()
    if layout == "no masks":
        (root / "images").mkdir()
    if layout == "one pair":
        _pair(root, "only")
    with pytest.raises(DataError, match=words):
        load_seg_folder(root, GRAY)


def test_a_masks_folder_linked_outside_is_refused(tmp_path) -> None:
    _folder(tmp_path / "elsewhere", n=2)
    root = tmp_path / "data"
    _folder(root, n=2)
    for path in (root / "masks").iterdir():
        path.unlink()
    (root / "masks").rmdir()
    (root / "masks").symlink_to(tmp_path / "elsewhere" / "masks")
    with pytest.raises(DataError, match="masks/ leads to .* outside the dataset folder"):
        load_seg_folder(root, GRAY)


@pytest.mark.parametrize("text, words", [
    ("sky\n\ntree\n", "2: is empty"),
    ("sky\ntree\nsky\n", "3: class name 'sky' is line 1's too"),
    ("sky\n", "names 1 class; a segmentation needs 2 to 255"),
    ("".join(f"c{i}\n" for i in range(256)), "names 256 classes"),
    ("sky\ntr\x01ee\n", "control character"),
])
def test_an_invalid_classes_txt_is_refused_by_line(tmp_path, text, words) -> None:
    root = _folder(tmp_path / "data", n=3, classes=None)
    (root / "classes.txt").write_text(text)
    with pytest.raises(DataError) as caught:
        load_seg_folder(root, GRAY)
    assert str(caught.value).startswith(str(root / "classes.txt")) and words in str(caught.value)


def test_classes_txt_strips_names_and_trailing_blank_lines(tmp_path) -> None:
    root = _folder(tmp_path / "data", n=3, classes=None)
    (root / "classes.txt").write_bytes("\ufeff sky \r\ntree\nroad\n\n\n".encode())
    assert load_seg_folder(root, GRAY).classes == ["sky", "tree", "road"]
    (root / "classes.txt").write_bytes(b"sky\n\xff\xfe\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_seg_folder(root, GRAY)


def test_over_the_memory_budget_is_refused_before_decoding(tmp_path) -> None:
    root = _folder(tmp_path / "data", n=6)
    need = 6 * (8 * 12 + 8 * 12)
    assert len(load_seg_folder(root, GRAY, budget=need).train) == 5
    with pytest.raises(DataError, match=r"6 image/mask pairs take .* over the memory budget"):
        load_seg_folder(root, GRAY, budget=need - 1)


# --------------------------------------------------------------------------- masks and fits


@pytest.mark.parametrize("fit", ["resize", "center_crop"])
def test_the_mask_gets_the_image_fit_with_nearest_sampling(tmp_path, fit) -> None:
    """A 48x72 pair with classes in vertical bands; the model takes 24x24. The image (class
    * 50 in red) and the mask agree wherever the mask is locally constant, and the centre
    crop cuts the outer bands away (classes 3 and 4 only at the sides)."""
    root = tmp_path / "data"
    bands = np.array([3] * 12 + [0] * 16 + [1] * 16 + [2] * 16 + [4] * 12, np.uint8)
    mask = np.repeat(bands[None], 48, axis=0)
    image = np.zeros((48, 72, 3), np.uint8)
    image[..., 0] = mask * 50
    for name in ("a", "b"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{name}.png")
    data = load_seg_folder(root, PixelSettings(3, (24, 24), fit))
    got_mask = data.train.labels[0].numpy()
    got_red = data.train.images[0, 0].numpy().astype(int)
    steady = np.ones_like(got_mask, dtype=bool)
    steady[:, 1:] &= got_mask[:, 1:] == got_mask[:, :-1]
    steady[:, :-1] &= got_mask[:, :-1] == got_mask[:, 1:]
    assert steady.sum() >= 24 * 12
    assert np.abs(got_red[steady] - 50 * got_mask[steady].astype(int)).max() <= 1
    seen = np.unique(got_mask).tolist()
    assert seen == ([0, 1, 2, 3, 4] if fit == "resize" else [0, 1, 2])
    assert (got_mask == got_mask[:1]).all()  # bands stay bands


def test_palette_masks_read_their_indices(tmp_path) -> None:
    mask = Image.new("P", (4, 2))
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [9, 9, 9] * 253)
    mask.putdata([0, 1, 2, 255, 2, 1, 0, 0])
    path = tmp_path / "m.png"
    mask.save(path)
    values, info = decode_mask(path, (2, 4))
    assert values.tolist() == [[0, 1, 2, 255], [2, 1, 0, 0]]
    assert (info.mode, info.values) == ("P", (0, 1, 2, 255))


def test_low_bit_grayscale_masks_read_their_stored_values(tmp_path) -> None:
    two_bit = tmp_path / "two.png"
    two_bit.write_bytes(_raw_png(4, 1, 2, 0, [bytes([0b00011011])]))
    assert decode_mask(two_bit, (1, 4))[0].tolist() == [[0, 1, 2, 3]]
    one_bit = tmp_path / "one.png"
    Image.fromarray(np.array([[0, 255, 255, 0]], np.uint8)).convert("1").save(one_bit)
    assert decode_mask(one_bit, (1, 4))[0].tolist() == [[0, 1, 1, 0]]


def test_masks_keep_the_image_pixel_limit(tmp_path, monkeypatch) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
    monkeypatch.setenv("EPDO_MAX_IMAGE_PIXELS", "99")
    with pytest.raises(ImageError, match="10x10 = 100 pixels, over the limit of 99"):
        decode_mask(path, (4, 4))
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, "JPEG")
    monkeypatch.delenv("EPDO_MAX_IMAGE_PIXELS")
    with pytest.raises(ImageError, match="accepted: PNG"):
        decode_mask(io.BytesIO(buffer.getvalue()), (4, 4))


def test_mask_dataset_checks_its_shapes() -> None:
    images = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError, match="differ in number or size"):
        MaskDataset("x", "train", images, torch.zeros((2, 4, 5), dtype=torch.uint8),
                    ["a", "b"], "here")
    with pytest.raises(ValueError, match="uint8"):
        MaskDataset("x", "train", images, torch.zeros((2, 4, 4)), ["a", "b"], "here")
    masks = torch.tensor([[[0, 1], [255, 1]]], dtype=torch.uint8)
    ds = MaskDataset("x", "train", torch.zeros((1, 1, 2, 2), dtype=torch.uint8), masks,
                     ["a", "b", "c"], "here")
    assert ds.class_pixels().tolist() == [1, 2, 0]


# --------------------------------------------------------------------------- the spec


def test_the_spec_reads_seg_path_like_folder_path() -> None:
    train = TrainSpec.model_validate({"dataset": "seg:/data/cells"})
    assert (train.dataset, train.data_dir) == ("seg", "/data/cells")
    assert TrainSpec.model_validate({"dataset": "seg-sample"}).dataset == "seg-sample"
    with pytest.raises(ValueError, match="seg:PATH needs a path"):
        TrainSpec.model_validate({"dataset": "seg:"})
    with pytest.raises(ValueError, match="name two folders"):
        TrainSpec.model_validate({"dataset": "seg:/a", "data_dir": "/b"})
    spec = load_spec(REPO / "specs" / "quickstart.yaml")
    moved = with_overrides(with_overrides(spec, dataset="seg:/x", data_dir="/x"),
                           dataset="seg:/y")
    assert (moved.train.dataset, moved.train.data_dir) == ("seg", "/y")


# --------------------------------------------------------------------------- augmentation


def _draws(**kwargs) -> AugmentDraws:
    return AugmentDraws(**kwargs)


def test_quarter_turns_and_flips_move_masks_exactly() -> None:
    masks = torch.randint(0, 6, (4, 7, 7), dtype=torch.uint8)
    draws = _draws(angles=torch.tensor([90.0, 180.0, 270.0, 0.0], dtype=torch.float64),
                   flips=torch.tensor([True, False, True, False]),
                   vflips=torch.tensor([False, True, True, False]))
    out = draws.apply_masks(masks, torch.arange(4))
    for b in range(4):
        want = torch.rot90(masks[b], b + 1 if b < 3 else 0, dims=(-2, -1))
        if draws.flips[b]:
            want = want.flip(-1)
        if draws.vflips[b]:
            want = want.flip(-2)
        assert torch.equal(out[b], want)
    assert out.dtype == torch.uint8


def test_rotated_in_corners_and_crop_padding_are_ignore() -> None:
    masks = torch.ones((1, 16, 16), dtype=torch.int64)
    out = _draws(angles=torch.tensor([45.0], dtype=torch.float64)).apply_masks(
        masks, torch.tensor([0]))
    assert out.dtype == torch.int64
    assert {out[0, 0, 0].item(), out[0, 0, -1].item(), out[0, -1, 0].item(),
            out[0, -1, -1].item()} == {IGNORE}
    assert (out[0, 5:11, 5:11] == 1).all() and set(out.unique().tolist()) == {1, IGNORE}
    padded = _draws(offsets=torch.tensor([[0, 4]]), padding=2).apply_masks(masks,
                                                                           torch.tensor([0]))
    assert (padded[0, :2] == IGNORE).all() and (padded[0, :, -2:] == IGNORE).all()
    assert (padded[0, 2:, :-2] == 1).all()


def test_nearest_rotation_only_moves_values() -> None:
    x = torch.randint(1, 9, (3, 1, 9, 9)).float()
    out = rotate_images(x, [30.0, 100.0, 200.0], mode="nearest")
    assert set(out.unique().tolist()) <= set(range(0, 9))
    with pytest.raises(ValueError, match="bilinear or nearest"):
        rotate_images(x, [1.0, 2.0, 3.0], mode="bicubic")


def test_augmented_masks_follow_the_augmented_images() -> None:
    """Every transform at once, drawn as training draws them: an image that is its mask
    / 10 keeps being so wherever the mask is locally constant, and is black where the mask
    says the pixel came from outside."""
    n, size = 8, 32
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = ((xx // 6 + 2 * (yy // 8)) % 7 + 1).to(torch.uint8).expand(n, -1, -1).clone()
    images = (masks.double() / 10).unsqueeze(1)
    spec = AugmentSpec(rotate=True, flip=True, vflip=True, crop_padding=3, resized_crop={})
    draws = AugmentDraws.draw(spec, n, torch.Generator().manual_seed(5))
    index = torch.arange(n)
    got_images = draws.apply(images, index)[:, 0] * 10
    got_masks = draws.apply_masks(masks, index)
    padded = torch.nn.functional.pad(got_masks.long(), (1, 1, 1, 1), value=-1)
    windows = padded.unfold(1, 3, 1).unfold(2, 3, 1).reshape(n, size, size, 9)
    steady = (windows == got_masks.long().unsqueeze(-1)).all(-1)
    labelled = steady & (got_masks != IGNORE)
    outside = steady & (got_masks == IGNORE)
    assert labelled.float().mean() > 0.3 and outside.any()
    agree = (got_images - got_masks.double()).abs() < 0.5
    assert agree[labelled].float().mean() > 0.99
    assert (got_images[outside].abs() < 0.5).float().mean() > 0.99
