"""Export: the inference graph, ONNX / TorchScript parity, dynamic batch, metadata,
refusal of tampered artifacts, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from epdo.exporters import export as export_mod
from epdo.exporters.artifact import METADATA_KEYS, ArtifactError
from epdo.exporters.export import ExportError, VerificationError, export_model
from epdo.exporters.inference import inference_model
from epdo.exporters.loading import read_metadata
from epdo.zoo import build_model
from epdo.zoo.data import dataset_classes
from epdo.zoo.layers.conv import EquivariantConv
from epdo.zoo.layers.neural_epdo import NeuralEPDO
from epdo.zoo.spec import Spec, load_spec

MNIST_SPECS = [
    "quickstart",
    "mnist_cnn",
    "mnist_regular_gauss",
    "mnist_regular_fd",
    "mnist_quotient_gauss",
    "mnist_d16c16_gauss",
    "mnist_pdoeconv_gauss",
    "rgb_regular_gauss",
    "rgb_pdoeconv_gauss",
    "rgb_cnn",
]
RGB_SPECS = ("rgb_regular_gauss", "rgb_pdoeconv_gauss", "rgb_cnn")


def randomized(name: str | Spec, seed: int = 0) -> tuple[nn.Module, Spec]:
    """A randomly initialised model in eval mode with random BatchNorm statistics and
    affines (so that folding them is actually tested)."""
    torch.manual_seed(seed)
    spec = load_spec(name)
    model = build_model(spec)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return model.eval(), spec


def small(name: str, size: int = 12, seed: int = 0) -> tuple[nn.Module, Spec]:
    """:func:`randomized` with the spec's input shrunk to ``size`` x ``size`` (same layers
    and weights shapes; the two 2x2 poolings still see even sizes), to keep the big
    models fast on a CPU."""
    data = load_spec(name).resolved()
    data["input"]["size"] = size
    return randomized(load_spec(data), seed)


def spec_shape(spec: Spec) -> tuple[int, int, int]:
    return spec.input.channels, spec.input.height, spec.input.width


@pytest.fixture(scope="module")
def quickstart_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, Spec]:
    model, spec = randomized("quickstart")
    path = tmp_path_factory.mktemp("artifacts") / "quickstart.onnx"
    export_model((model, spec), "onnx", path, real_images=3)
    return path, model, spec


@pytest.mark.parametrize("name", MNIST_SPECS)
def test_inference_graph_equals_eval_model(name: str) -> None:
    model, spec = small(name, 32 if name in RGB_SPECS else 12)
    inf = inference_model(model, spec)
    kinds = {type(m) for m in inf.modules()}
    assert not kinds & {NeuralEPDO, nn.Dropout, nn.Dropout2d, nn.BatchNorm1d, nn.BatchNorm3d}
    assert not any(issubclass(k, EquivariantConv) for k in kinds)
    x = torch.rand(3, *inf.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)  # both take raw images and normalise them first
        out = inf(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_inference_graph_applies_the_normalization() -> None:
    model, spec = randomized("quickstart")
    data = spec.resolved()
    data["input"]["mean"], data["input"]["std"] = [0.25], [0.5]
    shifted = build_model(load_spec(data))
    shifted.load_state_dict(model.state_dict())
    inf = inference_model(shifted.eval())
    x = torch.rand(2, 1, 28, 28)
    m0, s0 = spec.input.mean[0], spec.input.std[0]
    with torch.no_grad():  # the blocks of both see (x - 0.25) / 0.5
        expected = model((x - 0.25) / 0.5 * s0 + m0)
        torch.testing.assert_close(inf(x), expected, atol=1e-5, rtol=1e-5)


def test_neural_epdo_no_grad_path_is_plain_ops() -> None:
    model, _ = randomized("quickstart")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
    ops = {n.kind() for n in traced.inlined_graph.nodes()}
    assert not any("PythonOp" in op for op in ops)


# at 28x28 with real test images; the two heaviest (5x5 convs / D16 fields at full width)
# run at 12x12 to keep the suite fast on two CPU cores
FULL_SIZE = tuple(n for n in MNIST_SPECS if n not in ("mnist_pdoeconv_gauss",
                                                      "mnist_d16c16_gauss", *RGB_SPECS))


def reduced(name: str) -> tuple[nn.Module, Spec]:
    """The randomized model at its full size, or shrunk (the RGB specs to 32 x 32, a
    multiple of their four 2x2 poolings)."""
    if name in FULL_SIZE:
        return randomized(name)
    return small(name, 32 if name in RGB_SPECS else 12)


@pytest.mark.parametrize("name", MNIST_SPECS)
def test_onnx_export_verifies(name: str, tmp_path: Path) -> None:
    full = name in FULL_SIZE
    model, spec = reduced(name)
    report = export_model((model, spec), "onnx", tmp_path / f"{name}.onnx", real_images=3)
    assert report.passed and report.max_abs <= 1e-4 and report.agreement == 1.0
    expected = {("random", 1), ("random", 7)}
    if full:  # 28x28: real test images too (the embedded sample when MNIST-rot is absent)
        expected |= {("test images", 1), ("test images", 3)}
    else:
        assert report.real_images.startswith("none")
    assert {(c.inputs, c.batch) for c in report.checks} == expected
    if spec.group_obj.N % 4 == 0:
        assert report.rotation_max_rel is not None and report.rotation_max_rel < 1e-4
    else:
        assert report.rotation_max_rel is None
    proto = onnx.load(str(tmp_path / f"{name}.onnx"))
    onnx.checker.check_model(proto, full_check=True)  # with shape inference, at its opset
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", report.opset)]
    assert _domains(proto.graph) == {""}  # standard operators only, Loop bodies included
    loops = [n for n in proto.graph.node if n.op_type == "Loop"]
    neural = sum(isinstance(m, NeuralEPDO) for m in model.modules())
    # per Neural ePDO product: a loop over whole chunks of images, and one over the rest
    # when a chunk holds more than one image
    assert neural <= len(loops) <= 2 * neural
    # no temporary left; the model card beside the artifact
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx", f"{name}.onnx.md"]


def _domains(graph: onnx.GraphProto) -> set[str]:
    """The operator domains of a graph and of every subgraph inside it."""
    found = set()
    for node in graph.node:
        found.add(node.domain)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found |= _domains(attribute.g)
    return found


@pytest.mark.parametrize("name", MNIST_SPECS)
def test_torchscript_export_verifies(name: str, tmp_path: Path) -> None:
    model, spec = reduced(name)
    path = tmp_path / f"{name}.ts"
    report = export_model((model, spec), "torchscript", path, real_images=3)
    assert report.passed and report.max_abs <= 1e-4 and report.opset is None
    loaded = torch.jit.load(str(path))
    x = torch.rand(5, *spec_shape(spec))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)
    assert read_metadata(path)["epdo.spec_name"] == name


def test_onnx_dynamic_batch(quickstart_onnx: tuple[Path, nn.Module, Spec]) -> None:
    path, model, spec = quickstart_onnx
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("images", "logits")
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [1, 28, 28]
    for batch in (1, 7, 4):
        x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
        (logits,) = session.run(None, {"images": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert logits.shape == (batch, 10)
        np.testing.assert_allclose(logits, ref, atol=1e-4)
    assert onnx.load(str(path)).opset_import[0].version >= 17


def test_metadata_round_trip(quickstart_onnx: tuple[Path, nn.Module, Spec]) -> None:
    path, _, spec = quickstart_onnx
    raw = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert set(raw) == set(METADATA_KEYS)
    assert all(isinstance(v, str) for v in raw.values())
    meta = read_metadata(path)
    assert meta == {k: json.loads(v) for k, v in raw.items()}
    assert meta["epdo.spec_name"] == "quickstart"
    assert load_spec(meta["epdo.spec"]) == spec
    assert meta["epdo.classes"] == dataset_classes(spec.train.dataset)
    assert meta["epdo.input_shape"] == [1, 28, 28]
    assert meta["epdo.input_mean"] == [0.0] and meta["epdo.input_std"] == [1.0]
    assert meta["epdo.preprocess"] == {"color": "grayscale", "size": [28, 28],
                                       "scale": 1 / 255, "fit": "resize",
                                       "normalized_in_graph": True}
    ver = meta["epdo.verification"]
    assert ver["passed"] and ver["max_abs"] <= 1e-4 and ver["agreement"] == 1.0
    assert ver["format"] == "onnx" and ver["opset"] == 17 and len(ver["graph_sha256"]) == 64


def test_tampered_and_truncated_onnx_are_refused(
    quickstart_onnx: tuple[Path, nn.Module, Spec], tmp_path: Path
) -> None:
    data = quickstart_onnx[0].read_bytes()
    tampered = bytearray(data)
    mid = len(data) // 2
    for i in range(mid, mid + 16):
        tampered[i] ^= 0xFF
    (tmp_path / "tampered.onnx").write_bytes(bytes(tampered))
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("tampered.onnx", "truncated.onnx", "empty.onnx", "missing.onnx"):
        with pytest.raises(ArtifactError) as info:
            read_metadata(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_truncated_torchscript_is_refused(tmp_path: Path) -> None:
    model, spec = randomized("mnist_cnn")
    path = tmp_path / "cnn.ts"
    export_model((model, spec), "torchscript", path, real_images=1)
    (tmp_path / "cut.ts").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError):
        read_metadata(tmp_path / "cut.ts")
    with pytest.raises(ArtifactError):
        read_metadata(tmp_path / "model.bin")


def test_existing_target_needs_force(tmp_path: Path) -> None:
    model, spec = randomized("mnist_cnn")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="already exists"):
        export_model((model, spec), "onnx", target, real_images=1)
    assert target.read_bytes() == b"keep me"
    export_model((model, spec), "onnx", target, real_images=1, force=True)
    assert read_metadata(target)["epdo.spec_name"] == "mnist_cnn"


def test_failed_verification_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, spec = randomized("mnist_cnn")
    real_runner = export_mod._runner

    def broken(path: Path, fmt: object):
        run = real_runner(path, fmt)
        return lambda x: run(x) + 1e-3

    monkeypatch.setattr(export_mod, "_runner", broken)
    with pytest.raises(VerificationError) as info:
        export_model((model, spec), "onnx", tmp_path / "m.onnx", real_images=1)
    assert info.value.report is not None and info.value.report.max_abs > 1e-4
    assert list(tmp_path.iterdir()) == []
    # with --force an existing artifact stays as it was
    (tmp_path / "m.onnx").write_bytes(b"old")
    with pytest.raises(VerificationError):
        export_model((model, spec), "onnx", tmp_path / "m.onnx", real_images=1, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"old"


def test_bad_arguments(tmp_path: Path) -> None:
    model, spec = randomized("mnist_cnn")
    with pytest.raises(ExportError, match="opset"):
        export_model((model, spec), "onnx", tmp_path / "m.onnx", opset=13)
    with pytest.raises(ExportError, match="format"):
        export_model((model, spec), "tflite", tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="path"):
        export_model((model, spec), "onnx")
    with pytest.raises(ExportError, match="no such"):
        export_model(tmp_path / "missing.pt", "onnx")
    assert list(tmp_path.iterdir()) == []
