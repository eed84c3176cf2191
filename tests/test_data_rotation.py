"""Seeded rotations: rotate_images, the rotated-idx benchmark and the embedded sample."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_helpers import write_idx_dataset

from epdo.zoo.data import DataError, load_dataset, rotate_images, uniform_angles
from epdo.zoo.data import rotated_idx as rotated_idx_module
from epdo.zoo.data.idx import load_idx_arrays
from epdo.zoo.data.locations import DEBIAN_FASHION_MNIST
from epdo.zoo.data.names import FASHION_CLASSES
from epdo.zoo.data.rotate import rotate_unit_images
from epdo.zoo.data.sample import SAMPLE_FILE, sample_arrays, sample_provenance
from epdo.zoo.transforms import rotate_image


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPDO_DATA", raising=False)


@pytest.fixture
def idx_dir(tmp_path: Path) -> tuple[Path, dict]:
    data = write_idx_dataset(tmp_path / "blobs", train=40, test=15)
    return tmp_path / "blobs", data


# --- rotate_images -----------------------------------------------------------------------

def test_rotate_images_matches_rotate_image_per_image() -> None:
    x = torch.rand(6, 2, 17, 17)
    degrees = [0.0, 90.0, -270.0, 33.3, 181.0, 359.9]
    batched = rotate_images(x, degrees)
    for i, d in enumerate(degrees):
        single = rotate_image(x[i:i + 1], d)
        assert torch.allclose(batched[i:i + 1], single, atol=1e-6), d
    assert torch.equal(batched[1], torch.rot90(x[1], 1, dims=(-2, -1)))  # exact quarter turn
    assert torch.equal(batched[0], x[0])


def test_rotate_images_is_counter_clockwise() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 8] = 1.0  # a dot right of the centre
    y = rotate_images(x, [90.0])
    assert y[0, 0, 0, 4] == 1.0  # now above the centre (row 0 is the top)


def test_rotate_images_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        rotate_images(torch.zeros(2, 1, 4, 4), [1.0])
    with pytest.raises(ValueError):
        rotate_images(torch.zeros(2, 4, 4), [1.0, 2.0])


def test_uniform_angles_streams() -> None:
    a = uniform_angles(20_000, 0, "x", "train")
    assert a.dtype == np.float64 and a.min() >= 0.0 and a.max() < 360.0
    counts = np.histogram(a, bins=4, range=(0, 360))[0]
    assert np.all(np.abs(counts - 5000) < 300)
    assert np.array_equal(a, uniform_angles(20_000, 0, "x", "train"))
    assert not np.allclose(a[:100], uniform_angles(100, 0, "x", "test"))
    assert not np.allclose(a[:100], uniform_angles(100, 1, "x", "train"))
    with pytest.raises(DataError):
        uniform_angles(3, -1, "x")


# --- rotated-idx -------------------------------------------------------------------------

def test_rotated_idx_is_deterministic_per_seed(idx_dir) -> None:
    folder, _ = idx_dir
    a = load_dataset("rotated-idx", "train", data_dir=folder, seed=0)
    b = load_dataset("rotated-idx", "train", data_dir=folder, seed=0)
    c = load_dataset("rotated-idx", "train", data_dir=folder, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.angles, b.angles)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.angles, c.angles)
    test = load_dataset("rotated-idx", "test", data_dir=folder, seed=0)
    assert not torch.allclose(test.angles, a.angles[: len(test)])  # separate streams
    assert a.images.dtype == torch.float32 and a.labels.dtype == torch.int64
    assert 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0


def _mass_and_offset(image: torch.Tensor) -> tuple[float, float, float]:
    """Total mass and the centroid's offset from the centre (x right, y up) of (H, W)."""
    size = image.shape[-1]
    centre = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size) - centre, torch.arange(size) - centre,
                            indexing="ij")
    mass = float(image.sum())
    return mass, float((image * xs).sum()) / mass, -float((image * ys).sum()) / mass


