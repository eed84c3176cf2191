"""Serving: OnnxClassifier / TorchScriptClassifier, preprocessing, `epdo predict`, and the
standalone onnxruntime+numpy example script.

The artifacts are built here by hand in the exporter's contract (input ``images`` of raw
pixels in [0, 1], normalization inside the graph, output ``logits``, JSON metadata), so
these tests do not depend on ``epdo export``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from epdo import __version__
from epdo.cli.main import app
from epdo.exporters import OnnxClassifier, ServingError, TorchScriptClassifier
from epdo.exporters.formats.onnx import graph_digest, resolve_onnx_providers
from epdo.exporters.formats.torchscript import save_torchscript
from epdo.exporters.runtime import (
    InputError,
    Preprocessing,
    load_classifier,
    predict_files,
    preprocess_input,
    softmax,
)
from epdo.zoo import build_model
from epdo.zoo.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "serve_onnx.py"
runner = CliRunner()

TINY_SPEC = {
    "name": "tiny_serve_c4",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 28, "mean": 0.29, "std": 0.35},
    "layers": [{"op": "pdo_conv", "fields": 2, "order": 2}, {"op": "head", "classes": 10}],
}


@dataclass
class Artifacts:
    """A tiny model, its ONNX and TorchScript exports and real test images."""

    model: nn.Module  # raw pixels -> logits, eval mode
    onnx_path: Path
    ts_path: Path
    classes: list[str]
    images: np.ndarray  # (N, 1, 28, 28) float32 in [0, 1]
    labels: np.ndarray


def _metadata(classes: list[str], spec: dict) -> dict:
    """The decoded metadata of the artifact contract."""
    mean, std = [spec["input"]["mean"]], [spec["input"]["std"]]
    return {
        "epdo.version": __version__,
        "epdo.spec_name": spec["name"],
        "epdo.spec": spec,
        "epdo.classes": classes,
        "epdo.input_shape": [1, 28, 28],
        "epdo.input_mean": mean,
        "epdo.input_std": std,
        "epdo.preprocess": {"color": "grayscale", "size": [28, 28], "scale": 1 / 255,
                            "normalized_in_graph": True},
        "epdo.verification": {"note": "hand-made test artifact"},
    }


def export_tiny(folder: Path) -> Artifacts:
    """Build the tiny spec (seeded, eval mode), export it as ONNX and TorchScript with the
    contract's metadata."""
    torch.manual_seed(0)
    sample = load_dataset("sample-upright", "test")
    zoo_model = build_model(TINY_SPEC).eval()
    model = zoo_model  # raw pixels in [0, 1] in (it normalises them), logits out
    meta = _metadata(list(sample.classes), TINY_SPEC)
    example = sample.images[:2].float()

    onnx_path = folder / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter and tracer warnings
        torch.onnx.export(model, (example,), str(onnx_path), input_names=["images"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        ts_path = folder / "tiny.ts"
        save_torchscript(traced, ts_path, meta)  # with the archive's digest
    proto = onnx.load(str(onnx_path))
    digest = {**meta["epdo.verification"], "graph_sha256": graph_digest(proto)}
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in
                                        {**meta, "epdo.verification": digest}.items()})
    onnx.save(proto, str(onnx_path))
    return Artifacts(model=model, onnx_path=onnx_path, ts_path=ts_path,
                     classes=list(sample.classes), images=sample.images[:24].numpy(),
                     labels=sample.labels[:24].numpy())


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return export_tiny(tmp_path_factory.mktemp("serve"))


