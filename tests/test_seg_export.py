"""Segmentation artifacts: exported to ONNX, TorchScript and .pt2 with (N, K, H, W) maps and a
dynamic batch, verified per pixel and for quarter-turn map equivariance (a C1 CNN's figure
reported, a broken map refused), recorded as a segmentation (metadata, card, info rows),
predicted into mask PNGs at each image's own size, and served over the Open Inference
Protocol to Triton's own client."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_checks import cli, refused
from PIL import Image
from test_dense_head import unet

from epdo.exporters import export as export_mod
from epdo.exporters.artifact import ArtifactError, ServingError, validate_metadata
from epdo.exporters.export import VerificationError, export_model
from epdo.exporters.formats import format_named
from epdo.exporters.info import artifact_rows
from epdo.exporters.loading import read_metadata
from epdo.exporters.masks import NOT_PREDICTED, mask_at_size, output_paths, palette
from epdo.exporters.runtime import load_classifier
from epdo.zoo import build_model, load_spec
from epdo.zoo.checkpoint import save_checkpoint

CLASSES = ["background", "disc", "bar"]
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}
LEGACY = Path(__file__).parent / "fixtures" / "legacy_model.onnx"


def cnn_twin() -> dict:
    """The tiny U-Net with plain 5x5 convolutions, group C1: not equivariant."""
    spec = unet(16, "C1")
    for layer in spec["layers"]:
        if layer["op"] == "pdo_conv":
            layer.update(op="conv", channels=4, kernel=5)
            del layer["fields"]
    spec["defaults"] = {}
    return spec


def perturbed(spec: dict, seed: int = 0) -> tuple[torch.nn.Module, object]:
    """The model of ``spec`` with weights moved off their initial values (maps that differ
    from pixel to pixel), in eval mode."""
    torch.manual_seed(seed)
    s = load_spec(spec)
    model = build_model(s).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model, s


@dataclass
class Exported:
    model: torch.nn.Module
    spec: object
    paths: dict[str, Path]
    reports: dict[str, object]
    folder: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    folder = tmp_path_factory.mktemp("seg-export")
    model, spec = perturbed(unet(hidden=[4]))
    paths, reports = {}, {}
    for fmt, suffix in SUFFIXES.items():
        paths[fmt] = folder / f"seg{suffix}"
        reports[fmt] = export_model((model, spec), fmt, paths[fmt], classes=CLASSES)
    return Exported(model, spec, paths, reports, folder)


def _maps(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", list(SUFFIXES))
def test_every_format_exports_a_verified_map(exported: Exported, fmt: str) -> None:
    report = exported.reports[fmt]
    atol = format_named(fmt).atol
    assert report.passed and report.task == "segment"
    assert report.agreement >= 0.999 and report.min_agreement == 0.999
    assert report.max_abs <= atol and report.rotation_atol == atol
    assert report.rotation_max_abs < 1e-5 and report.rotation_max_rel < 1e-5
    assert {c.batch for c in report.checks} == {1, 7}
    meta = read_metadata(exported.paths[fmt])
    assert meta["epdo.task"] == "segment"
    assert meta["epdo.output"] == {"name": "logits", "kind": "map", "shape": [3, 16, 16]}
    ver = meta["epdo.verification"]
    assert ver["min_agreement"] == 0.999 and ver["rotation_atol"] == atol
    assert ver["rotation_max_abs"] == report.rotation_max_abs and ver["passed"] is True
    clf = load_classifier(exported.paths[fmt], "cpu")
    assert clf.segments and clf.task == "segment" and clf.output_shape == (3, 16, 16)
    assert clf.classes == CLASSES
    rng = np.random.default_rng(1)
    for batch in (1, 7):  # one artifact, any batch
        x = rng.random((batch, 1, 16, 16), dtype=np.float32)
        maps, ref = clf.predict(x), _maps(exported.model, x)
        assert maps.shape == (batch, 3, 16, 16)
        np.testing.assert_allclose(maps, ref, atol=atol, rtol=0)
        assert (clf.predict_masks(x) == ref.argmax(1)).mean() >= 0.999
        np.testing.assert_allclose(clf.predict_proba(x).sum(axis=1), 1.0, atol=1e-9)


def test_the_onnx_graph_declares_a_map_with_a_dynamic_batch(exported: Exported) -> None:
    import onnx

    graph = onnx.load(str(exported.paths["onnx"])).graph
    (out,) = graph.output
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert out.name == "logits" and isinstance(dims[0], str) and dims[1:] == [3, 16, 16]


def test_the_cnn_twin_is_reported_not_equivariant(tmp_path: Path) -> None:
    """C1 has no quarter turn: the map's figure is measured and stored, not required."""
    model, spec = perturbed(cnn_twin())
    report = export_model((model, spec), "onnx", tmp_path / "cnn.onnx", classes=CLASSES)
    assert report.passed and report.rotation_atol is None
    assert report.rotation_max_abs > 1e-2 and report.rotation_max_rel > 1e-2
    ver = read_metadata(tmp_path / "cnn.onnx")["epdo.verification"]
    assert ver["rotation_max_abs"] == report.rotation_max_abs and ver["rotation_atol"] is None
    assert "not required" in report.rotation_text()


