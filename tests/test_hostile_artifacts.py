"""Hostile artifacts, serving inputs and text (issue 11, classes 3, 5, 6 and 7).

One tiny model is exported once (ONNX and TorchScript, by the real exporter); every case
tampers a copy of it or hands `epdo predict` / `epdo info` a crafted input, the way an
attacker or a careless user would. Each case asserts the exit code (2 for a refused
artifact, 1 when some inputs of `epdo predict` failed), one ``error:`` line on stderr naming
the file or field, no traceback, and that nothing in the folder was written or changed. The
bombs run in a subprocess whose address space is capped a little above what it already uses.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from cli_checks import cli, refused
from onnx import TensorProto, helper
from PIL import Image

from epdo.exporters.artifact import ArtifactError, build_metadata, metadata_digest
from epdo.exporters.export import export_model
from epdo.exporters.formats.onnx import graph_digest
from epdo.exporters.formats.torchscript import torchscript_digest
from epdo.exporters.loading import read_metadata
from epdo.exporters.runtime import (
    OnnxClassifier,
    Preprocessing,
    ServingError,
    TorchScriptClassifier,
    load_classifier,
    predict_files,
)
from epdo.zoo import build_model, load_spec

FIXTURES = Path(__file__).parent / "fixtures"
CLASSES = ["cat", "dog", "eel"]
TINY = {
    "name": "hostile_tiny",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 12, "mean": 0.2, "std": 0.4},
    "layers": [{"op": "pdo_conv", "fields": 2, "order": 2}, {"op": "head", "classes": 3}],
}


@dataclass
class Artifacts:
    """The exported originals (never modified) and a good input image."""

    folder: Path
    onnx: Path
    ts: Path
    good: Path
    image: np.ndarray  # (1, 12, 12) float32 in [0, 1]


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    folder = tmp_path_factory.mktemp("hostile-art")
    torch.manual_seed(0)
    spec = load_spec(TINY)
    model = build_model(spec).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model((model, spec), "onnx", folder / "m.onnx", real_images=0, classes=CLASSES)
        export_model((model, spec), "torchscript", folder / "m.ts", real_images=0,
                     classes=CLASSES)
    image = np.random.default_rng(0).random((1, 12, 12)).astype(np.float32)
    good = folder / "good.png"
    Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(good)
    return Artifacts(folder, folder / "m.onnx", folder / "m.ts", good, image)


# --------------------------------------------------------------------------- helpers


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes (FIFOs and devices named)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path)] = "other"
    return out


def _resealed(props: dict[str, str]) -> dict[str, str]:
    """Raw ONNX metadata with its metadata digest recomputed, as an attacker would (left as
    it is when a value is not JSON or there is no metadata digest)."""
    try:
        decoded = {k: json.loads(v) for k, v in props.items()}
    except (ValueError, RecursionError):
        return props
    ver = decoded.get("epdo.verification")
    if not isinstance(ver, dict) or "metadata_sha256" not in ver:
        return props
    ver["metadata_sha256"] = metadata_digest(decoded)
    return {**props, "epdo.verification": json.dumps(ver)}


def onnx_copy(src: Path, dest: Path, *, graph: Any = None, props: dict[str, str] | None = None,
              drop: tuple[str, ...] = (), redigest: bool = False, reseal: bool = True) -> Path:
    """A copy of an ONNX artifact with its graph edited, metadata values replaced (raw
    strings) or dropped, and (``redigest``) the model digest recomputed as an attacker would;
    the metadata digest is recomputed too unless ``reseal`` is false."""
    proto = onnx.load(str(src))
    if graph is not None:
        graph(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    for key in drop:
        meta.pop(key)
    meta.update(props or {})
    if redigest:
        ver = json.loads(meta["epdo.verification"])
        ver["graph_sha256"] = graph_digest(proto)
        meta["epdo.verification"] = json.dumps(ver)
    if reseal:
        meta = _resealed(meta)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dest))
    return dest


def verification(src: Path, **changes: Any) -> str:
    """The raw ``epdo.verification`` of ``src`` with ``changes`` (None deletes a key)."""
    ver = json.loads({p.key: p.value for p in onnx.load(str(src)).metadata_props}
                     ["epdo.verification"])
    for key, value in changes.items():
        if value is None:
            ver.pop(key, None)
        else:
            ver[key] = value
    return json.dumps(ver)


def biggest_weight(proto: Any) -> Any:
    return max(proto.graph.initializer, key=lambda t: len(t.raw_data))


def flip_a_byte(proto: Any) -> None:
    tensor = biggest_weight(proto)
    raw = bytearray(tensor.raw_data)
    raw[3] ^= 0x40  # the exponent of the first weight: a large change
    tensor.raw_data = bytes(raw)


def nan_weights(proto: Any) -> None:
    for tensor in proto.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and tensor.raw_data:
            tensor.raw_data = np.full(len(tensor.raw_data) // 4, np.nan, np.float32).tobytes()


def ts_copy(src: Path, dest: Path, *, meta: Any = None, text: str | None = None,
            weights: bool = False, duplicate: bool = False) -> Path:
    """A copy of a TorchScript artifact rewritten entry by entry: ``meta(dict)`` edits the
    metadata (and records its new metadata digest, as an attacker would), ``text`` replaces
    epdo.json, ``weights`` flips a byte of every tensor, ``duplicate`` adds a second entry
    of the same name."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/extra/epdo.json"):
                if meta is not None:
                    decoded = json.loads(data)
                    meta(decoded)
                    ver = decoded.get("epdo.verification")
                    if isinstance(ver, dict) and "metadata_sha256" in ver:
                        ver["metadata_sha256"] = metadata_digest(decoded)
                    data = json.dumps(decoded).encode()
                if text is not None:
                    data = text.encode()
            if weights and "/data/" in info.filename and len(data) >= 4:
                data = bytes([data[0], data[1], data[2], data[3] ^ 0x40]) + data[4:]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Duplicate name"
                zout.writestr(info, data)
                if duplicate and info.filename.endswith("/data.pkl"):
                    zout.writestr(info, data)
    return dest


