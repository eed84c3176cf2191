"""``epdo serve``: exported artifacts behind an Open Inference Protocol (KServe v2) endpoint,
the REST protocol of Triton, KServe, Seldon MLServer and TorchServe's KServe mode.

Routes (FastAPI on uvicorn, the ``serve`` extra):

- ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``: the server;
- ``GET /v2/models/{name}`` (metadata: inputs and outputs with names, datatypes, shapes),
  ``/v2/models/{name}/ready``, and ``POST /v2/models/{name}/infer`` (also under
  ``/versions/1``).

A model takes ONE input per request: ``images``, FP32 ``[N, C, H, W]`` raw pixels in [0, 1]
(the artifact's own input contract), or ``image_files``, BYTES ``[N]`` of encoded image files
decoded by the image reader of training and ``epdo predict`` (the artifact's fit and size).
It returns ``logits``, FP32 ``[N, classes]``, or for a segmentation artifact
``[N, classes, H, W]`` (the class scores of every pixel; the mask is their argmax over the
classes); a classifier's output asked for with the parameter ``classification: k``
(Triton's classification extension) is BYTES ``[N, k]`` of ``"score:index:label"``, the k
largest logits first, labelled with the artifact's class names. JSON bodies and Triton's
binary tensor data extension are both spoken (:mod:`epdo.exporters.oip`).

Concurrent requests are joined by a :class:`~epdo.exporters.batcher.Batcher` per model. What
goes wrong is one answer, and the server keeps serving: 400 (``{"error": ...}``) for a wrong
name, datatype, shape, a non-finite or out-of-range value, or an undecodable image; 404 for
an unknown model; 413 for a body over :data:`REQUEST_BYTES`; 400 for a request whose answer
would be over :data:`RESPONSE_BYTES` (a segmentation answers K floats per input pixel);
503 at once when the queue is full; 500 for a failure inside the model, for that request
only.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from epdo import __version__
from epdo.zoo.envlimits import Limit

from .artifact import InputError, ServingError
from .batcher import Batcher, QueueFull
from .oip import HEADER_LENGTH, InferRequest, Output, ProtocolError, decode_request
from .oip import encode_response as encode
from .preprocess import preprocess_input
from .runtime import Classifier

__all__ = ["REQUEST_BYTES", "RESPONSE_BYTES", "ServedModel", "create_app"]

REQUEST_BYTES = Limit(64 << 20, "EPDO_MAX_REQUEST_BYTES", "bytes")
"""The largest request body the server reads (64 MiB: 500 RGB images of 96 x 96 as FP32)."""
RESPONSE_BYTES = Limit(256 << 20, "EPDO_MAX_RESPONSE_BYTES", "bytes")
"""The largest answer, as FP32 logits, the server computes for one request (256 MiB: 1,500
segmentations of 11 classes at 64 x 64)."""
IMAGES, FILES, LOGITS = "images", "image_files", "logits"


@dataclass
class ServedModel:
    """One artifact being served: its classifier and its batcher."""

    name: str
    classifier: Classifier
    batcher: Batcher

    def metadata(self) -> dict[str, Any]:
        """The protocol's model metadata."""
        c, h, w = self.classifier.input_shape
        return {"name": self.name, "versions": ["1"],
                "platform": f"epdo_{self.classifier.format.name}",
                "inputs": [{"name": IMAGES, "datatype": "FP32", "shape": [-1, c, h, w]},
                           {"name": FILES, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": LOGITS, "datatype": "FP32",
                             "shape": [-1, *self.classifier.output_shape]}]}

    def images(self, request: InferRequest) -> np.ndarray:
        """The request's images ``(N, C, H, W)`` float32, checked (ProtocolError)."""
        if len(request.inputs) != 1:
            raise ProtocolError(f"send one input, '{IMAGES}' or '{FILES}'; got "
                                f"{len(request.inputs)}")
        tensor = request.inputs[0]
        c, h, w = self.classifier.input_shape
        if tensor.name == IMAGES and tensor.datatype == "FP32":
            if len(tensor.shape) != 4 or tuple(tensor.shape[1:]) != (c, h, w) \
                    or tensor.shape[0] < 1:
                raise ProtocolError(f"input '{IMAGES}': shape must be [N, {c}, {h}, {w}], got "
                                    f"{tensor.shape}")
            x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
            if not np.isfinite(x).all():
                raise ProtocolError(f"input '{IMAGES}': NaN or infinite values")
            if x.min() < 0.0 or x.max() > 1.0:
                raise ProtocolError(f"input '{IMAGES}': pixels must lie in [0, 1], got "
                                    f"[{x.min():.3g}, {x.max():.3g}]")
            return x
        if tensor.name == FILES and tensor.datatype == "BYTES":
            if len(tensor.shape) != 1 or tensor.shape[0] < 1:
                raise ProtocolError(f"input '{FILES}': shape must be [N], got {tensor.shape}")
            pre = self.classifier.preprocessing
            out = []
            for i, data in enumerate(tensor.data):
                try:
                    out.append(preprocess_input(io.BytesIO(data), pre))
                except InputError as exc:
                    raise ProtocolError(f"input '{FILES}' element {i}: {exc}") from None
            return np.stack(out)
        raise ProtocolError(f"unknown input '{tensor.name[:40]}' of datatype {tensor.datatype}; "
                            f"this model takes '{IMAGES}' (FP32 [N, {c}, {h}, {w}]) or "
                            f"'{FILES}' (BYTES [N])")

    def check_answer(self, count: int) -> None:
        """ProtocolError when the logits of ``count`` inputs would be over
        :data:`RESPONSE_BYTES`."""
        size, limit = 4 * count * math.prod(self.classifier.output_shape), RESPONSE_BYTES.value()
        if size > limit:
            raise ProtocolError(f"the answer to {count} inputs would be {size:,} bytes of "
                                f"logits, over the limit of {limit:,}; send fewer inputs per "
                                f"request ({RESPONSE_BYTES.advice()} on the server)")

    def outputs(self, request: InferRequest, logits: np.ndarray) -> list[tuple[Output, str,
                                                                               list[int], Any]]:
        """The requested outputs (``logits`` by default) of ``logits`` ``(N, K)`` (a
        segmentation's ``(N, K, H, W)``, which has no classification extension)."""
        wanted = request.outputs or [Output(LOGITS, request.binary_output)]
        result = []
        for out in wanted:
            if out.name != LOGITS:
                raise ProtocolError(f"unknown output '{out.name[:40]}'; this model returns "
                                    f"'{LOGITS}'")
            if not out.classification:
                result.append((out, "FP32", list(logits.shape), logits))
                continue
            if self.classifier.segments:
                raise ProtocolError(f"output '{LOGITS}': the classification extension labels "
                                    "whole images; this model segments (its logits are "
                                    "[N, classes, H, W]): ask for the tensor")
            k = min(out.classification, logits.shape[1])
            order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
            names = self.classifier.classes
            values = [f"{logits[n, i]:f}:{i}:{names[i]}".encode()
                      for n in range(len(logits)) for i in order[n]]
            result.append((out, "BYTES", [len(logits), k], values))
        return result


