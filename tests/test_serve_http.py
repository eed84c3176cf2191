"""``epdo serve`` against Triton's own client library (``tritonclient.http``), on loopback:
health, metadata, infer with tensors (binary and JSON) and with image files, the
classification extension, the refusals (400, 413, 503) with the server answering after
each, concurrent clients, and SIGTERM with requests in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import cli
from PIL import Image

from epdo.exporters.batcher import Batcher, QueueFull
from epdo.exporters.export import export_model
from epdo.exporters.runtime import load_classifier

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    name: str
    model: Path

    def client(self) -> object:
        return httpclient.InferenceServerClient(self.url, network_timeout=120)


def _serve(model: Path, *options: str, env: dict[str, str] | None = None) -> Server:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "epdo.cli", "serve", f"m={model}", "--port", str(port),
         "--provider", "cpu", *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, **(env or {})})
    server = Server(process, f"127.0.0.1:{port}", "m", model)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read())
        try:
            if server.client().is_server_ready():
                return server
        except Exception:  # not listening yet
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start")


def _stop(server: Server) -> tuple[int, str]:
    server.process.send_signal(signal.SIGTERM)
    _, err = server.process.communicate(timeout=60)
    return server.process.returncode, err


@dataclass
class Setup:
    onnx: Path
    pngs: list[Path]
    images: np.ndarray


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    from epdo.zoo import build_model, load_spec
    from epdo.zoo.data import load_dataset

    folder = tmp_path_factory.mktemp("serve-http")
    torch.manual_seed(0)
    spec = load_spec("quickstart")
    model = build_model(spec).eval()
    for p in model.parameters():  # not the initial weights: logits that differ per image
        p.data += 0.05 * torch.randn_like(p)
    export_model((model, spec), "onnx", folder / "q.onnx", real_images=0)
    images = load_dataset("sample", "test").images[:12].numpy()
    pngs = []
    for i, image in enumerate(images):
        Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
        pngs.append(folder / f"{i}.png")
    return Setup(folder / "q.onnx", pngs, images.astype(np.float32))


@pytest.fixture(scope="module")
def server(setup: Setup) -> Iterator[Server]:
    served = _serve(setup.onnx, "--max-batch", "16", "--max-delay-ms", "5",
                    env={"EPDO_MAX_REQUEST_BYTES": str(1 << 20)})
    yield served
    code, err = _stop(served)
    assert code == 0 and "Traceback" not in err, err


def _tensor(x: np.ndarray, binary: bool = True) -> object:
    tensor = httpclient.InferInput("images", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.astype(np.float32), binary_data=binary)
    return tensor


def _files(paths: list[Path]) -> object:
    data = np.array([p.read_bytes() for p in paths], dtype=np.object_)
    tensor = httpclient.InferInput("image_files", [len(paths)], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)
    return tensor


def _logits(client: object, tensor: object, binary: bool = True) -> np.ndarray:
    out = httpclient.InferRequestedOutput("logits", binary_data=binary)
    return client.infer("m", [tensor], outputs=[out]).as_numpy("logits")


def test_health_and_metadata(server: Server) -> None:
    client = server.client()
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("m")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("m")
    assert meta["name"] == "m" and meta["platform"] == "epdo_onnx"
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["images"] == {"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    assert inputs["image_files"]["datatype"] == "BYTES"
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert "classification" in client.get_server_metadata()["extensions"]


def test_infer_equals_predict_for_tensors_and_files(server: Server, setup: Setup) -> None:
    predicted = cli("predict", setup.onnx, *setup.pngs, "--json", "--provider", "cpu")
    want = np.array([r["logits"] for r in json.loads(predicted.stdout)], dtype=np.float32)
    client = server.client()
    from_files = _logits(client, _files(setup.pngs))
    np.testing.assert_allclose(from_files, want, atol=1e-5, rtol=0)
    pixels = np.stack([np.asarray(Image.open(p), np.float32)[None] / 255 for p in setup.pngs])
    for binary in (True, False):  # Triton's binary extension, and plain JSON
        got = _logits(client, _tensor(pixels, binary), binary)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_the_classification_extension(server: Server, setup: Setup) -> None:
    client = server.client()
    logits = _logits(client, _tensor(setup.images[:3]))
    out = httpclient.InferRequestedOutput("logits", binary_data=True, class_count=3)
    result = client.infer("m", [_tensor(setup.images[:3])], outputs=[out]).as_numpy("logits")
    assert result.shape == (3, 3)
    classes = load_classifier(setup.onnx, "cpu").classes
    for row, scores in zip(result, logits, strict=True):
        top = np.argsort(-scores, kind="stable")[:3]
        parts = [item.decode().split(":", 2) for item in row]
        assert [int(p[1]) for p in parts] == top.tolist()
        assert [p[2] for p in parts] == [classes[i] for i in top]
        np.testing.assert_allclose([float(p[0]) for p in parts], scores[top], atol=1e-5)


def _status(call: object) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status())


def test_bad_requests_are_refused_and_the_server_keeps_serving(server: Server,
                                                               setup: Setup) -> None:
    client = server.client()
    good = _tensor(setup.images[:2])
    wrong_shape = _tensor(np.zeros((2, 1, 14, 14), np.float32))
    wrong_type = httpclient.InferInput("images", [1, 1, 28, 28], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float64))
    wrong_name = httpclient.InferInput("pixels", [1, 1, 28, 28], "FP32")
    wrong_name.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    nan = _tensor(np.full((1, 1, 28, 28), np.nan, np.float32))
    undecodable = httpclient.InferInput("image_files", [1], "BYTES")
    undecodable.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    for bad in (wrong_shape, wrong_type, wrong_name, nan, undecodable):
        assert _status(lambda b=bad: client.infer("m", [b])) == "400"
        assert _logits(client, good).shape == (2, 10)  # still serving
    too_big = _tensor(np.zeros((400, 1, 28, 28), np.float32))  # 1.25 MB > the 1 MiB limit
    assert _status(lambda: client.infer("m", [too_big])) == "413"
    assert _status(lambda: client.infer("nope", [good])) == "404"
    assert _logits(client, good).shape == (2, 10)


def test_concurrent_clients_get_their_own_results(server: Server, setup: Setup) -> None:
    """16 clients x 20 single-image requests, joined into batches by the server: every
    result equals that image's result alone."""
    alone = load_classifier(setup.onnx, "cpu")
    images = setup.images

    def client_run(seed: int) -> list[tuple[int, np.ndarray]]:
        client = server.client()
        picks = np.random.default_rng(seed).integers(0, len(images), 20)
        return [(int(i), _logits(client, _tensor(images[i:i + 1]))[0]) for i in picks]

    with ThreadPoolExecutor(16) as pool:
        results = [r for rs in pool.map(client_run, range(16)) for r in rs]
    assert len(results) == 320
    for index, logits in results:
        np.testing.assert_allclose(logits, alone.predict(images[index:index + 1])[0],
                                   atol=1e-5, rtol=0)