def png_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A grayscale PNG declaring ``width`` x ``height`` with the given compressed data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                              0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def zeros_zlib(n: int, block: int = 1 << 22) -> bytes:
    """The zlib stream of ``n`` zero bytes, built in milliseconds: after a full flush the
    compressor starts afresh, so one compressed block repeats (the Adler-32 of zeros is
    ``(n mod 65521) << 16 | 1``)."""
    c = zlib.compressobj(9)
    head = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    body = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(n - block, block)
    tail = c.compress(bytes(rest)) + c.flush(zlib.Z_FULL_FLUSH) if rest else b""
    return head + body * count + tail + b"\x03\x00" + ((n % 65521) << 16 | 1).to_bytes(4, "big")


def npy_header(shape: tuple[int, ...], descr: str = "<f8", data: bytes = b"") -> bytes:
    """A version 1.0 ``.npy`` file declaring ``shape``, holding ``data``."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


# --------------------------------------------------------------------------- class 3: digest


def test_export_records_a_digest_that_every_reader_checks(art: Artifacts) -> None:
    for path in (art.onnx, art.ts):
        ver = read_metadata(path)["epdo.verification"]
        assert len(ver["graph_sha256"]) == 64
    assert read_metadata(art.onnx)["epdo.verification"]["graph_sha256"] == graph_digest(
        onnx.load(str(art.onnx)))
    assert read_metadata(art.ts)["epdo.verification"]["graph_sha256"] == torchscript_digest(
        art.ts)
    for clf in (OnnxClassifier(art.onnx, "cpu"), TorchScriptClassifier(art.ts, "cpu")):
        assert clf.verified and clf.classes == CLASSES
    result = cli("info", art.onnx)
    assert result.exit_code == 0 and "matches the model" in result.stdout


def test_a_flipped_weight_byte_is_refused(art: Artifacts, tmp_path: Path) -> None:
    bad = onnx_copy(art.onnx, tmp_path / "flip.onnx", graph=flip_a_byte)
    # what the attack buys without the check: onnxruntime runs it and the logits change
    x = art.image[None]
    logits = [onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
              .run(["logits"], {"images": x})[0] for p in (art.onnx, bad)]
    assert not np.allclose(logits[0], logits[1], atol=1e-3)
    before = snapshot(tmp_path)
    for args in (("predict", bad, art.good, "--json"), ("predict", bad, art.good, "--trust"),
                 ("info", bad), ("info", bad, "--trust")):
        line = refused(cli(*args), 2, "flip.onnx", "does not match the digest")
        assert "re-export" in line
    assert snapshot(tmp_path) == before
    with pytest.raises(ServingError, match="does not match the digest"):
        load_classifier(bad, provider="cpu", trust=True)
    with pytest.raises(ArtifactError, match="does not match the digest"):
        read_metadata(bad, trust=True)


def test_nan_weights_never_print_a_probability(art: Artifacts, tmp_path: Path) -> None:
    plain = onnx_copy(art.onnx, tmp_path / "nan.onnx", graph=nan_weights)
    refused(cli("predict", plain, art.good, "--json"), 2, "nan.onnx", "digest")
    # an attacker who also rewrites the digest: the first run is refused for its logits
    forged = onnx_copy(art.onnx, tmp_path / "forged.onnx", graph=nan_weights, redigest=True)
    for args in (("predict", forged, art.good), ("predict", forged, art.good, "--json")):
        result = cli(*args)
        refused(result, 2, "forged.onnx", "non-finite logits")
        assert "nan" not in result.stdout.lower()
    with pytest.raises(ServingError, match="non-finite"):
        OnnxClassifier(forged, "cpu")


def _log_model(folder: Path) -> Path:
    """A hand-made artifact whose logits are log(sum of the pixels): finite for the gray
    probe, -inf for a black image."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"]),
         helper.make_node("MatMul", ["flat", "ones"], ["sums"]),
         helper.make_node("Log", ["sums"], ["logits"])],
        "log", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("ones", TensorProto.FLOAT, [144, 3], [1.0] * 432)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = build_metadata(load_spec(TINY), CLASSES, {"graph_sha256": graph_digest(model)})
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    path = folder / "log.onnx"
    onnx.save(model, str(path))
    return path