def _error(status: int, message: str) -> Any:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(models: Iterable[ServedModel]) -> FastAPI:
    """The FastAPI application serving ``models`` (see the module docstring)."""
    served = {m.name: m for m in models}
    app = FastAPI(title="epdo", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)

    def find(name: str, version: str) -> ServedModel | None:
        """The model served as ``name`` (version 1: each artifact is one version)."""
        return served.get(name) if version == "1" else None

    def unknown(name: str, version: str) -> Any:
        return _error(404, f"unknown model '{name[:60]}' (version {version[:10]})")

    @app.get("/v2")
    async def server_metadata() -> Any:
        return {"name": "epdo", "version": __version__,
                "extensions": ["classification", "binary_tensor_data"]}

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    async def health() -> Any:
        return Response(status_code=200)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = "1") -> Any:
        model = find(name, version)
        return unknown(name, version) if model is None else model.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = "1") -> Any:
        model = find(name, version)
        return unknown(name, version) if model is None else Response(status_code=200)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = "1") -> Any:
        model = find(name, version)
        if model is None:
            return unknown(name, version)
        limit = REQUEST_BYTES.value()
        body = await _body(request, limit)
        if body is None:
            return _error(413, f"the request body is over {limit:,} bytes "
                               f"({REQUEST_BYTES.advice()} on the server)")
        try:
            decoded = await run_in_threadpool(decode_request, body,
                                              request.headers.get(HEADER_LENGTH))
            images = await run_in_threadpool(model.images, decoded)
            model.check_answer(len(images))
            future = model.batcher.submit(images)
        except QueueFull as exc:
            return _error(503, str(exc))
        except ServingError as exc:
            return _error(400, str(exc))
        try:
            logits = await asyncio.wrap_future(future)
        except Exception as exc:  # the model failed on this request
            return _error(500, f"the model failed: {str(exc)[:300]}")
        try:
            outputs = model.outputs(decoded, np.asarray(logits, dtype=np.float32))
        except ServingError as exc:
            return _error(400, str(exc))
        content, length = encode(model.name, decoded.id, outputs)
        if length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(length)})

    @app.exception_handler(Exception)
    async def failed(request: Any, exc: Exception) -> Any:  # pragma: no cover - a bug
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    return app
