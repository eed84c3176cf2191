"""The Open Inference Protocol (KServe "v2", as Triton speaks it): decoding an infer request
and encoding its response, JSON or with Triton's binary tensor data extension.

A request body is JSON, or (binary extension) the JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw data of every input whose
``parameters.binary_data_size`` says how many bytes it takes, in input order. Tensors here:

- ``FP32``: float32 values, little-endian when binary, a flat (or nested) list in JSON;
- ``BYTES``: byte strings; binary as 4-byte little-endian length then the bytes, each; in
  JSON a list of strings, which for image files are base64 (JSON has no bytes).

A response is JSON, unless an output asks for binary data (``parameters.binary_data``, or
the request's ``parameters.binary_data_output``): then its data follows the JSON, whose
length is the response's ``Inference-Header-Content-Length``. Every malformed request is a
:class:`ProtocolError` with the one-line message the protocol returns as
``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .artifact import ServingError

__all__ = ["HEADER_LENGTH", "InferRequest", "Output", "ProtocolError", "Tensor",
           "decode_request", "encode_bytes", "encode_response"]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The header that says how long a binary-extension body's JSON part is."""
MAX_TENSORS = 16


class ProtocolError(ServingError):
    """A request the protocol refuses (HTTP 400 with ``{"error": message}``)."""


@dataclass
class Tensor:
    """One decoded input: its name, datatype, shape and values (a float32 array, or a list
    of byte strings for ``BYTES``)."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


@dataclass
class Output:
    """One requested output: its name, whether its data goes in binary, and the
    classification extension's ``k`` (0: the tensor itself)."""

    name: str
    binary: bool = False
    classification: int = 0


@dataclass
class InferRequest:
    """A decoded infer request."""

    id: str | None
    inputs: list[Tensor]
    outputs: list[Output] = field(default_factory=list)
    binary_output: bool = False


def _load_json(text: bytes) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the request is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise ProtocolError("the request must be a JSON object")
    return value


def _shape(spec: dict[str, Any], name: str) -> list[int]:
    shape = spec.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 31
                       for d in shape)):
        raise ProtocolError(f"input '{name}': shape must be a list of 1 to 8 whole numbers "
                            f">= 0, got {str(shape)[:60]}")
    return shape


def _bytes_elements(raw: bytes, count: int, name: str) -> list[bytes]:
    """``count`` length-prefixed byte strings from a binary BYTES tensor."""
    items, at = [], 0
    for _ in range(count):
        if at + 4 > len(raw):
            raise ProtocolError(f"input '{name}': its binary data ends inside an element")
        (size,) = struct.unpack_from("<I", raw, at)
        if at + 4 + size > len(raw):
            raise ProtocolError(f"input '{name}': an element declares {size:,} bytes beyond "
                                "the data")
        items.append(raw[at + 4:at + 4 + size])
        at += 4 + size
    if at != len(raw):
        raise ProtocolError(f"input '{name}': {len(raw) - at} bytes after its last element")
    return items


def _json_data(spec: dict[str, Any], datatype: str, count: int, name: str) -> Any:
    data = spec.get("data")
    if data is None:
        raise ProtocolError(f"input '{name}' has no data")
    flat = np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else None
    if flat is None or flat.size != count:
        raise ProtocolError(f"input '{name}': {0 if flat is None else flat.size} values for "
                            f"shape {spec.get('shape')} ({count} expected)")
    if datatype == "FP32":
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
            raise ProtocolError(f"input '{name}': FP32 data must be numbers")
        return flat.astype(np.float32)
    try:
        return [base64.b64decode(v, validate=True) for v in flat]
    except (binascii.Error, TypeError, ValueError):
        raise ProtocolError(f"input '{name}': BYTES data in JSON must be base64 strings "
                            "(image files); or send them as binary data") from None


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """An :class:`InferRequest` from a request body and its
    ``Inference-Header-Content-Length`` header (None: all JSON). Shapes, datatypes and data
    sizes are checked against each other; names and meaning against a model elsewhere."""
    if header_length is not None:
        if not header_length.isascii() or not header_length.isdigit() \
                or int(header_length) > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {header_length[:20]!r} does not fit a body "
                                f"of {len(body):,} bytes")
        split = int(header_length)
        head, binary = body[:split], memoryview(body)[split:]
    else:
        head, binary = body, memoryview(b"")
    request = _load_json(head)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_TENSORS:
        raise ProtocolError(f"'inputs' must be a list of 1 to {MAX_TENSORS} tensors")
    tensors, at = [], 0
    for spec in inputs:
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise ProtocolError("every input needs a 'name'")
        datatype = spec.get("datatype")
        if datatype not in ("FP32", "BYTES"):
            raise ProtocolError(f"input '{name}': datatype {str(datatype)[:20]!r} is not "
                                "served; send FP32 pixels or BYTES image files")
        shape = _shape(spec, name)
        count = math.prod(shape)
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or not \
                    0 <= size <= len(binary) - at:
                raise ProtocolError(f"input '{name}': binary_data_size {str(size)[:20]} does "
                                    "not fit the binary data sent")
            raw = bytes(binary[at:at + size])
            at += size
            if datatype == "FP32":
                if size != 4 * count:
                    raise ProtocolError(f"input '{name}': {size:,} bytes for {count:,} FP32 "
                                        f"values ({4 * count:,} expected)")
                data: Any = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            else:
                data = _bytes_elements(raw, count, name)
        else:
            data = _json_data(spec, datatype, count, name)
        tensors.append(Tensor(name, datatype, shape, data))
    if at != len(binary):
        raise ProtocolError(f"{len(binary) - at:,} bytes of binary data belong to no input")
    params = request.get("parameters") or {}
    binary_output = bool(isinstance(params, dict) and params.get("binary_data_output"))
    outputs = []
    for spec in request.get("outputs") or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError("every requested output needs a 'name'")
        p = spec.get("parameters") or {}
        k = p.get("classification", 0) if isinstance(p, dict) else 0
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ProtocolError(f"output '{spec['name']}': classification must be a whole "
                                f"number >= 0, got {str(k)[:20]}")
        outputs.append(Output(spec["name"], bool(isinstance(p, dict) and p.get("binary_data",
                                                                            binary_output)),
                              k))
    request_id = request.get("id")
    return InferRequest(request_id if isinstance(request_id, str) else None, tensors, outputs,
                        binary_output)


def encode_bytes(items: list[bytes]) -> bytes:
    """A BYTES tensor's binary form: each element as its 4-byte length then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def encode_response(model: str, request_id: str | None,
                    outputs: list[tuple[Output, str, list[int], Any]]) -> tuple[bytes, int | None]:
    """``(body, json length or None)`` of a response: each output as ``(requested, datatype,
    shape, values)`` (a float32 array, or byte strings for ``BYTES``), in binary when it was
    asked for so."""
    entries, blobs = [], []
    for out, datatype, shape, values in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": datatype, "shape": shape}
        if out.binary:
            blob = (encode_bytes(values) if datatype == "BYTES"
                    else np.ascontiguousarray(values, dtype="<f4").tobytes())
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [v.decode("utf-8") for v in values]
        else:
            entry["data"] = np.asarray(values, dtype=np.float32).reshape(-1).tolist()
        entries.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": entries}
    if request_id is not None:
        head["id"] = request_id
    text = json.dumps(head).encode("utf-8")
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)