def test_non_finite_logits_of_one_input_cost_only_that_input(art: Artifacts,
                                                             tmp_path: Path) -> None:
    model = _log_model(tmp_path)
    black = tmp_path / "black.npy"
    np.save(black, np.zeros((12, 12), np.uint8))
    clf = load_classifier(model, provider="cpu")
    with pytest.raises(ServingError, match=r"non-finite logits .* for input 1"):
        clf.predict(np.stack([art.image, np.zeros_like(art.image)]))
    results = predict_files(clf, [art.good, black])
    assert results[0].ok and np.isfinite(results[0].logits).all()
    assert "non-finite" in (results[1].error or "")
    result = cli("predict", model, art.good, black, "--json")
    assert result.exit_code == 1
    assert refused(result, 1, "black.npy", "non-finite")
    data = json.loads(result.stdout)
    assert [d["input"] for d in data] == [str(art.good), str(black)]
    assert data[0]["top_k"] and "error" in data[1] and data[1]["logits"] == []
    assert all(np.isfinite(t["probability"]) for t in data[0]["top_k"])


def test_a_missing_digest_needs_trust(art: Artifacts, tmp_path: Path) -> None:
    unsigned = onnx_copy(art.onnx, tmp_path / "unsigned.onnx",
                         props={"epdo.verification": verification(art.onnx, graph_sha256=None)})
    before = snapshot(tmp_path)
    for args in (("predict", unsigned, art.good), ("info", unsigned)):
        refused(cli(*args), 2, "unsigned.onnx", "unverified", "--trust")
    with pytest.raises(ServingError, match="unverified"):
        load_classifier(unsigned, provider="cpu")
    trusted = cli("predict", unsigned, art.good, "--trust", "--json")
    assert trusted.exit_code == 0
    assert "unverified" in trusted.stderr and len(trusted.stderr.strip().splitlines()) == 1
    assert json.loads(trusted.stdout)[0]["top_k"][0]["class"] in CLASSES
    info = cli("info", unsigned, "--trust")
    assert info.exit_code == 0 and "unverified" in info.stdout
    clf = load_classifier(unsigned, provider="cpu", trust=True)
    assert not clf.verified and clf.classes == CLASSES
    assert snapshot(tmp_path) == before


def test_a_plain_onnx_model_is_served_only_when_trusted(art: Artifacts, tmp_path: Path) -> None:
    plain = onnx_copy(art.onnx, tmp_path / "plain.onnx",
                      drop=tuple(p.key for p in onnx.load(str(art.onnx)).metadata_props))
    refused(cli("predict", plain, art.good), 2, "plain.onnx", "not an epdo artifact")
    clf = load_classifier(plain, provider="cpu", trust=True)
    assert clf.input_shape == (1, 12, 12) and clf.classes == ["0", "1", "2"]