def test_a_full_queue_answers_503_at_once(setup: Setup) -> None:
    served = _serve(setup.onnx, "--max-batch", "1", "--max-delay-ms", "0", "--max-queue", "1")
    try:
        big = np.repeat(setup.images[:1], 3000, axis=0)
        codes: list[str] = []

        def busy() -> None:
            _logits(served.client(), _tensor(big))

        worker = threading.Thread(target=busy)
        worker.start()
        time.sleep(1.0)  # the big batch runs; the queue holds one request, refuses the next

        def small() -> str:
            try:
                _logits(served.client(), _tensor(setup.images[:1]))
                return "200"
            except InferenceServerException as exc:
                return str(exc.status())

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: small(), range(4)))
        worker.join()
        assert "503" in codes and "200" in codes, codes
        assert _logits(served.client(), _tensor(setup.images[:1])).shape == (1, 10)
    finally:
        code, err = _stop(served)
    assert code == 0, err


def test_sigterm_finishes_the_requests_in_flight(setup: Setup) -> None:
    served = _serve(setup.onnx, "--max-batch", "64")
    batch = np.repeat(setup.images[:4], 200, axis=0)

    def request(_: int) -> tuple[int, ...]:
        return _logits(served.client(), _tensor(batch)).shape

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(request, i) for i in range(4)]
        time.sleep(0.5)
        served.process.send_signal(signal.SIGTERM)
        shapes = [f.result(timeout=120) for f in futures]
    assert shapes == [(800, 10)] * 4
    _, err = served.process.communicate(timeout=60)
    assert served.process.returncode == 0 and "Traceback" not in err, err