def test_a_map_that_does_not_turn_with_the_image_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact whose maps carry a horizontal ramp of 0.8 atol: every value within atol of
    PyTorch's, but the map of a turned image differs from the turned map by up to 1.6 atol."""
    model, spec = perturbed(unet(hidden=[4]))
    real_runner = export_mod._runner
    ramp = torch.linspace(-0.8e-4, 0.8e-4, 16, dtype=torch.float32)

    def skewed(path: Path, fmt: object):
        run = real_runner(path, fmt)
        return lambda x: run(x) + ramp

    monkeypatch.setattr(export_mod, "_runner", skewed)
    with pytest.raises(VerificationError, match="quarter-turn map equivariance") as info:
        export_model((model, spec), "onnx", tmp_path / "m.onnx", classes=CLASSES)
    report = info.value.report
    assert report.max_abs <= 1e-4 < report.rotation_max_abs and report.rotation_max_abs > 1.5e-4
    assert not report.passed and list(tmp_path.iterdir()) == []


def task_rows(path: Path, meta: dict) -> dict[str, str]:
    return dict(artifact_rows(path, meta))


def test_the_metadata_says_segment_and_its_relations_are_checked(exported: Exported) -> None:
    meta = read_metadata(exported.paths["onnx"])
    assert task_rows(exported.paths["onnx"], meta)["task"] == "segment"
    assert "(batch, 3, 16, 16)" in task_rows(exported.paths["onnx"], meta)["output"]
    legacy = read_metadata(LEGACY)
    assert "epdo.task" not in legacy
    assert task_rows(LEGACY, legacy)["task"].startswith("classify (written before")
    bad = [({"epdo.output": {**meta["epdo.output"], "kind": "vector"}}, "does not fit"),
           ({"epdo.output": {**meta["epdo.output"], "shape": [4, 16, 16]}},
            "3 class names but the model returns 4 logits"),
           ({"epdo.output": {**meta["epdo.output"], "shape": [3, 8, 8]}}, "input's size"),
           ({"epdo.task": "classify"}, "does not fit"),
           ({"epdo.task": "detect"}, "epdo.task must be")]
    for change, needle in bad:
        with pytest.raises(ArtifactError, match=needle):
            validate_metadata({**meta, **change}, "x.onnx")


def test_the_model_card_says_segmentation(exported: Exported) -> None:
    card = Path(exported.reports["onnx"].card).read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["pipeline_tag"] == "image-segmentation"
    assert front["metrics"] == ["mean_iou", "accuracy"]
    assert "task `segment`" in card and "`(batch, 3, 16, 16)` class scores" in card
    assert "pixel agreement" in card and "equivariance of the map" in card
    assert "--out masks/" in card


def test_the_runtime_keeps_classifier_and_segmentation_methods_apart(
        exported: Exported) -> None:
    seg = load_classifier(exported.paths["pt2"], "cpu")
    x = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(ServingError, match="use predict_masks"):
        seg.predict_top_k(x)
    legacy = load_classifier(LEGACY, "cpu")
    assert not legacy.segments and legacy.task == "classify"
    with pytest.raises(ServingError, match="use predict_top_k"):
        legacy.predict_masks(np.zeros((1, *legacy.input_shape), np.float32))