def test_the_previous_exporters_artifact_still_predicts(tmp_path: Path) -> None:
    legacy = FIXTURES / "legacy_model.onnx"
    assert len(read_metadata(legacy)["epdo.verification"]["graph_sha256"]) == 64
    image = tmp_path / "digit.npy"
    np.save(image, np.full((12, 12), 0.5, np.float32))
    result = cli("predict", legacy, image, "--json")
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout)[0]["top_k"][0]["class"] in [str(i) for i in range(10)]


# --------------------------------------------------------------------------- class 3 and 7:
# metadata of the wrong type, or disagreeing with the graph

_PRE = {"color": "grayscale", "size": [12, 12], "scale": 1 / 255, "normalized_in_graph": True}

METADATA_CASES = [
    ("classes-not-json", {"epdo.classes": "cat dog eel"}, "epdo.classes is not valid JSON"),
    ("classes-a-string", {"epdo.classes": '"cde"'}, "epdo.classes must be"),
    ("classes-numbers", {"epdo.classes": "[1, 2, 3]"}, "epdo.classes must be"),
    ("classes-objects", {"epdo.classes": '[{"a": 1}, {}, {}]'}, "epdo.classes must be"),
    ("classes-empty", {"epdo.classes": "[]"}, "epdo.classes must be"),
    ("classes-too-many", {"epdo.classes": json.dumps([str(i) for i in range(20)])},
     "20 class names but the model returns 3 logits"),
    ("classes-too-few", {"epdo.classes": '["a", "b"]'}, "2 class names"),
    ("shape-huge", {"epdo.input_shape": "[1, 100000, 100000]",
                    "epdo.preprocess": json.dumps({**_PRE, "size": [100000, 100000]})},
     "EPDO_MAX_MODEL_PIXELS"),
    ("shape-not-the-graphs", {"epdo.input_shape": "[1, 6, 6]",
                              "epdo.preprocess": json.dumps({**_PRE, "size": [6, 6]})},
     "does not match the graph's input (batch, 1, 12, 12)"),
    ("shape-strings", {"epdo.input_shape": '["1", 12, 12]'}, "epdo.input_shape must be"),
    ("shape-scalar", {"epdo.input_shape": "5"}, "epdo.input_shape must be"),
    ("shape-floats", {"epdo.input_shape": "[1, 12.0, 12]"}, "epdo.input_shape must be"),
    ("shape-booleans", {"epdo.input_shape": "[true, 12, 12]"}, "epdo.input_shape must be"),
    ("shape-negative", {"epdo.input_shape": "[1, -12, 12]"}, "epdo.input_shape must be"),
    ("shape-channels", {"epdo.input_shape": "[2, 12, 12]"}, "2 channels"),
    ("mean-strings", {"epdo.input_mean": '["a"]'}, "epdo.input_mean must be"),
    ("mean-infinite", {"epdo.input_mean": "[Infinity]"}, "epdo.input_mean must be"),
    ("std-zero", {"epdo.input_std": "[0]"}, "epdo.input_std must be"),
    ("std-nan", {"epdo.input_std": "[NaN]"}, "epdo.input_std must be"),
    ("preprocess-list", {"epdo.preprocess": "[]"}, "epdo.preprocess must be"),
    ("scale-string", {"epdo.preprocess": json.dumps({**_PRE, "scale": "x"})},
     "epdo.preprocess.scale"),
    ("scale-nan", {"epdo.preprocess": json.dumps({**_PRE, "scale": float("nan")})},
     "epdo.preprocess.scale"),
    ("color-unknown", {"epdo.preprocess": json.dumps({**_PRE, "color": "cmyk"})},
     "epdo.preprocess.color"),
    ("color-rgb", {"epdo.preprocess": json.dumps({**_PRE, "color": "rgb"})},
     "epdo.preprocess.color"),
    ("size-other", {"epdo.preprocess": json.dumps({**_PRE, "size": [5, 5]})},
     "epdo.preprocess.size"),
    ("in-graph-string", {"epdo.preprocess": json.dumps({**_PRE, "normalized_in_graph": "no"})},
     "normalized_in_graph"),
    ("in-graph-false", {"epdo.preprocess": json.dumps({**_PRE, "normalized_in_graph": False})},
     "normalized_in_graph is false"),
    ("scale-other", {"epdo.preprocess": json.dumps({**_PRE, "scale": 1 / 128})},
     "epdo.preprocess.scale 0.0078125 is not the 1/255"),
    ("verification-string", {"epdo.verification": '"x"'}, "epdo.verification must be"),
    ("spec-list", {"epdo.spec": "[]"}, "epdo.spec must be"),
    ("version-number", {"epdo.version": "1"}, "epdo.version must be"),
    ("spec-nested-deep", {"epdo.spec": "[" * 100_000 + "]" * 100_000}, "not valid JSON"),
]