def test_the_batcher_fails_only_the_request_that_fails() -> None:
    def run(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise RuntimeError("bad input")
        return x.reshape(len(x), -1)[:, :2] * 2

    batcher = Batcher(run, max_batch=8, max_delay=0.2, queue_size=8)
    try:
        good = [batcher.submit(np.full((1, 1, 2, 2), v, np.float32)) for v in (1.0, 2.0)]
        bad = batcher.submit(np.full((1, 1, 2, 2), -1.0, np.float32))
        assert [f.result(5)[0, 0] for f in good] == [2.0, 4.0]
        with pytest.raises(RuntimeError, match="bad input"):
            bad.result(5)
    finally:
        batcher.close()
    full = Batcher(lambda x: (time.sleep(0.5), x)[1], max_batch=1, max_delay=0, queue_size=1)
    try:
        first = full.submit(np.zeros((1, 1)))
        time.sleep(0.1)
        full.submit(np.zeros((1, 1)))
        with pytest.raises(QueueFull):
            full.submit(np.zeros((1, 1)))
        first.result(5)
    finally:
        full.close()


def _model_config_schema() -> object:
    """Triton's ModelConfig protobuf, from the tritonclient package (its grpc folder holds
    the generated module; loaded by file so grpcio is not needed)."""
    import importlib.util

    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ModelConfig


def test_the_triton_repository_parses_and_holds_the_verified_artifact(setup: Setup,
                                                                      tmp_path: Path) -> None:
    from google.protobuf import text_format

    from epdo.exporters.triton import write_repository

    model = write_repository(setup.onnx, tmp_path / "repo", max_batch_size=32)
    assert model == tmp_path / "repo" / "quickstart"
    config = text_format.Parse((model / "config.pbtxt").read_text(), _model_config_schema()())
    assert config.name == "quickstart" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32 and config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [1, 28, 28])]
    assert [(o.name, list(o.dims), o.label_filename) for o in config.output] == [
        ("logits", [10], "labels.txt")]
    assert (model / "1" / "model.onnx").read_bytes() == setup.onnx.read_bytes()
    classes = load_classifier(setup.onnx, "cpu").classes
    assert (model / "labels.txt").read_text().splitlines() == classes


def test_export_writes_the_triton_repository(setup: Setup, tmp_path: Path) -> None:
    from epdo.zoo import load_spec

    spec = load_spec("quickstart")
    run = tmp_path / "run"
    assert cli("train", "quickstart", "--epochs", "1", "--out", run).exit_code == 0
    result = cli("export", run, "-o", tmp_path / "q.onnx", "--triton", tmp_path / "repo")
    assert result.exit_code == 0, result.stderr
    written = tmp_path / "repo" / spec.name / "1" / "model.onnx"
    assert written.read_bytes() == (tmp_path / "q.onnx").read_bytes()
    card = (tmp_path / "q.onnx.md").read_text()  # the run's accuracy from its summary
    assert "best test accuracy" in card and "at epoch 1 of 1" in card
    refused_ts = cli("export", run, "-f", "torchscript", "-o", tmp_path / "q.ts", "--triton",
                     tmp_path / "repo2")
    assert refused_ts.exit_code == 2 and "--format onnx" in refused_ts.stderr
    assert not (tmp_path / "repo2").exists() and not (tmp_path / "q.ts").exists()