# --------------------------------------------------------------------------- predict


def _image(path: Path, height: int, width: int, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torch's nearest-exact resampling, as the expected mask."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="nearest-exact")[0, 0].numpy()


def test_predict_writes_masks_at_each_images_own_size(exported: Exported,
                                                       tmp_path: Path) -> None:
    images = [_image(tmp_path / "wide.png", 20, 24, 0), _image(tmp_path / "tall.png", 30, 10, 1)]
    out = tmp_path / "masks"
    result = cli("predict", exported.paths["onnx"], *images, "--out", out, "--overlay",
                 "--json", "--provider", "cpu")
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    clf = load_classifier(exported.paths["onnx"], "cpu")
    colours = palette()
    for image, record in zip(images, records, strict=True):
        own = np.asarray(Image.open(image))
        assert record["size"] == list(own.shape)
        assert record["mask"] == str(out / f"{image.stem}.png")
        with Image.open(record["mask"]) as written:
            assert written.mode == "P" and written.size == own.shape[::-1]
            assert written.getpalette()[:768] == colours.reshape(-1).tolist()
            assert json.loads(written.info["classes"]) == CLASSES
            mask = np.asarray(written)
        x = clf.preprocess(image)[None]
        model_mask = _maps(exported.model, x).argmax(1)[0]  # the PyTorch model's, at 16x16
        assert np.array_equal(mask, _nearest(model_mask, own.shape))
        fractions = [c["fraction"] for c in record["classes"]]
        assert [c["class"] for c in record["classes"]] == CLASSES
        assert sum(fractions) == pytest.approx(1.0)
        assert fractions == pytest.approx(np.bincount(mask.ravel(), minlength=3) / mask.size)
        overlay = np.asarray(Image.open(record["overlay"]).convert("RGB"), np.float64)
        want = np.rint(0.5 * own[..., None] + 0.5 * colours[mask])
        assert overlay.shape == (*own.shape, 3) and np.array_equal(overlay, want)
    assert sorted(p.name for p in out.iterdir()) == ["tall.png", "tall_overlay.png",
                                                     "wide.png", "wide_overlay.png"]
    summary = cli("predict", exported.paths["onnx"], images[0], "--provider", "cpu",
                  env={"COLUMNS": "200"})
    assert summary.exit_code == 0 and "wide.png" in summary.stdout
    assert "24x20" in summary.stdout and "%" in summary.stdout


def test_inputs_that_would_write_the_same_mask_are_refused(exported: Exported,
                                                           tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _image(tmp_path / "a" / "x.png", 16, 16, 0)
    two = _image(tmp_path / "b" / "x.PNG", 16, 16, 1)
    out = tmp_path / "out"
    refused(cli("predict", exported.paths["onnx"], one, two, "--out", out), 2,
            "would both write", "x.png")
    overlay = _image(tmp_path / "a" / "x_overlay.jpg", 16, 16, 2)
    refused(cli("predict", exported.paths["onnx"], one, overlay, "--out", out, "--overlay"),
            2, "would both write", "x_overlay.png")
    assert not out.exists()
    assert len(output_paths([one, overlay], out)) == 2  # without overlays they do not meet
    refused(cli("predict", exported.paths["onnx"], tmp_path / "a" / "x.png", "--out",
                tmp_path / "a"), 2, "would replace the input")


def test_out_and_overlay_are_refused_where_they_do_not_apply(exported: Exported,
                                                             tmp_path: Path) -> None:
    image = _image(tmp_path / "x.png", 12, 12, 0)
    refused(cli("predict", LEGACY, image, "--out", tmp_path / "out"), 2, "--out",
            "is a classifier")
    refused(cli("predict", exported.paths["onnx"], image, "--overlay"), 2, "--overlay",
            "--out DIR")
    (tmp_path / "file").write_text("")
    refused(cli("predict", exported.paths["onnx"], image, "--out", tmp_path / "file"), 2,
            "not a folder")
    assert not (tmp_path / "out").exists()


def test_a_bad_input_costs_only_itself(exported: Exported, tmp_path: Path) -> None:
    good = _image(tmp_path / "good.png", 16, 16, 0)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = cli("predict", exported.paths["onnx"], good, tmp_path / "bad.png", "--out", out,
                 "--json")
    assert result.exit_code == 1 and "bad.png" in result.stderr
    records = json.loads(result.stdout)
    assert records[0]["mask"] and "error" in records[1] and records[1]["mask"] is None
    assert [p.name for p in out.iterdir()] == ["good.png"]


def test_a_center_crop_mask_leaves_what_the_model_did_not_see_unpredicted() -> None:
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4)
    full = mask_at_size(mask, (4, 8), "center_crop")  # the model saw the middle 4x4
    assert np.array_equal(full[:, 2:6], mask)
    assert (full[:, :2] == NOT_PREDICTED).all() and (full[:, 6:] == NOT_PREDICTED).all()
    assert np.array_equal(mask_at_size(mask, (8, 8), "resize"), mask.repeat(2, 0).repeat(2, 1))


# --------------------------------------------------------------------------- export CLI


def test_export_of_a_seg_checkpoint_prints_its_figures_and_writes_triton(
        tmp_path: Path) -> None:
    from google.protobuf import text_format
    from test_serve_http import _model_config_schema

    model, spec = perturbed(unet(hidden=[4]))
    checkpoint = tmp_path / "run" / "checkpoint-best.pt"
    save_checkpoint(checkpoint, model=model, spec=spec, epoch=1, extra={"classes": CLASSES})
    result = cli("export", checkpoint, "-o", tmp_path / "seg.onnx", "--triton",
                 tmp_path / "repo", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "pixel agreement" in result.stdout and "equivariance of the map" in result.stdout
    config = (tmp_path / "repo" / "seg_tiny" / "config.pbtxt").read_text()
    parsed = text_format.Parse(config, _model_config_schema()())
    assert [(o.name, list(o.dims), o.label_filename) for o in parsed.output] == [
        ("logits", [3, 16, 16], "")]
    assert [list(i.dims) for i in parsed.input] == [[1, 16, 16]]
    report = json.loads(cli("export", checkpoint, "-o", tmp_path / "seg.pt2", "-f", "pt2",
                            "--json").stdout)
    assert report["task"] == "segment" and report["min_agreement"] == 0.999
    assert report["rotation_max_abs"] < 1e-5 and report["passed"]


# --------------------------------------------------------------------------- serve


def test_serve_answers_maps_to_the_triton_client(exported: Exported) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    from test_serve_http import _serve, _stop
    from tritonclient.utils import InferenceServerException

    clf = load_classifier(exported.paths["onnx"], "cpu")
    x = np.random.default_rng(3).random((3, 1, 16, 16), dtype=np.float32)
    want = clf.predict(x)
    server = _serve(exported.paths["onnx"])
    try:
        client = server.client()
        meta = client.get_model_metadata("m")
        assert meta["outputs"] == [{"name": "logits", "datatype": "FP32",
                                    "shape": [-1, 3, 16, 16]}]
        for binary in (True, False):
            tensor = httpclient.InferInput("images", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            out = httpclient.InferRequestedOutput("logits", binary_data=binary)
            got = client.infer("m", [tensor], outputs=[out]).as_numpy("logits")
            assert got.shape == (3, 3, 16, 16)
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        ranked = httpclient.InferRequestedOutput("logits", class_count=2)
        with pytest.raises(InferenceServerException) as info:
            client.infer("m", [tensor], outputs=[ranked])
        assert str(info.value.status()) == "400" and "segments" in str(info.value)
    finally:
        code, err = _stop(server)
    assert code == 0 and "Traceback" not in err, err


def test_an_answer_over_the_response_limit_is_refused(exported: Exported,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A map answers 3 x 16 x 16 floats per image (3 KiB): a 16 KiB limit takes 5 images."""
    pytest.importorskip("fastapi")
    from epdo.exporters.oip import ProtocolError
    from epdo.exporters.server import ServedModel

    served = ServedModel("m", load_classifier(exported.paths["onnx"], "cpu"), None)
    monkeypatch.setenv("EPDO_MAX_RESPONSE_BYTES", str(16 << 10))
    served.check_answer(5)
    with pytest.raises(ProtocolError, match="send fewer inputs per request"):
        served.check_answer(6)