VERIFICATION_CASES = [
    ("max-abs-string", {"max_abs": "big"}, "epdo.verification.max_abs"),
    ("digest-number", {"graph_sha256": 5}, "epdo.verification.graph_sha256"),
    ("digest-short", {"graph_sha256": "abc"}, "epdo.verification.graph_sha256"),
    ("passed-false", {"passed": False}, "epdo.verification.passed"),
    ("checks-strings", {"checks": ["x"]}, "epdo.verification.checks"),
    ("opset-string", {"opset": "17"}, "epdo.verification.opset"),
]


def _metadata_case(art: Artifacts, tmp_path: Path, name: str, props: dict[str, str]) -> Path:
    return onnx_copy(art.onnx, tmp_path / f"{name}.onnx", props=props)


@pytest.mark.parametrize(("name", "props", "needle"), METADATA_CASES,
                         ids=[c[0] for c in METADATA_CASES])
def test_bad_metadata_is_one_clean_error(art: Artifacts, tmp_path: Path, name: str,
                                         props: dict[str, str], needle: str) -> None:
    path = _metadata_case(art, tmp_path, name, props)
    before = snapshot(tmp_path)
    for args in (("predict", path, art.good, "--json"), ("info", path),
                 ("info", path, "--json", "--trust")):
        refused(cli(*args), 2, f"{name}.onnx", needle)
    with pytest.raises(ServingError, match="metadata|JSON"):
        load_classifier(path, provider="cpu", trust=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("name", "changes", "needle"), VERIFICATION_CASES,
                         ids=[c[0] for c in VERIFICATION_CASES])
def test_bad_verification_figures_are_one_clean_error(art: Artifacts, tmp_path: Path, name: str,
                                                      changes: dict[str, Any],
                                                      needle: str) -> None:
    path = _metadata_case(art, tmp_path, name,
                          {"epdo.verification": verification(art.onnx, **changes)})
    for args in (("predict", path, art.good), ("info", path)):
        refused(cli(*args), 2, f"{name}.onnx", needle)