def torch_logits(art: Artifacts, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return art.model(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(1, H, W) float in [0, 1] -> (H, W) uint8."""
    return np.round(image[0] * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- classifier


def test_onnx_classifier_reads_metadata(art: Artifacts) -> None:
    clf = OnnxClassifier(art.onnx_path, provider="cpu")
    assert clf.classes == art.classes
    assert clf.input_shape == (1, 28, 28)
    assert clf.metadata["epdo.spec_name"] == "tiny_serve_c4"
    assert clf.metadata["epdo.spec"] == TINY_SPEC
    assert clf.providers == ["CPUExecutionProvider"]
    assert "OnnxClassifier" in repr(clf)


def test_predict_matches_onnxruntime_and_torch(art: Artifacts) -> None:
    clf = OnnxClassifier(art.onnx_path, provider="cpu", batch_size=5)
    x = art.images[:13]
    got = clf.predict(x)
    session = onnxruntime.InferenceSession(str(art.onnx_path),
                                           providers=["CPUExecutionProvider"])
    direct = session.run(["logits"], {"images": x})[0]
    assert got.shape == (13, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, direct, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, torch_logits(art, x), atol=1e-5, rtol=0)
    # batch size does not change the answer; single images (C,H,W) and (H,W) work
    np.testing.assert_allclose(clf.predict(x, batch_size=13), got, atol=1e-6)
    np.testing.assert_allclose(clf.predict(x[3]), got[3:4], atol=1e-6)
    np.testing.assert_allclose(clf.predict(x[3, 0]), got[3:4], atol=1e-6)
    assert clf.predict(x[:0]).shape == (0, 10)


def test_predict_top_k_and_proba(art: Artifacts) -> None:
    clf = OnnxClassifier(art.onnx_path, provider="cpu")
    x = art.images[:4]
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    top = clf.predict_top_k(x, k=3)
    assert len(top) == 4 and all(len(row) == 3 for row in top)
    for row, p in zip(top, proba, strict=True):
        assert row[0].index == int(np.argmax(p))
        assert row[0].label == art.classes[row[0].index]
        assert [t.probability for t in row] == sorted((t.probability for t in row),
                                                      reverse=True)
    assert len(clf.predict_top_k(x, k=50)[0]) == 10  # capped at the number of classes


def test_predict_rejects_wrong_shapes(art: Artifacts) -> None:
    clf = OnnxClassifier(art.onnx_path, provider="cpu")
    with pytest.raises(InputError, match=r"expected an array \(N, 1, 28, 28\)"):
        clf.predict(np.zeros((2, 1, 27, 28), np.float32))
    with pytest.raises(InputError):
        clf.predict(np.zeros((3, 28, 28), np.float32))  # a (C,H,W) with C=3


def test_torchscript_classifier_same_interface(art: Artifacts) -> None:
    ts = TorchScriptClassifier(art.ts_path, provider="cpu")
    onnx_clf = load_classifier(art.onnx_path, provider="cpu")
    assert isinstance(load_classifier(art.ts_path, provider="cpu"), TorchScriptClassifier)
    assert ts.classes == art.classes and ts.input_shape == (1, 28, 28)
    assert ts.providers == ["cpu"]
    x = art.images[:6]
    np.testing.assert_allclose(ts.predict(x, batch_size=4), torch_logits(art, x), atol=1e-5)
    np.testing.assert_allclose(ts.predict(x), onnx_clf.predict(x), atol=1e-5)


# --------------------------------------------------------------------------- providers


def test_provider_selection_on_cpu_machine(art: Artifacts, monkeypatch) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert resolve_onnx_providers("auto") == ["CPUExecutionProvider"]
    assert resolve_onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert OnnxClassifier(art.onnx_path).providers == ["CPUExecutionProvider"]
    with pytest.raises(ServingError, match=r"onnxruntime-gpu.*epdo\[serve-gpu\]"):
        resolve_onnx_providers("cuda")
    with pytest.raises(ServingError, match="CUDAExecutionProvider"):
        OnnxClassifier(art.onnx_path, provider="cuda")
    with pytest.raises(ServingError, match="unknown provider 'tpu'"):
        OnnxClassifier(art.onnx_path, provider="tpu")


def test_provider_auto_prefers_cuda_only_with_a_gpu(monkeypatch) -> None:
    import epdo.exporters.formats.onnx as runtime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "_gpu_present", lambda: True)
    assert resolve_onnx_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_onnx_providers("cuda")[0] == "CUDAExecutionProvider"
    monkeypatch.setattr(runtime, "_gpu_present", lambda: False)
    assert resolve_onnx_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(ServingError, match="no CUDA GPU"):
        resolve_onnx_providers("cuda")


@pytest.mark.cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in onnxruntime.get_available_providers()
                    or not torch.cuda.is_available(), reason="needs onnxruntime-gpu and a GPU")
def test_cuda_provider_matches_cpu(art: Artifacts) -> None:  # pragma: no cover - GPU only
    gpu = OnnxClassifier(art.onnx_path, provider="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    x = art.images[:8]
    np.testing.assert_allclose(gpu.predict(x), OnnxClassifier(art.onnx_path, "cpu").predict(x),
                               atol=1e-4)


def test_bad_model_files(tmp_path: Path, art: Artifacts) -> None:
    with pytest.raises(ServingError, match="no such model file"):
        OnnxClassifier(tmp_path / "missing.onnx", provider="cpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(ServingError, match="not a loadable ONNX model"):
        OnnxClassifier(junk, provider="cpu")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(art.onnx_path.read_bytes()[:2000])
    with pytest.raises(ServingError, match="not a loadable ONNX model"):
        OnnxClassifier(truncated, provider="cpu")
    with pytest.raises(ServingError, match="not a loadable TorchScript model"):
        TorchScriptClassifier(junk.rename(tmp_path / "junk.ts"), provider="cpu")


# --------------------------------------------------------------------------- preprocessing


PRE = Preprocessing(channels=1, size=(28, 28))


def test_preprocess_png_equals_uint8_pixels(tmp_path: Path, art: Artifacts) -> None:
    pixels = to_uint8(art.images[0])
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "rgb.png")  # converted to L
    want = pixels.astype(np.float32)[None] / 255.0
    for name in ("a.png", "rgb.png"):
        got = preprocess_input(tmp_path / name, PRE)
        assert got.shape == (1, 28, 28) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_preprocess_resizes_and_jpeg(tmp_path: Path, art: Artifacts) -> None:
    big = Image.fromarray(to_uint8(art.images[1])).resize((56, 56), Image.Resampling.BILINEAR)
    big.save(tmp_path / "big.jpg", quality=95)
    got = preprocess_input(tmp_path / "big.jpg", PRE)
    assert got.shape == (1, 28, 28) and 0.0 <= got.min() and got.max() <= 1.0
    assert np.abs(got - art.images[1]).mean() < 0.05  # the same picture, back at 28x28


def test_preprocess_rgb_model(tmp_path: Path) -> None:
    pre = Preprocessing(channels=3, size=(4, 6), color="rgb")
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    want = rgb.transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(preprocess_input(tmp_path / "c.png", pre), want, atol=1e-6)
    np.testing.assert_allclose(preprocess_input(rgb, pre), want, atol=1e-6)  # (H, W, C)
    np.testing.assert_allclose(preprocess_input(want.astype(np.float32), pre), want, atol=1e-6)


def test_preprocess_npy(tmp_path: Path, art: Artifacts) -> None:
    img = art.images[2]
    np.save(tmp_path / "f.npy", img)  # (1, H, W) float
    np.save(tmp_path / "hw.npy", img[0])  # (H, W) float
    np.save(tmp_path / "hwc.npy", img.transpose(1, 2, 0))  # (H, W, 1)
    np.save(tmp_path / "u8.npy", to_uint8(img))  # (H, W) uint8
    for name in ("f.npy", "hw.npy", "hwc.npy"):
        np.testing.assert_array_equal(preprocess_input(tmp_path / name, PRE), img)
    np.testing.assert_allclose(preprocess_input(tmp_path / "u8.npy", PRE), img, atol=0.5 / 255)


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((27, 28), np.float32), r"expected shape \(28, 28\), \(1, 28, 28\)"),
    (np.full((28, 28), 2.0, np.float32), r"must lie in \[0, 1\]"),
    (np.zeros((28, 28), np.int64), "uint8 or float"),
    (np.full((28, 28), np.nan, np.float32), "NaN"),
])
def test_preprocess_rejects_bad_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        preprocess_input(array, PRE)


def test_preprocess_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(InputError, match="not an image"):
        preprocess_input(tmp_path / "text.png", PRE)
    with pytest.raises(InputError, match="not a readable .npy"):
        preprocess_input(tmp_path / "text.npy", PRE)
    with pytest.raises(InputError, match="No such file"):
        preprocess_input(tmp_path / "missing.png", PRE)


def test_preprocessing_from_metadata() -> None:
    pre = Preprocessing.from_metadata(_metadata(["a"], TINY_SPEC))
    assert pre == Preprocessing(channels=1, size=(28, 28), color="grayscale", scale=1 / 255,
                                mean=(0.29,), std=(0.35,), normalized_in_graph=True)
    assert Preprocessing.from_metadata({}, [3, 8, 8]).color == "rgb"  # graph shape fallback
    with pytest.raises(ServingError, match="input shape"):
        Preprocessing.from_metadata({})
    with pytest.raises(ServingError, match="does not fit"):
        Preprocessing.from_metadata({"epdo.input_shape": [3, 8, 8],
                                     "epdo.preprocess": {"color": "grayscale"}})


# --------------------------------------------------------------------------- epdo predict


@pytest.fixture(scope="module")
def inputs(art: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Real sample images as PNG, JPEG and .npy files, and one bad file."""
    folder = tmp_path_factory.mktemp("inputs")
    png, npy = [], []
    for i in range(4):
        path = folder / f"img{i}.png"
        Image.fromarray(to_uint8(art.images[i])).save(path)
        png.append(path)
    for i in range(4, 7):
        path = folder / f"img{i}.npy"
        np.save(path, art.images[i] if i % 2 else to_uint8(art.images[i]))
        npy.append(path)
    jpg = folder / "img7.jpg"
    Image.fromarray(to_uint8(art.images[7])).save(jpg, quality=95)
    bad = folder / "notes.png"
    bad.write_text("this is a text file, not a PNG\n")
    return {"png": png, "npy": npy, "jpg": [jpg], "bad": [bad]}


def run_predict(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, ["predict", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_predict_png_with_one_bad_file(art: Artifacts, inputs: dict) -> None:
    files = [*inputs["png"][:2], *inputs["bad"], *inputs["png"][2:]]
    code, out, err = run_predict(art.onnx_path, *files, "--json", "--top-k", "2",
                                 "--provider", "cpu")
    assert code == 1
    assert err.count("error:") == 1 and "notes.png" in err and "not an image" in err
    data = json.loads(out)
    assert [d["input"] for d in data] == [str(p) for p in files]
    assert data[2]["error"].startswith("not an image") and data[2]["top_k"] == []
    data = [d for d in data if "error" not in d]
    want = softmax(torch_logits(art, art.images[:4]))
    for d, p in zip(data, want, strict=True):
        assert [t["index"] for t in d["top_k"]] == list(np.argsort(-p)[:2])
        assert d["top_k"][0]["class"] == art.classes[int(np.argmax(p))]
        np.testing.assert_allclose([t["probability"] for t in d["top_k"]],
                                   np.sort(p)[::-1][:2], atol=1e-5)
        assert len(d["logits"]) == 10


def test_predict_table_jpeg_npy(art: Artifacts, inputs: dict, monkeypatch) -> None:
    monkeypatch.chdir(inputs["png"][0].parent)  # short relative names: no wrapping in the table
    files = [Path(p.name) for p in [*inputs["npy"], *inputs["jpg"], inputs["png"][0]]]
    code, out, err = run_predict(art.onnx_path, *files, "--top-k", "3", "--batch-size", "2")
    assert code == 0, err
    assert err == ""
    for path in files:
        assert path.name in out
    assert out.count("CPUExecutionProvider") == 1
    clf = OnnxClassifier(art.onnx_path, provider="cpu")
    results = predict_files(clf, files, top_k=3, batch_size=2)
    assert all(r.ok for r in results)
    for r in results:
        assert r.top_k[0].label in out
    np.testing.assert_allclose(results[0].logits, torch_logits(art, art.images[4:5])[0],
                               atol=1e-5)


def test_predict_torchscript_agrees_with_onnx(art: Artifacts, inputs: dict) -> None:
    files = inputs["png"]
    _, out_onnx, _ = run_predict(art.onnx_path, *files, "--json")
    code, out_ts, err = run_predict(art.ts_path, *files, "--json", "--provider", "cpu")
    assert code == 0, err
    for a, b in zip(json.loads(out_onnx), json.loads(out_ts), strict=True):
        assert [t["index"] for t in a["top_k"]] == [t["index"] for t in b["top_k"]]
        np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)


def test_predict_usage_errors(tmp_path: Path, art: Artifacts, inputs: dict) -> None:
    code, _, err = run_predict(tmp_path / "missing.onnx", *inputs["png"][:1])
    assert code == 2 and "no such model file" in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    code, _, err = run_predict(junk, *inputs["png"][:1])
    assert code == 2 and "not a loadable ONNX model" in err
    assert "Traceback" not in err
    code, _, err = run_predict(art.onnx_path, *inputs["png"][:1], "--provider", "tpu")
    assert code == 2 and "--provider" in err
    code, _, _ = run_predict(art.onnx_path)  # no inputs
    assert code == 2
    code, _, _ = run_predict(art.onnx_path, *inputs["png"][:1], "--top-k", "0")
    assert code == 2


def test_predict_all_bad(art: Artifacts, inputs: dict, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 5), np.float32))
    code, out, err = run_predict(art.onnx_path, *inputs["bad"], wrong, "--json")
    assert code == 1 and [d["top_k"] for d in json.loads(out)] == [[], []]
    assert err.count("error:") == 2 and "expected shape" in err


def test_predict_help_states_exit_codes() -> None:
    result = runner.invoke(app, ["predict", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "1 when some failed" in text and "2 for usage errors" in text


# --------------------------------------------------------------------------- example script


def test_standalone_script_reproduces_predict(art: Artifacts, inputs: dict) -> None:
    source = SCRIPT.read_text()
    assert "import epdo" not in source and "from epdo" not in source and "PIL" not in source
    files = [str(p) for p in inputs["npy"]]
    _, want, _ = run_predict(art.onnx_path, *files, "--json", "--top-k", "4")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(art.onnx_path), *files, "--json",
                           "--top-k", "4", "--batch-size", "2"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    got, want = json.loads(proc.stdout), json.loads(want)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        assert g["input"] == w["input"]
        assert [t["class"] for t in g["top_k"]] == [t["class"] for t in w["top_k"]]
        assert [t["index"] for t in g["top_k"]] == [t["index"] for t in w["top_k"]]
        np.testing.assert_allclose([t["probability"] for t in g["top_k"]],
                                   [t["probability"] for t in w["top_k"]], atol=1e-5)
        np.testing.assert_allclose(g["logits"], w["logits"], atol=1e-5)
    text = subprocess.run([sys.executable, str(SCRIPT), str(art.onnx_path), files[0]],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert text.startswith(files[0] + ": " + want[0]["top_k"][0]["class"])
    bad = subprocess.run([sys.executable, str(SCRIPT), str(art.onnx_path), files[0],
                          str(inputs["bad"][0])], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.count("error:") == 1
    assert bad.stdout.startswith(files[0] + ": ")


# --------------------------------------------------------------------------- real exporter


def test_serves_what_epdo_export_writes(tmp_path: Path, inputs: dict) -> None:
    """The artifacts of :func:`epdo.exporters.export.export_model` (the real exporter) are
    served like the hand-made ones: same logits as PyTorch, script equals `epdo predict`."""
    export = pytest.importorskip("epdo.exporters.export")
    from epdo.zoo import load_spec

    spec = load_spec(TINY_SPEC)
    torch.manual_seed(1)
    model = build_model(spec).eval()
    onnx_path, ts_path = tmp_path / "real.onnx", tmp_path / "real.ts"
    export.export_model((model, spec), "onnx", onnx_path)
    export.export_model((model, spec), "torchscript", ts_path)
    ref = model.eval()  # raw pixels in, like the artifacts
    x = load_dataset("sample-upright", "test").images[:7].numpy()
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    for clf in (OnnxClassifier(onnx_path, "cpu"), TorchScriptClassifier(ts_path, "cpu")):
        assert clf.input_shape == (1, 28, 28) and len(clf.classes) == 10
        np.testing.assert_allclose(clf.predict(x, batch_size=3), want, atol=1e-5)
    files = [str(p) for p in inputs["npy"]]
    _, out, _ = run_predict(onnx_path, *files, "--json")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(onnx_path), *files, "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    for g, w in zip(json.loads(proc.stdout), json.loads(out), strict=True):
        assert [t["index"] for t in g["top_k"]] == [t["index"] for t in w["top_k"]]
        np.testing.assert_allclose([t["probability"] for t in g["top_k"]],
                                   [t["probability"] for t in w["top_k"]], atol=1e-5)
