"""torch.export artifacts (``epdo export --format pt2`` / ``aoti``): every MNIST and RGB spec
(those of ``test_export``, the big ones shrunk) exports and verifies, metadata and digest
round trip, `epdo predict` / `epdo info` serve them, and crafted files are refused before
torch deserialises anything that could run code.

The AOTInductor tests compile one package of ``quickstart`` (about two minutes on two CPU
cores) and are skipped without a C++ compiler.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_checks import cli, refused
from PIL import Image
from test_export import FULL_SIZE, MNIST_SPECS, randomized, reduced

from epdo.exporters import PT2Classifier, ServingError, load_classifier
from epdo.exporters.artifact import ArtifactError, UnverifiedArtifactError
from epdo.exporters.export import ExportReport, export_model
from epdo.exporters.formats.aoti import find_compiler
from epdo.exporters.formats.pt2_checks import PT2_OPS
from epdo.exporters.formats.torch_common import torch_release
from epdo.exporters.loading import read_metadata
from epdo.zoo import build_model, load_spec

CLASSES = ["cat", "dog", "eel"]
TINY = {
    "name": "pt2_tiny",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 12, "mean": 0.2, "std": 0.4},
    "layers": [{"op": "pdo_conv", "fields": 2, "order": 2}, {"op": "head", "classes": 3}],
}


def check_report(report: ExportReport, spec: Any, full: bool) -> None:
    """What every verified export must show: values within 1e-4 (absolute and relative to
    the largest logit), full top-1 agreement, and the artifact's 90 degree invariance."""
    assert report.passed and report.max_abs <= 1e-4 and report.max_rel <= 1e-4
    assert report.agreement == 1.0
    expected = {("random", 1), ("random", 7)}
    if full:
        expected |= {("test images", 1), ("test images", 3)}
    assert {(c.inputs, c.batch) for c in report.checks} == expected
    if spec.group_obj.N % 4 == 0:
        assert report.rotation_max_rel is not None and report.rotation_max_rel < 1e-4
    else:
        assert report.rotation_max_rel is None


# --------------------------------------------------------------------------- the digest


def entries_digest(data: bytes, input_shape: Any) -> str:
    """The documented digest, computed independently: SHA-256 over the entries but
    extra/epdo.json and .data/serialization_id in name order (8-byte name length, name,
    8-byte size, bytes), then the declared input shape."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        root = zf.namelist()[0].split("/")[0]
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            rel = info.filename[len(root) + 1:]
            if rel in ("extra/epdo.json", ".data/serialization_id"):
                continue
            name = rel.encode()
            digest.update(len(name).to_bytes(8, "little") + name
                          + info.file_size.to_bytes(8, "little") + zf.read(info))
    digest.update(b"\0epdo.input_shape\0" + json.dumps(input_shape).encode())
    return digest.hexdigest()


def rewrite(src: Path, dest: Path, *, edit: dict[str, Callable[[bytes], bytes]] | None = None,
            add: dict[str, bytes] | None = None, meta: Callable[[dict], None] | None = None,
            redigest: bool = False) -> Path:
    """A copy of a .pt2 / .aoti.pt2 rewritten entry by entry (names relative to the top
    folder): ``edit`` maps a name to a function of its bytes, ``add`` adds entries, ``meta``
    edits the decoded epdo.json, ``redigest`` records the new digest as an attacker would."""
    edit, add = edit or {}, add or {}
    with zipfile.ZipFile(src) as zin:
        root = zin.namelist()[0].split("/")[0]
        entries = {i.filename[len(root) + 1:]: zin.read(i) for i in zin.infolist()}
    for name, fn in edit.items():
        entries[name] = fn(entries[name])
    entries.update(add)
    decoded = json.loads(entries["extra/epdo.json"])
    if meta is not None:
        meta(decoded)
    if redigest:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zout:
            for name, data in entries.items():
                zout.writestr(f"{root}/{name}", data)
        decoded["epdo.verification"]["graph_sha256"] = entries_digest(
            buffer.getvalue(), decoded.get("epdo.input_shape"))
    entries["extra/epdo.json"] = json.dumps(decoded).encode()
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        for name, data in entries.items():
            zout.writestr(f"{root}/{name}", data)
    return dest


def edit_json(fn: Callable[[Any], None]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        value = json.loads(data)
        fn(value)
        return json.dumps(value).encode()

    return apply


def flip(data: bytes) -> bytes:
    """The exponent byte of the first float32 flipped: a large change."""
    return data[:3] + bytes([data[3] ^ 0x40]) + data[4:]


class MakeDir:
    """A pickle payload: unpickling it creates a directory (the marker of code run)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