def test_weights_in_an_external_file_are_refused(art: Artifacts, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX external data names a file to read the weights from: the digest covers the
    name only, not what the file holds, so such a model is never loaded."""

    def external(proto: Any) -> None:
        tensor = biggest_weight(proto)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "weights.bin"

    monkeypatch.chdir(tmp_path)  # where onnx's checker looks for the file: it finds one
    (tmp_path / "weights.bin").write_bytes(bytes(1 << 16))
    path = onnx_copy(art.onnx, tmp_path / "ext.onnx", graph=external, redigest=True)
    for args in (("predict", path, art.good, "--trust"), ("info", path)):
        refused(cli(*args), 2, "ext.onnx", "external data")


def test_a_metadata_key_given_twice_or_missing_is_refused(art: Artifacts, tmp_path: Path) -> None:
    proto = onnx.load(str(art.onnx))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "epdo.classes", '["x", "y", "z"]'
    onnx.save(proto, str(tmp_path / "twice.onnx"))
    refused(cli("predict", tmp_path / "twice.onnx", art.good), 2, "twice.onnx", "duplicate keys")
    missing = onnx_copy(art.onnx, tmp_path / "missing.onnx", drop=("epdo.classes",))
    refused(cli("info", missing), 2, "missing.onnx", "lacks epdo.classes")


def test_model_size_limit_can_be_lowered_and_a_bad_setting_is_named(art: Artifacts) -> None:
    refused(cli("predict", art.onnx, art.good, env={"EPDO_MAX_MODEL_PIXELS": "100"}), 2,
            "m.onnx", "over the limit of 100", "EPDO_MAX_MODEL_PIXELS")
    refused(cli("info", art.onnx, env={"EPDO_MAX_MODEL_PIXELS": "lots"}), 2,
            "EPDO_MAX_MODEL_PIXELS", "'lots'")


def test_preprocessing_from_metadata_checks_types() -> None:
    with pytest.raises(ServingError, match="epdo.input_mean"):
        Preprocessing.from_metadata({"epdo.input_shape": [1, 4, 4], "epdo.input_mean": ["a"]})
    with pytest.raises(ServingError, match="EPDO_MAX_MODEL_PIXELS"):
        Preprocessing.from_metadata({}, [1, 100_000, 100_000])  # the graph's shape too


# --------------------------------------------------------------------------- class 3: TorchScript


def test_torchscript_weights_changed_are_refused(art: Artifacts, tmp_path: Path) -> None:
    bad = ts_copy(art.ts, tmp_path / "w.ts", weights=True)
    for args in (("predict", bad, art.good, "--trust"), ("info", bad)):
        refused(cli(*args), 2, "w.ts", "does not match the digest")
    with pytest.raises(ServingError, match="digest"):
        TorchScriptClassifier(bad, "cpu", trust=True)


def test_torchscript_without_digest_needs_trust(art: Artifacts, tmp_path: Path) -> None:
    unsigned = ts_copy(art.ts, tmp_path / "u.ts",
                       meta=lambda m: m["epdo.verification"].pop("graph_sha256"))
    refused(cli("predict", unsigned, art.good), 2, "u.ts", "unverified", "--trust")
    result = cli("predict", unsigned, art.good, "--trust", "--json", "--provider", "cpu")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["top_k"]


@pytest.mark.parametrize(("name", "kwargs", "needle"), [
    ("classes20", {"meta": lambda m: m.update({"epdo.classes": [str(i) for i in range(20)]})},
     "20 class names but the model returns 3 logits"),
    ("classes-str", {"meta": lambda m: m.update({"epdo.classes": "cde"})}, "epdo.classes"),
    ("huge", {"meta": lambda m: m.update({"epdo.input_shape": [1, 100000, 100000]})},
     "EPDO_MAX_MODEL_PIXELS"),
    ("small", {"meta": lambda m: m.update({"epdo.input_shape": [1, 6, 6], "epdo.preprocess":
                                           {**_PRE, "size": [6, 6]}})},
     "does not match the digest"),  # the TorchScript digest covers the input shape
    ("ver-str", {"meta": lambda m: m.update({"epdo.verification": "x"})}, "epdo.verification"),
    ("notjson", {"text": "{not json"}, "epdo.json is not valid JSON"),
    ("array", {"text": "[1, 2]"}, "not a JSON object"),
    ("twice", {"duplicate": True}, "appears twice"),
])
def test_bad_torchscript_archives_are_one_clean_error(art: Artifacts, tmp_path: Path, name: str,
                                                      kwargs: dict[str, Any],
                                                      needle: str) -> None:
    path = ts_copy(art.ts, tmp_path / f"{name}.ts", **kwargs)
    before = snapshot(tmp_path)
    refused(cli("predict", path, art.good, "--provider", "cpu"), 2, f"{name}.ts", needle)
    assert snapshot(tmp_path) == before


def test_a_torchscript_zip_bomb_is_refused_before_reading(art: Artifacts, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(art.ts) as zin, zipfile.ZipFile(buffer, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr(f"{root}/code/bomb.py", b"#" * 1000, compress_type=zipfile.ZIP_DEFLATED)
    data = bytearray(buffer.getvalue())
    # declare 4 GiB for the entry in the central directory (what readers trust)
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    struct.pack_into("<I", data, at + 24, 0xFFFF0000)
    (tmp_path / "bomb.ts").write_bytes(bytes(data))
    refused(cli("info", tmp_path / "bomb.ts"), 2, "bomb.ts", "zip bomb")


# --------------------------------------------------------------------------- class 5: inputs

_BOMB_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys, time
    from epdo.exporters.runtime import InputError, Preprocessing, preprocess_input
    size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    cap = size + (256 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    pre = Preprocessing(channels=1, size=(12, 12))
    for path in sys.argv[1:]:
        t = time.perf_counter()
        try:
            preprocess_input(path, pre)
            outcome = "accepted"
        except InputError as exc:
            outcome = "error: " + str(exc)
        print(json.dumps([path, outcome, time.perf_counter() - t]), flush=True)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_input_bombs_fifos_and_devices_under_a_memory_cap(tmp_path: Path) -> None:
    """Each crafted input is refused from its header, in a process allowed only 256 MB more
    than it holds after its imports: decoding any of them would not fit."""
    side = 20_000
    (tmp_path / "bomb.png").write_bytes(png_header(side, side, zeros_zlib(side * (side + 1))))
    (tmp_path / "tall.png").write_bytes(png_header(11_000, 10_000))  # 110 M: over epdo's limit
    (tmp_path / "bomb.npy").write_bytes(npy_header((100000, 100000, 100), data=bytes(100)))
    (tmp_path / "cut.npy").write_bytes(npy_header((12, 12), data=bytes(100)))
    (tmp_path / "pickle.npy").write_bytes(npy_header((12, 12), descr="|O", data=bytes(1152)))
    os.mkfifo(tmp_path / "fifo.png")
    os.symlink("/dev/zero", tmp_path / "zero.npy")
    os.symlink("/dev/urandom", tmp_path / "random.png")
    (tmp_path / "folder.png").mkdir()
    names = ["bomb.png", "tall.png", "bomb.npy", "cut.npy", "pickle.npy", "fifo.png",
             "zero.npy", "random.png", "folder.png"]
    before = snapshot(tmp_path)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT,
                           *(str(tmp_path / n) for n in names)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    outcomes = {Path(p).name: (o, t) for p, o, t in map(json.loads, proc.stdout.splitlines())}
    expected = {
        "bomb.png": "decompression-bomb limit",
        "tall.png": "EPDO_MAX_IMAGE_PIXELS",
        "bomb.npy": "expected shape (12, 12), (1, 12, 12) or (12, 12, 1), got (100000",
        "cut.npy": "truncated .npy file",
        "pickle.npy": "expected uint8 or float pixels",
        "fifo.png": "not a regular file: a FIFO",
        "zero.npy": "not a regular file: a character device",
        "random.png": "not a regular file: a character device",
        "folder.png": "Is a directory",
    }
    for name, needle in expected.items():
        outcome, seconds = outcomes[name]
        assert outcome.startswith("error: ") and needle in outcome, (name, outcome)
        assert "\n" not in outcome and seconds < 2.0, (name, seconds)
    assert time.perf_counter() - start < 30
    assert snapshot(tmp_path) == before


def test_image_pixel_limit_is_raisable(art: Artifacts, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("L", (200, 100), 128).save(big)
    result = cli("predict", art.onnx, big, art.good, "--json",
                 env={"EPDO_MAX_IMAGE_PIXELS": "10_000"})
    refused(result, 1, "big.png", "200x100 = 20,000 pixels", "EPDO_MAX_IMAGE_PIXELS")
    assert [bool(d["top_k"]) for d in json.loads(result.stdout)] == [False, True]
    ok = cli("predict", art.onnx, big, env={"EPDO_MAX_IMAGE_PIXELS": "20000"})
    assert ok.exit_code == 0 and ok.stderr == ""


def test_one_bad_input_never_costs_the_good_ones(art: Artifacts, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    good_npy = Path("good.npy")
    np.save(good_npy, art.image[0])
    Path("notes.png").write_text("not a picture")
    Path("tall.png").write_bytes(png_header(30_000, 30_000))
    Path("bomb.npy").write_bytes(npy_header((100000, 100000, 100), data=bytes(100)))
    os.mkfifo("fifo.png")
    Path("dir.png").mkdir()
    fifo = tmp_path / "fifo.png"

    def unblock() -> None:  # a regression that waits on the FIFO ends, late, not never
        time.sleep(20)
        try:
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        except OSError:
            pass

    threading.Thread(target=unblock, daemon=True).start()
    inputs = [str(art.good), "notes.png", "tall.png", "bomb.npy", "fifo.png", "dir.png",
              "gone.png", str(good_npy), "odd[", "[bold]x.png"]
    before = snapshot(tmp_path)
    start = time.perf_counter()
    result = cli("predict", art.onnx, *inputs, "--json", "--batch-size", "2")
    assert time.perf_counter() - start < 15
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    bad = inputs[1:7] + inputs[8:]
    assert len(errors) == len(bad)
    for line, name in zip(errors, bad, strict=True):
        assert line.startswith(f"error: {name}: ")
    data = json.loads(result.stdout)
    assert [d["input"] for d in data] == inputs
    for d in data:
        assert bool(d["top_k"]) == (d["input"] in (str(art.good), str(good_npy)))
        assert ("error" in d) != bool(d["top_k"])
    np.testing.assert_allclose(data[0]["logits"], data[7]["logits"], atol=0.01)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- class 6: markup


def test_user_text_is_printed_literally_by_predict(art: Artifacts, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    labels = ["[/]", ":100:", "[bold]c"]
    model = ts_copy(art.ts, tmp_path / "[red]m.ts",
                    meta=lambda m: m.update({"epdo.classes": labels}))
    monkeypatch.chdir(tmp_path)
    Path("odd[").mkdir()
    Image.open(art.good).save("odd[/]x.png")
    Image.open(art.good).save("[bold]y.png")
    result = cli("predict", model, "odd[/]x.png", "[bold]y.png", "--top-k", "3",
                 "--provider", "cpu")
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    for text in ("odd[/]x.png", "[bold]y.png", "[red]m.ts", *labels):
        assert text in result.stdout, text
    assert "\U0001f4af" not in result.stdout  # :100: is not an emoji
    missing = cli("predict", model, "gone[/]z.png", ":100:.png", "--provider", "cpu")
    assert missing.stderr.splitlines() == ["error: gone[/]z.png: No such file or directory",
                                           "error: :100:.png: No such file or directory"]
    # control characters are shown escaped: no terminal escapes, no forged second line
    evil = ts_copy(art.ts, tmp_path / "evil.ts",
                   meta=lambda m: m.update({"epdo.classes": ["\x1b[2J", "a\nb", "c"]}))
    Image.open(art.good).save("x\x1b[31my.png")
    result = cli("predict", evil, "x\x1b[31my.png", "gone\nerror: forged.png", "--top-k",
                 "3", "--provider", "cpu")
    assert result.exit_code == 1 and "\x1b" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "error: gone\\nerror: forged.png: No such file or directory"]
    for text in ("x\\x1b[31my.png", "\\x1b[2J", "a\\nb"):
        assert text in result.stdout, text


def test_user_text_is_printed_literally_by_info_and_check(art: Artifacts, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.chdir(tmp_path)
    onnx_copy(art.onnx, tmp_path / "a.onnx", props={
        "epdo.spec_name": '"[/]n"', "epdo.classes": '["[red]c", ":100:", "[/]"]'})
    info = cli("info", "a.onnx")
    assert info.exit_code == 0, info.stderr
    for text in ("[/]n", "[red]c", ":100:", "[/]"):
        assert text in info.stdout, text
    Path("[bold]x.yaml").write_text(json.dumps({**TINY, "name": "[red]n:100:",
                                                "description": "a [/] b :100:"}))
    spec = cli("info", "[bold]x.yaml")
    assert spec.exit_code == 0, spec.stderr
    for text in ("[red]n:100:", "a [/] b :100:"):
        assert text in spec.stdout, text
    check = cli("check", "[bold]x.yaml", "--batch", "2", "--angles", "")
    assert check.exit_code == 0 and "[bold]x.yaml" in check.stdout
    refused(cli("info", "[bold]gone.yaml"), 2, "[bold]gone.yaml")


def test_user_text_is_printed_literally_by_export_and_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("export", FIXTURES / "legacy_checkpoint.pt", "-o", "[bold]y.onnx")
    assert result.exit_code == 0, result.stderr
    assert "wrote [bold]y.onnx" in result.stdout
    assert read_metadata("[bold]y.onnx")["epdo.spec_name"] == "legacy_tiny"
    data = cli("data", "info", "mnist-rot", "--data-dir", "odd[/]dir")
    assert data.exit_code == 0 and "odd[/]dir" in data.stdout


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="the message is about a missing onnxruntime-gpu")
def test_install_hint_keeps_its_brackets(art: Artifacts) -> None:
    refused(cli("predict", art.onnx, art.good, "--provider", "cuda"), 2,
            "pip install 'epdo[serve-gpu]'")


# --------------------------------------------------------------------------- class 7: options


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_export_atol_must_be_finite_and_not_negative(tmp_path: Path, value: str) -> None:
    result = cli("export", FIXTURES / "legacy_checkpoint.pt", "-o", tmp_path / "m.onnx",
                 "--atol", value)
    refused(result, 2, "--atol", "finite number >= 0")
    assert list(tmp_path.iterdir()) == []
