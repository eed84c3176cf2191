"""The embedded segmentation sample ``seg-sample`` (issue 22): what it holds, how it was
made (the masks follow the canvases exactly; the garments are the Fashion-MNIST sample's),
and that ``scripts/make_seg_sample.py --check`` rebuilds it byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from epdo.zoo.data import DATASETS, MaskDataset, dataset_classes, dataset_info, load_dataset
from epdo.zoo.data.names import FASHION_CLASSES
from epdo.zoo.data.sample import SAMPLE_FILE, sample_arrays
from epdo.zoo.data.seg_sample import SEG_CLASSES, SEG_SAMPLE_FILE

REPO = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("make_seg_sample",
                                                  REPO / "scripts" / "make_seg_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("split, count", [("train", 800), ("test", 200)])
def test_the_sample_loads_as_a_mask_dataset(split, count) -> None:
    ds = load_dataset("seg-sample", split)
    assert isinstance(ds, MaskDataset) and ds.name == "seg-sample" and len(ds) == count
    assert ds.images.shape == (count, 1, 64, 64) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (count, 64, 64) and ds.labels.dtype == torch.uint8
    assert ds.classes == ["background", *FASHION_CLASSES] == SEG_CLASSES
    pixels = ds.class_pixels()
    assert pixels.sum() == ds.labels.numel() and (pixels > 0).all()  # every class occurs
    assert 0.7 < pixels[0] / pixels.sum() < 0.95  # mostly background


def test_the_sample_is_registered() -> None:
    assert "seg-sample" in DATASETS and dataset_classes("seg-sample") == SEG_CLASSES
    info = dataset_info("seg-sample")
    assert info["found"] and info["sizes"] == {"train": 800, "test": 200}
    assert info["classes"] == 11 and info["searched"] == []


def test_each_mask_is_its_canvas_garments() -> None:
    """Background exactly where the canvas is black; a garment's pixels are above the
    threshold; each canvas's mask classes are those of its recorded garments, which come
    from the right split of the Fashion-MNIST sample, each used once."""
    with np.load(SEG_SAMPLE_FILE, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    for split in ("train", "test"):
        images, masks = arrays[f"{split}_images"], arrays[f"{split}_masks"]
        assert ((masks == 0) == (images == 0)).all()
        assert images[masks > 0].min() >= 26  # rint(255 * 0.1) is 26 for values above 0.1
        sources = arrays[f"{split}_sources"]
        _, labels = sample_arrays(split)
        used = sources[sources >= 0]
        assert len(np.unique(used)) == len(used) and used.max() < len(labels)
        counts = (sources >= 0).sum(axis=1)
        assert set(counts.tolist()) == {1, 2, 3}
        assert ((sources >= 0) == (np.arange(3) < counts[:, None])).all()  # filled in order
        for c in range(0, len(masks), 37):
            present = set(np.unique(masks[c]).tolist()) - {0}
            assert present <= {int(labels[s]) + 1 for s in sources[c] if s >= 0}
        angles = arrays[f"{split}_angles"][sources >= 0]
        assert angles.min() >= 0 and angles.max() < 360 and angles.std() > 80


def test_provenance_and_documentation_match_the_file() -> None:
    with np.load(SEG_SAMPLE_FILE, allow_pickle=False) as npz:
        provenance = json.loads(str(npz["provenance"][()]))
    assert provenance["source"]["sha256"] == hashlib.sha256(SAMPLE_FILE.read_bytes()).hexdigest()
    assert provenance["seed"] == 0 and provenance["counts"] == {"train": 800, "test": 200}
    assert provenance["threshold"] == 0.1 and "Fashion-MNIST" in provenance["dataset"]
    data = SEG_SAMPLE_FILE.read_bytes()
    doc = SEG_SAMPLE_FILE.with_name("SEG_SAMPLE.md").read_text()
    assert hashlib.sha256(data).hexdigest() in doc
    assert f"{len(data):,} bytes" in doc and len(data) < 1_500_000
    assert re.search(r"SHA-256\s+`" + provenance["source"]["sha256"], doc)


def test_the_builder_rebuilds_the_file_byte_for_byte(tmp_path, capsys) -> None:
    builder = _builder()
    assert builder.main(["--check"]) == 0
    assert "identical" in capsys.readouterr().out
    other = tmp_path / "other.npz"
    assert builder.main(["--out", str(other), "--seed", "1", "--train", "4", "--test", "2"]) == 0
    assert builder.main(["--out", str(other), "--check"]) == 1  # another seed: other bytes


def test_the_upright_sample_lays_the_same_garments_unrotated() -> None:
    from epdo.zoo.data import load_dataset
    from epdo.zoo.data.sample import sample_arrays
    from epdo.zoo.data.seg_sample import PATCH, SEG_SAMPLE_FILE, THRESHOLD, read_archive

    turned, upright = load_dataset("seg-sample", "test"), load_dataset("seg-sample-upright",
                                                                       "test")
    assert upright.name == "seg-sample-upright" and upright.classes == turned.classes
    assert upright.images.shape == turned.images.shape and upright.labels.dtype == torch.uint8
    arrays = read_archive(SEG_SAMPLE_FILE, "")
    sources, places = arrays["test_sources"], arrays["test_places"]
    garments, labels = sample_arrays("test")
    pad = (PATCH - 28) // 2
    for c in range(20):  # each canvas's last garment lies on top, unrotated, at its place
        k = int((sources[c] >= 0).sum()) - 1
        top, left = (int(v) + pad for v in places[c, k])
        source = garments[sources[c, k]]
        cover = source / 255.0 > THRESHOLD
        window = upright.images[c, 0, top:top + 28, left:left + 28].numpy()
        np.testing.assert_array_equal(window[cover], source[cover])
        mask = upright.labels[c, top:top + 28, left:left + 28].numpy()
        assert (mask[cover] == labels[sources[c, k]] + 1).all()
    # the same garments: the same classes, in about the same amounts (rotation resamples)
    for k in range(1, len(turned.classes)):
        a, b = int((turned.labels == k).sum()), int((upright.labels == k).sum())
        assert (a == 0) == (b == 0)