# --------------------------------------------------------------------------- fixtures


@dataclass
class Tiny:
    """A tiny C4 model's .pt2 (never modified), a good input and its PyTorch logits."""

    pt2: Path
    good: Path
    logits: np.ndarray


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    folder = tmp_path_factory.mktemp("pt2-tiny")
    torch.manual_seed(0)
    spec = load_spec(TINY)
    model = build_model(spec).eval()
    export_model((model, spec), "pt2", folder / "m.pt2", real_images=0, classes=CLASSES)
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "good.png")
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels / np.float32(255))[None, None].float()).numpy()
    return Tiny(folder / "m.pt2", folder / "good.png", logits)


@dataclass
class Quick:
    """quickstart (random weights) exported as .pt2 and .onnx, and real images as PNGs."""

    model: torch.nn.Module
    spec: Any
    report: ExportReport
    pt2: Path
    onnx: Path
    pngs: list[Path]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Quick:
    folder = tmp_path_factory.mktemp("pt2-quick")
    model, spec = randomized("quickstart")
    report = export_model((model, spec), "pt2", folder / "q.pt2", real_images=3)
    export_model((model, spec), "onnx", folder / "q.onnx", real_images=0)
    from epdo.zoo.data import load_dataset

    images = load_dataset("sample", "test").images[:6]
    pngs = []
    for i, image in enumerate(images):
        pixels = np.round(image[0].numpy() * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        pngs.append(folder / f"img{i}.png")
    return Quick(model, spec, report, folder / "q.pt2", folder / "q.onnx", pngs)


# --------------------------------------------------------------------------- export


def test_quickstart_pt2_verifies_and_serves_any_batch(quick: Quick) -> None:
    check_report(quick.report, quick.spec, full=True)
    assert quick.report.format == "pt2" and quick.report.opset is None
    clf = PT2Classifier(quick.pt2, "cpu")
    assert not clf.compiled and clf.verified and clf.providers == ["cpu"]
    for batch in (1, 5, 64):  # 5 and 64 were never seen by the export or the verification
        x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = quick.model(x).numpy()
        np.testing.assert_allclose(clf.predict(x.numpy(), batch_size=batch), want,
                                   atol=1e-4, rtol=1e-4)


PT2_SPECS = ("mnist_cnn", "mnist_quotient_gauss", "mnist_d16c16_gauss")
"""One spec per op family (ONNX and TorchScript run every spec; quickstart is above):
``conv``; ``neural_epdo`` on quotient fields at full size with real images; ``pdo_conv``,
``neural_epdo`` on D16 fields and ``restrict``; ``head`` in all."""
assert set(PT2_SPECS) <= set(MNIST_SPECS)


@pytest.mark.parametrize("name", PT2_SPECS)
def test_pt2_export_verifies(name: str, tmp_path: Path) -> None:
    full = name in FULL_SIZE
    model, spec = reduced(name)
    path = tmp_path / f"{name}.pt2"
    report = export_model((model, spec), "pt2", path, real_images=3)
    check_report(report, spec, full)
    meta = read_metadata(path)
    assert meta["epdo.spec_name"] == name
    assert meta["epdo.verification"]["graph_sha256"] == report.graph_sha256
    # no temporary left; the model card beside the artifact
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.pt2", f"{name}.pt2.md"]


def test_metadata_round_trip_and_documented_digest(quick: Quick) -> None:
    meta = read_metadata(quick.pt2)
    onnx_meta = read_metadata(quick.onnx)
    for key in ("epdo.spec_name", "epdo.spec", "epdo.classes", "epdo.input_shape",
                "epdo.input_mean", "epdo.input_std", "epdo.preprocess"):
        assert meta[key] == onnx_meta[key], key
    assert load_spec(meta["epdo.spec"]) == quick.spec
    ver = meta["epdo.verification"]
    assert ver["format"] == "pt2" and ver["opset"] is None and ver["passed"] is True
    assert ver["torch_version"] == torch.__version__
    assert ver["max_abs"] == quick.report.max_abs and ver["agreement"] == 1.0
    data = quick.pt2.read_bytes()
    assert ver["graph_sha256"] == entries_digest(data, [1, 28, 28])
    with zipfile.ZipFile(quick.pt2) as zf:  # torch's own reader sees the same metadata
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    extra = {"epdo.json": ""}
    torch.export.load(io.BytesIO(data), extra_files=extra)
    assert json.loads(extra["epdo.json"]) == meta


def test_export_cli_pt2_and_info(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "legacy_checkpoint.pt"
    target = tmp_path / "legacy.pt2"
    result = cli("export", fixture, "--format", "pt2", "-o", target)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {target}" in result.stdout and "verification of legacy_tiny (pt2)" in \
        " ".join(result.stdout.split())
    info = cli("info", target)
    assert info.exit_code == 0, info.stderr
    text = " ".join(info.stdout.split())
    assert "pt2" in text and "matches the model" in text and torch.__version__ in text
    meta = json.loads(cli("info", target, "--json").stdout)
    assert meta["epdo.verification"]["format"] == "pt2"


def test_export_help_lists_the_formats() -> None:
    text = " ".join(cli("export", "--help").stdout.split())
    for word in ("onnx", "torchscript", "pt2", "aoti"):
        assert word in text
    predict = " ".join(cli("predict", "--help").stdout.split())
    assert ".pt2" in predict and ".aoti.pt2" in predict


# --------------------------------------------------------------------------- serving


def test_predict_pt2_agrees_with_onnx(quick: Quick) -> None:
    files = quick.pngs
    onnx = cli("predict", quick.onnx, *files, "--json", "--provider", "cpu")
    pt2 = cli("predict", quick.pt2, *files, "--json", "--provider", "cpu")
    assert onnx.exit_code == 0 and pt2.exit_code == 0, pt2.stderr
    assert pt2.stderr == ""
    for a, b in zip(json.loads(onnx.stdout), json.loads(pt2.stdout), strict=True):
        assert a["top_k"][0]["index"] == b["top_k"][0]["index"]
        np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-4)
    table = cli("predict", quick.pt2, *files[:2], "--provider", "cpu")
    assert table.exit_code == 0 and "q.pt2 (cpu)" in table.stdout


def test_load_classifier_dispatches_pt2(tiny: Tiny) -> None:
    clf = load_classifier(tiny.pt2, provider="cpu")
    assert isinstance(clf, PT2Classifier) and clf.classes == CLASSES
    assert clf.input_shape == (1, 12, 12)
    got = clf.predict(clf.preprocess(tiny.good))
    np.testing.assert_allclose(got, tiny.logits, atol=1e-5)
    with pytest.raises(ServingError, match="unknown provider"):
        PT2Classifier(tiny.pt2, provider="tpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pt2_on_cuda_matches_cpu(quick: Quick) -> None:  # pragma: no cover - GPU only
    gpu = PT2Classifier(quick.pt2, "cuda")
    assert gpu.providers == ["cuda"]
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(gpu.predict(x), PT2Classifier(quick.pt2, "cpu").predict(x),
                               atol=1e-4)


# --------------------------------------------------------------------------- tampering


def test_tampered_programs_are_refused_as_the_other_formats(tiny: Tiny, tmp_path: Path) -> None:
    flipped = rewrite(tiny.pt2, tmp_path / "flip.pt2",
                      edit={"data/weights/weight_0": flip})
    shape = rewrite(tiny.pt2, tmp_path / "shape.pt2", meta=lambda m: m.update(
        {"epdo.input_shape": [1, 6, 6], "epdo.preprocess": {**m["epdo.preprocess"],
                                                             "size": [6, 6]}}))
    for path in (flipped, shape):
        for args in (("predict", path, tiny.good, "--trust"), ("info", path)):
            refused(cli(*args), 2, path.name, "does not match the digest")
        with pytest.raises(ServingError, match="digest"):
            PT2Classifier(path, "cpu", trust=True)
    classes = rewrite(tiny.pt2, tmp_path / "classes.pt2",
                      meta=lambda m: m.update({"epdo.classes": ["a", "b"]}))
    refused(cli("info", classes), 2, "classes.pt2", "2 class names but the model returns 3")
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(tiny.pt2.read_bytes()[:3000])
    refused(cli("info", cut), 2, "cut.pt2", "not a loadable torch.export program")
    with pytest.raises(ArtifactError):
        read_metadata(cut)


def test_program_without_digest_needs_trust(tiny: Tiny, tmp_path: Path) -> None:
    bare = rewrite(tiny.pt2, tmp_path / "bare.pt2",
                  meta=lambda m: m["epdo.verification"].pop("graph_sha256"))
    refused(cli("predict", bare, tiny.good), 2, "bare.pt2", "unverified", "--trust")
    with pytest.raises(UnverifiedArtifactError):
        read_metadata(bare)
    result = cli("predict", bare, tiny.good, "--trust", "--json", "--provider", "cpu")
    assert result.exit_code == 0 and "unverified" in result.stderr
    np.testing.assert_allclose(json.loads(result.stdout)[0]["logits"], tiny.logits[0],
                               atol=1e-5)


def replace_expressions(value: Any, text: str) -> None:
    """Every shape expression (``expr_str``) in a JSON tree replaced by ``text``."""
    if isinstance(value, dict):
        for key in value:
            if key == "expr_str":
                value[key] = text
            else:
                replace_expressions(value[key], text)
    elif isinstance(value, list):
        for item in value:
            replace_expressions(item, text)


def _crafted(marker: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Programs that would run code (make ``marker``) if torch deserialised them, each with
    the digest recomputed as an attacker would, and the words of its refusal."""
    payload = pickle.dumps(MakeDir(marker))
    saved = io.BytesIO()
    torch.save(MakeDir(marker), saved)
    model = "models/model.json"

    def pickled_weight(config: dict) -> None:
        next(iter(config["config"].values()))["use_pickle"] = True

    def guards(program: dict) -> None:
        program["guards_code"] = [f"__import__('os').mkdir({str(marker)!r}) or True"]

    def expression(program: dict) -> None:
        replace_expressions(program, f"__import__('os').mkdir({str(marker)!r})")

    def from_file(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = \
            "torch.ops.aten.from_file.default"

    def node_name(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["name"] = "x = __import__('os')"

    def subgraph(program: dict) -> None:
        node = program["graph_module"]["graph"]["nodes"][0]
        node["inputs"][0]["arg"] = {"as_graph": {"graph": {}, "name": "g"}}

    def user_object(program: dict) -> None:
        specs = program["graph_module"]["signature"]["input_specs"]
        specs[0] = {"custom_obj": {"arg": {"name": "obj"}, "custom_obj_name": "obj"}}

    return {
        "pickle": ({"edit": {"data/weights/model_weights_config.json":
                             edit_json(pickled_weight),
                             "data/weights/weight_0": lambda _: payload}}, "is a pickle"),
        "inputs": ({"edit": {"data/sample_inputs/model.pt": lambda _: saved.getvalue()}},
                   "example inputs are not plain tensors"),
        "guards": ({"edit": {model: edit_json(guards)}}, "guard code"),
        "expr": ({"edit": {model: edit_json(expression)}}, "not arithmetic on sizes"),
        "from_file": ({"edit": {model: edit_json(from_file)}}, "aten.from_file"),
        "name": ({"edit": {model: edit_json(node_name)}}, "names a value"),
        "subgraph": ({"edit": {model: edit_json(subgraph)}}, "as_graph"),
        "custom_obj": ({"edit": {model: edit_json(user_object)}}, "input of kind"),
        "legacy": ({"add": {"data/weights/model.pt": payload}}, "data/weights/model.pt"),
        "traversal": ({"add": {"../../escape.py": b"print('hi')"}}, "'../../escape.py'"),
        "aoti_inside": ({"add": {"data/aotinductor/model/x.so": b"\x7fELF"}},
                        "AOTInductor package: name it NAME.aoti.pt2"),
    }


@pytest.mark.parametrize("case", ["pickle", "inputs", "guards", "expr", "from_file", "name",
                                  "subgraph", "custom_obj", "legacy", "traversal",
                                  "aoti_inside"])
def test_programs_that_would_run_code_are_refused_before_loading(
        tiny: Tiny, tmp_path: Path, case: str) -> None:
    marker = tmp_path / "marker"
    kwargs, needle = _crafted(marker)[case]
    path = rewrite(tiny.pt2, tmp_path / f"{case}.pt2", redigest=True, **kwargs)
    for args in (("predict", path, tiny.good, "--trust", "--provider", "cpu"),
                 ("info", path, "--trust")):
        refused(cli(*args), 2, f"{case}.pt2", needle)
    with pytest.raises(ServingError, match="epdo loads"):
        PT2Classifier(path, "cpu", trust=True)
    assert not marker.exists()  # nothing of the file's ran


def test_a_pt2_zip_bomb_is_refused_before_reading(tiny: Tiny, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(tiny.pt2) as zin, zipfile.ZipFile(buffer, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr(f"{root}/data/weights/weight_99", b"\0" * 1000,
                      compress_type=zipfile.ZIP_DEFLATED)
    data = bytearray(buffer.getvalue())
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    struct.pack_into("<I", data, at + 24, 0xFFFF0000)  # declares 4 GiB inflated
    (tmp_path / "bomb.pt2").write_bytes(bytes(data))
    refused(cli("info", tmp_path / "bomb.pt2"), 2, "bomb.pt2", "zip bomb")


def test_a_pt2_with_an_unknown_compression_method_is_one_line(tiny: Tiny,
                                                              tmp_path: Path) -> None:
    # refused on the entry headers, before zipfile (which would raise NotImplementedError)
    # tries to inflate them
    data = bytearray(tiny.pt2.read_bytes())
    for signature, field in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        while at != -1:
            struct.pack_into("<H", data, at + field, 99)  # an undefined method
            at = data.find(signature, at + 4)
    (tmp_path / "odd.pt2").write_bytes(bytes(data))
    refused(cli("info", tmp_path / "odd.pt2"), 2, "odd.pt2", "compressed other than by deflate")


def test_program_ops_are_pure_tensor_functions() -> None:
    """Every allowed operator exists in this torch, and none of its overloads but ``out``
    ones (refused by name) writes to its arguments or takes a file name or storage."""
    for name in PT2_OPS:
        packet = getattr(torch.ops.aten, name)
        for overload in packet.overloads():
            if "out" in overload.split("_"):
                continue
            schema = getattr(packet, overload)._schema
            assert not schema.is_mutable, (name, overload)
            for arg in schema.arguments:
                assert "file" not in arg.name and "path" not in arg.name, (name, arg.name)
                assert "Storage" not in str(arg.type), (name, arg.name)


# --------------------------------------------------------------------------- AOTInductor


def test_aoti_without_a_compiler_is_one_line(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    assert find_compiler() is None
    fixture = Path(__file__).parent / "fixtures" / "legacy_checkpoint.pt"
    refused(cli("export", fixture, "--format", "aoti", "-o", tmp_path / "m.aoti.pt2"), 2,
            "no C++ compiler", "--format pt2")
    assert list(tmp_path.iterdir()) == []
    refused(cli("bench", "quickstart", "--aoti"), 2, "no C++ compiler")


needs_compiler = pytest.mark.skipif(find_compiler() is None, reason="needs a C++ compiler")


@pytest.fixture(scope="module")
def aoti(quick: Quick, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportReport]:
    path = tmp_path_factory.mktemp("aoti") / "q.aoti.pt2"
    return path, export_model((quick.model, quick.spec), "aoti", path, real_images=3)


@needs_compiler
def test_aoti_quickstart_verifies_and_serves(aoti: tuple[Path, ExportReport],
                                            quick: Quick) -> None:
    path, report = aoti
    check_report(report, quick.spec, full=True)
    meta = read_metadata(path)
    ver = meta["epdo.verification"]
    assert ver["format"] == "aoti" and ver["torch_version"] == torch.__version__
    assert ver["compiled_for"]["machine"] and ver["compiled_for"]["cpu_isa"]
    assert ver["graph_sha256"] == entries_digest(path.read_bytes(), [1, 28, 28])
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert any(n.endswith(".so") for n in names) and not any("models/" in n for n in names)
    # its native code runs only when the user vouches for the file
    with pytest.raises(ServingError, match="native code that runs when it is loaded"):
        load_classifier(path)
    refused(cli("predict", path, *quick.pngs), 2, "pass --trust")
    clf = load_classifier(path, trust=True)
    assert isinstance(clf, PT2Classifier) and clf.compiled and clf.providers == ["cpu"]
    x = np.random.default_rng(1).random((9, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        want = quick.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(clf.predict(x, batch_size=9), want, atol=1e-4, rtol=1e-4)
    onnx = cli("predict", quick.onnx, *quick.pngs, "--json", "--provider", "cpu")
    got = cli("predict", path, *quick.pngs, "--json", "--trust")
    assert got.exit_code == 0 and got.stderr == "", got.stderr
    for a, b in zip(json.loads(onnx.stdout), json.loads(got.stdout), strict=True):
        assert a["top_k"][0]["index"] == b["top_k"][0]["index"]
    info = " ".join(cli("info", path).stdout.split())
    assert "compiled native code" in info and ver["compiled_for"]["cpu_isa"] in info


@needs_compiler
def test_aoti_package_calls_the_registered_product(aoti: tuple[Path, ExportReport]) -> None:
    """The compiled model calls epdo::stencil_product through the dispatcher (issue 24)."""
    path, _ = aoti
    with zipfile.ZipFile(path) as zf:
        text = b"".join(zf.read(n) for n in zf.namelist()
                        if n.endswith((".cpp", ".json", ".wrapper.cpp")))
    assert b"epdo::stencil_product" in text or b"epdo.stencil_product" in text


@needs_compiler
def test_aoti_packages_that_do_not_fit_are_refused(aoti: tuple[Path, ExportReport],
                                                   tiny: Tiny, tmp_path: Path) -> None:
    path, _ = aoti
    with zipfile.ZipFile(path) as zf:
        root = zf.namelist()[0].split("/")[0]
        library = next(n for n in zf.namelist() if n.endswith(".so"))[len(root) + 1:]
        notes = next(n for n in zf.namelist() if n.endswith("_metadata.json"))[len(root) + 1:]
    flipped = rewrite(path, tmp_path / "flip.aoti.pt2",
                      edit={library: lambda d: d[:4096] + bytes([d[4096] ^ 1]) + d[4097:]})
    refused(cli("predict", flipped, tiny.good, "--trust"), 2, "does not match the digest")
    elsewhere = rewrite(path, tmp_path / "arm.aoti.pt2", redigest=True, edit={
        notes: edit_json(lambda n: n.update({"AOTI_MACHINE": "riscv64"}))})
    refused(cli("info", elsewhere), 2, "compiled for 'riscv64'")
    older = rewrite(path, tmp_path / "old.aoti.pt2", meta=lambda m: m[
        "epdo.verification"].update({"torch_version": "1.13.0"}))
    refused(cli("info", older), 2, "compiled against torch '1.13.0'", torch_release())
    with pytest.raises(ServingError, match="CPU only"):
        PT2Classifier(path, provider="cuda")
    renamed = tmp_path / "renamed.pt2"
    renamed.write_bytes(path.read_bytes())
    refused(cli("info", renamed), 2, "name it NAME.aoti.pt2")
    program = tmp_path / "program.aoti.pt2"
    program.write_bytes(tiny.pt2.read_bytes())
    refused(cli("info", program), 2, "name it NAME.pt2, without .aoti")