def test_rotated_idx_rotates_each_image_by_its_stored_angle(idx_dir) -> None:
    folder, data = idx_dir
    test = load_dataset("rotated-idx", "test", data_dir=folder, seed=3)
    images, labels = data["test"]
    assert len(test) == len(images) == 15  # the whole test split
    assert test.labels.tolist() == labels.tolist()
    assert test.angles.min() >= 0 and test.angles.max() < 360
    upright = torch.from_numpy(images).unsqueeze(1).float() / 255
    assert torch.allclose(test.images, rotate_images(upright, test.angles).clamp(0, 1))
    # each fixture is a centred blob plus a bright spot right of the centre: the mass stays,
    # and the centroid's offset turns counter-clockwise by the stored angle
    for i in range(len(test)):
        mass0, x0, y0 = _mass_and_offset(upright[i, 0])
        mass1, x1, y1 = _mass_and_offset(test.images[i, 0])
        assert mass1 == pytest.approx(mass0, rel=0.02)
        assert math.hypot(x1, y1) == pytest.approx(math.hypot(x0, y0), rel=0.05)
        turned = math.degrees(math.atan2(y1, x1) - math.atan2(y0, x0)) % 360
        gap = abs((turned - float(test.angles[i]) + 180) % 360 - 180)
        assert gap < 3, (i, turned, float(test.angles[i]))


def test_rotated_idx_draws_without_replacement(idx_dir, monkeypatch) -> None:
    folder, data = idx_dir
    monkeypatch.setattr(rotated_idx_module, "ROTATED_TRAIN_SIZE", 10)
    train = load_dataset("rotated-idx", "train", data_dir=folder, seed=5)
    chosen = rotated_idx_module.rotated_idx_selection(40, 5)
    assert len(train) == 10 and len(np.unique(chosen)) == 10 and np.all(np.diff(chosen) > 0)
    images, labels = data["train"]
    assert train.labels.tolist() == labels[chosen].tolist()
    expected = rotate_unit_images(torch.from_numpy(images[chosen]).unsqueeze(1),
                                  train.angles.numpy())
    assert torch.equal(train.images, expected)
    monkeypatch.setattr(rotated_idx_module, "ROTATED_TRAIN_SIZE", 12_000)
    assert len(load_dataset("rotated-idx", "train", data_dir=folder)) == 40  # all there are


# --- the embedded sample -----------------------------------------------------------------

def test_sample_file_is_small_and_documented() -> None:
    assert SAMPLE_FILE.stat().st_size <= 2_000_000
    assert SAMPLE_FILE.with_name("SAMPLE.md").is_file()
    provenance = sample_provenance()
    assert provenance["seed"] == 0 and len(provenance["files"]) == 4
    assert "Zalando" in provenance["dataset"] and "MIT" in provenance["dataset"]


@pytest.mark.parametrize("split, per_class", [("train", 240), ("test", 100)])
def test_sample_loads_fast_balanced_upright_and_rotated(split: str, per_class: int) -> None:
    start = time.perf_counter()
    rotated = load_dataset("sample", split)
    upright = load_dataset("sample-upright", split)
    assert time.perf_counter() - start < 2.0
    for ds in (rotated, upright):
        assert ds.images.shape == (10 * per_class, 1, 28, 28)
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
        assert ds.classes == FASHION_CLASSES and ds.source == "embedded sample"
        assert torch.bincount(ds.labels, minlength=10).tolist() == [per_class] * 10
    assert torch.equal(rotated.labels, upright.labels) and upright.angles is None
    assert (rotated.images - upright.images).abs().mean() > 0.05
    assert torch.equal(rotated.images,
                       rotate_images(upright.images, rotated.angles).clamp(0, 1))
    assert torch.equal(rotated.images, load_dataset("sample", split, seed=0).images)
    assert not torch.equal(rotated.images, load_dataset("sample", split, seed=1).images)
    assert float(upright.images.mean()) > 0.15  # real clothes, not blank


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_debian_fashion_mnist_found_by_itself_and_is_the_sample_source() -> None:
    test = load_dataset("idx", "test")
    assert len(test) == 10_000 and test.classes == FASHION_CLASSES
    images, labels, _ = load_idx_arrays("test", None)
    sample_images, sample_labels = sample_arrays("test")
    index = np.load(SAMPLE_FILE)["test_index"]
    assert np.array_equal(images[index], sample_images)
    assert np.array_equal(labels[index], sample_labels)
