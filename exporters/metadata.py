"""Artifact metadata: what an exported model carries about itself, reading it back, and
checking that the artifact is what was exported.

Every format carries the same dict (keys in :data:`METADATA_KEYS`):

- ONNX: ``model.metadata_props``, one entry per key, every value a JSON-encoded string
  (``json.loads`` each value to get the dict back);
- TorchScript, ``.pt2`` and ``.aoti.pt2``: the extra file ``epdo.json`` (``extra/epdo.json``
  in the zip) holding the JSON object of the dict.

The trust model. ``epdo.verification.graph_sha256`` is a SHA-256 digest written at export
time: for ONNX, of the graph's deterministic serialization (weights included, metadata
excluded); for TorchScript, of every entry of the archive but ``extra/epdo.json`` and the
random ``.data/serialization_id``, and of the declared input shape, which a TorchScript
graph does not fix (:func:`torchscript_digest`); for ``.pt2`` and ``.aoti.pt2`` the same
digest of their zip (:mod:`epdo.exporters.pt2`, which also says what a ``.pt2`` must be
before torch loads it). Reading an artifact
(``epdo info``, ``epdo predict``, the classifiers) checks, before anything is run:

- the digest: a mismatch (a flipped byte, weights set to NaN) is always refused; a missing
  digest makes the artifact *unverified*, refused unless the caller trusts it
  (``trust=True``, ``--trust``);
- every metadata value's JSON and type (:func:`validate_metadata`): class names are strings,
  the input shape three positive whole numbers within
  :data:`~epdo.exporters.limits.MAX_MODEL_PIXELS`, normalization and scale finite, ...;
- that metadata and graph agree (:func:`check_graph_agreement`): as many class names as the
  graph has logits, the declared input shape the graph's.

The digest detects corruption and edits that did not also rewrite the metadata; it is not a
signature: whoever can write an artifact can write its digest, so an artifact is as
trustworthy as where it came from.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from epdo import __version__
from epdo.zoo.data.images import FITS
from epdo.zoo.errors import EpdoError
from epdo.zoo.spec import Spec

from .formats import AOTI, ONNX, PT2, TS_EXTRA_FILE, format_of
from .limits import MAX_ARCHIVE_INFLATION, MODEL_PIXELS

METADATA_KEYS = (
    "epdo.version",
    "epdo.spec_name",
    "epdo.spec",
    "epdo.classes",
    "epdo.input_shape",
    "epdo.input_mean",
    "epdo.input_std",
    "epdo.preprocess",
    "epdo.verification",
)

EXPORT_SCALE = 1 / 255
"""The pixel scale ``epdo export`` writes in ``epdo.preprocess`` (8-bit pixels to [0, 1])."""

DIGEST_KEY = "graph_sha256"
"""The key of ``epdo.verification`` that holds the artifact's SHA-256 digest."""

TRUST_ADVICE = "re-export it with epdo export, or pass --trust if you vouch for the file"
"""What to do about an unverified artifact (the end of its error message)."""

_TS_UNDIGESTED = (f"extra/{TS_EXTRA_FILE}", ".data/serialization_id")


class ExportError(EpdoError, RuntimeError):
    """An export that failed or did not verify; ``report`` holds the figures when known."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ArtifactError(ExportError):
    """An artifact that cannot be read: missing, truncated, tampered or not epdo's."""


class UnverifiedArtifactError(ArtifactError):
    """An artifact without a digest: refused unless the caller trusts it."""


def build_metadata(spec: Spec, classes: list[str], verification: dict[str, Any]) -> dict[str, Any]:
    """The metadata dict (decoded values) of an artifact of ``spec``."""
    c = spec.input.channels
    mean, std = spec.input.normalization()  # one per channel (the schema's)
    h, w = spec.input.height, spec.input.width
    return {
        "epdo.version": __version__,
        "epdo.spec_name": spec.name,
        "epdo.spec": spec.resolved(),
        "epdo.classes": list(classes),
        "epdo.input_shape": [c, h, w],
        "epdo.input_mean": mean,
        "epdo.input_std": std,
        "epdo.preprocess": {
            "color": "rgb" if c == 3 else "grayscale",
            "size": [h, w],
            "scale": EXPORT_SCALE,
            "fit": spec.input.fit,
            "normalized_in_graph": True,
        },
        "epdo.verification": verification,
    }


def encode_onnx_props(metadata: dict[str, Any]) -> dict[str, str]:
    """Every value JSON-encoded, for ONNX ``metadata_props``."""
    return {k: json.dumps(v, sort_keys=True) for k, v in metadata.items()}


def artifact_format(path: str | os.PathLike[str]) -> str:
    """``onnx``, ``torchscript``, ``pt2`` or ``aoti`` from the file suffix
    (:func:`~epdo.exporters.formats.format_of`); ArtifactError otherwise."""
    format = format_of(path)
    if format is None:
        suffix = Path(path).suffix.lower()
        raise ArtifactError(
            f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected .onnx, .ts, "
            ".pt2 or .aoti.pt2"
        )
    return format


def graph_digest(model: Any) -> str:
    """SHA-256 of an ONNX model's graph (deterministic serialization; metadata excluded)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _show(value: Any, limit: int = 60) -> str:
    """A value for an error message: its repr on one line, cut at ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_artifact_bytes(path: str | os.PathLike[str], error: type[EpdoError] | None = None,
                        what: str = "file") -> bytes:
    """The bytes of an artifact file, read once (what is checked is what is run);
    ``error`` (ArtifactError by default) when it is missing (``"<path>: no such <what>"``)
    or not a regular file (a FIFO is never waited on)."""
    from .files import open_regular

    error = error or ArtifactError
    try:
        with open_regular(path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise error(f"{path}: no such {what}") from exc
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or _first_line(exc)}") from exc


# --------------------------------------------------------------------------- metadata values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def decode_metadata(raw: dict[str, str], where: str | os.PathLike[str], *,
                    complete: bool = True) -> dict[str, Any]:
    """The ``epdo.*`` values of ONNX ``metadata_props`` (JSON strings), decoded; other keys
    are left out. ``complete``: every key of :data:`METADATA_KEYS` must be there.

    Raises:
        ArtifactError: a missing key (when ``complete``) or a value that is not JSON.
    """
    missing = [k for k in METADATA_KEYS if k not in raw]
    if complete and missing:
        raise ArtifactError(f"{where}: not an epdo artifact (metadata lacks "
                            f"{', '.join(missing)})")
    out: dict[str, Any] = {}
    for key in METADATA_KEYS:
        if key not in raw:
            continue
        try:
            out[key] = json.loads(raw[key])
        except (TypeError, ValueError, RecursionError) as exc:
            raise ArtifactError(f"{where}: metadata {key} is not valid JSON (tampered?): "
                                f"{_show(raw[key])}") from exc
    return out


def _numbers(meta: dict[str, Any], key: str, channels: int | None, where: Any,
             positive: bool = False) -> None:
    value = meta[key]
    lengths = {1, channels} if channels else None
    if (not isinstance(value, list) or not value or not all(_is_finite(v) for v in value)
            or (lengths and len(value) not in lengths) or (positive and min(value) <= 0)):
        counts = f"1 or {channels} " if channels and channels != 1 else "1 " if channels else ""
        sign = "positive " if positive else ""
        raise ArtifactError(f"{where}: metadata {key} must be a list of {counts}finite "
                            f"{sign}numbers, got {_show(value)}")


def _input_shape(meta: dict[str, Any], where: Any) -> tuple[int, int, int] | None:
    if "epdo.input_shape" not in meta:
        return None
    shape = meta["epdo.input_shape"]
    if (not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(d) for d in shape)
            or min(shape) < 1):
        raise ArtifactError(f"{where}: metadata epdo.input_shape must be [C, H, W], three "
                            f"positive whole numbers, got {_show(shape)}")
    c, h, w = shape
    if c not in (1, 3):
        raise ArtifactError(f"{where}: metadata epdo.input_shape {shape}: {c} channels; "
                            "served models take 1 (grayscale) or 3 (RGB)")
    limit = MODEL_PIXELS.value()
    if h * w > limit:
        raise ArtifactError(f"{where}: metadata epdo.input_shape {shape} declares {h * w:,} "
                            f"pixels per input, over the limit of {limit:,} "
                            f"({MODEL_PIXELS.advice()})")
    return c, h, w


def _preprocess(meta: dict[str, Any], shape: tuple[int, int, int] | None, where: Any) -> None:
    pre = meta["epdo.preprocess"]
    key = "epdo.preprocess"
    if not isinstance(pre, dict):
        raise ArtifactError(f"{where}: metadata {key} must be a JSON object, got {_show(pre)}")
    color = pre.get("color")
    if "color" in pre and color not in ("grayscale", "rgb"):
        raise ArtifactError(f"{where}: metadata {key}.color must be \"grayscale\" or \"rgb\", "
                            f"got {_show(color)}")
    if "color" in pre and shape is not None and shape[0] != (1 if color == "grayscale" else 3):
        raise ArtifactError(f"{where}: metadata {key}.color {color!r} does not fit the "
                            f"{shape[0]} input channels of epdo.input_shape")
    if "size" in pre:
        size = pre["size"]
        if (not isinstance(size, list) or len(size) != 2 or not all(_is_int(d) for d in size)
                or (shape is not None and tuple(size) != shape[1:])):
            want = f"[{shape[1]}, {shape[2]}] as in epdo.input_shape" if shape else "[H, W]"
            raise ArtifactError(f"{where}: metadata {key}.size must be {want}, "
                                f"got {_show(size)}")
    if "scale" in pre and not (_is_finite(pre["scale"]) and pre["scale"] > 0):
        raise ArtifactError(f"{where}: metadata {key}.scale must be a finite positive number, "
                            f"got {_show(pre['scale'])}")
    if "fit" in pre and pre["fit"] not in FITS:
        raise ArtifactError(f"{where}: metadata {key}.fit must be one of "
                            f"{', '.join(map(repr, FITS))}, got {_show(pre['fit'])}")
    if "normalized_in_graph" in pre and not isinstance(pre["normalized_in_graph"], bool):
        raise ArtifactError(f"{where}: metadata {key}.normalized_in_graph must be true or "
                            f"false, got {_show(pre['normalized_in_graph'])}")
    ver = meta.get("epdo.verification")
    if isinstance(ver, dict) and DIGEST_KEY in ver:
        # epdo export wrote it: 8-bit pixels scaled by 1/255, normalization in the graph;
        # anything else would silently change what the verified graph is given
        if "scale" in pre and abs(pre["scale"] - EXPORT_SCALE) > 1e-12:
            raise ArtifactError(f"{where}: metadata {key}.scale {pre['scale']!r} is not the "
                                "1/255 epdo export writes (tampered?)")
        if pre.get("normalized_in_graph") is False:
            raise ArtifactError(f"{where}: metadata {key}.normalized_in_graph is false, but "
                                "epdo export puts the normalization in the graph (tampered?)")


_VERIFICATION_TYPES: dict[str, tuple[str, Any]] = {
    "format": ("a string", lambda v: isinstance(v, str)),
    "opset": ("a whole number or null", lambda v: v is None or _is_int(v)),
    "atol": ("a number", _is_number),
    "max_abs": ("a number", _is_number),
    "max_rel": ("a number", _is_number),
    "agreement": ("a number", _is_number),
    "rotation_max_rel": ("a number or null", lambda v: v is None or _is_number(v)),
    "real_images": ("a string", lambda v: isinstance(v, str)),
    "checks": ("a list of objects with a whole number batch",
               lambda v: isinstance(v, list) and all(isinstance(c, dict)
                                                    and _is_int(c.get("batch")) for c in v)),
    "passed": ("true", lambda v: v is True),
    "torch_version": ("a string", lambda v: isinstance(v, str)),
    "compiled_for": ("an object of strings",
                     lambda v: isinstance(v, dict) and all(isinstance(x, str)
                                                           for x in v.values())),
    DIGEST_KEY: ("64 hexadecimal digits",
                 lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None),
}


def _verification(meta: dict[str, Any], where: Any) -> None:
    ver = meta["epdo.verification"]
    if not isinstance(ver, dict):
        raise ArtifactError(f"{where}: metadata epdo.verification must be a JSON object, "
                            f"got {_show(ver)}")
    for key, (want, ok) in _VERIFICATION_TYPES.items():
        if key in ver and not ok(ver[key]):
            raise ArtifactError(f"{where}: metadata epdo.verification.{key} must be {want}, "
                                f"got {_show(ver[key])}")


def validate_metadata(meta: dict[str, Any], where: str | os.PathLike[str], *,
                      complete: bool = True) -> dict[str, Any]:
    """Check the type and range of every decoded metadata value; returns ``meta`` as it is.

    ``complete``: every key of :data:`METADATA_KEYS` must be there (a trusted artifact may
    lack some; those present are checked all the same).

    Raises:
        ArtifactError: one line naming the file and the key, e.g. ``epdo.classes must be a
            list of class names (strings)``, an input shape over the size limit, a
            preprocessing that does not fit the shape.
    """
    missing = [k for k in METADATA_KEYS if k not in meta]
    if complete and missing:
        raise ArtifactError(f"{where}: not an epdo artifact (metadata lacks "
                            f"{', '.join(missing)})")
    for key in ("epdo.version", "epdo.spec_name"):
        if key in meta and not isinstance(meta[key], str):
            raise ArtifactError(f"{where}: metadata {key} must be a string, "
                                f"got {_show(meta[key])}")
    if "epdo.spec" in meta and not isinstance(meta["epdo.spec"], dict):
        raise ArtifactError(f"{where}: metadata epdo.spec must be a JSON object, "
                            f"got {_show(meta['epdo.spec'])}")
    if "epdo.classes" in meta:
        classes = meta["epdo.classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str)
                                                                   for c in classes):
            raise ArtifactError(f"{where}: metadata epdo.classes must be a non-empty list of "
                                f"class names (strings), got {_show(classes)}")
    shape = _input_shape(meta, where)
    for key, positive in (("epdo.input_mean", False), ("epdo.input_std", True)):
        if key in meta:
            _numbers(meta, key, shape[0] if shape else None, where, positive)
    if "epdo.preprocess" in meta:
        _preprocess(meta, shape, where)
    if "epdo.verification" in meta:
        _verification(meta, where)
    return meta


def check_digest(meta: dict[str, Any], actual: str, where: str | os.PathLike[str], *,
                 trust: bool = False) -> bool:
    """Compare the digest recorded at export with ``actual``; True when they are equal.

    A missing digest returns False when ``trust`` (the caller vouches for the file) and
    raises UnverifiedArtifactError otherwise; a different digest always raises ArtifactError.
    """
    ver = meta.get("epdo.verification")
    expected = ver.get(DIGEST_KEY) if isinstance(ver, dict) else None
    if expected is None:
        if trust:
            return False
        raise UnverifiedArtifactError(
            f"{where}: unverified artifact: its metadata has no epdo.verification."
            f"{DIGEST_KEY} digest; {TRUST_ADVICE}")
    if expected != actual:
        raise ArtifactError(f"{where}: the model does not match the digest recorded at export "
                            "(tampered or corrupted); re-export it from its checkpoint")
    return True


def check_graph_agreement(meta: dict[str, Any], input_dims: Sequence[int | None] | None,
                          num_logits: int | None, where: str | os.PathLike[str]) -> None:
    """The metadata against what the graph says: ``input_dims`` ``(C, H, W)`` of its input
    (None for a dimension it leaves open) and its number of logits (None when open).

    Raises:
        ArtifactError: the declared input shape is not the graph's, or there are not as many
            class names as logits.
    """
    shape = meta.get("epdo.input_shape")
    if shape is not None and input_dims is not None:
        if len(input_dims) != 3 or any(d is not None and d != s
                                       for d, s in zip(input_dims, shape, strict=True)):
            dims = ", ".join("?" if d is None else str(d) for d in input_dims)
            raise ArtifactError(f"{where}: metadata epdo.input_shape {shape} does not match "
                                f"the graph's input (batch, {dims})")
    classes = meta.get("epdo.classes")
    if classes is not None and num_logits is not None and len(classes) != num_logits:
        raise ArtifactError(f"{where}: metadata epdo.classes has {len(classes)} class names "
                            f"but the model returns {num_logits} logits")


# --------------------------------------------------------------------------- ONNX


def parse_onnx(data: bytes, where: str | os.PathLike[str]) -> Any:
    """An ONNX ``ModelProto`` from the bytes of a file, checked by ``onnx.checker``; refuses
    weights kept in external files (the digest could not cover them).

    Raises:
        ArtifactError: not protobuf, not a valid model, external data.
    """
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ArtifactError(f"{where}: not a loadable ONNX model (truncated or corrupted?): "
                            f"{_first_line(exc)}") from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError
        raise ArtifactError(f"{where}: not a loadable ONNX model (invalid: "
                            f"{_first_line(exc)})") from exc
    if _uses_external_data(model.graph):
        raise ArtifactError(f"{where}: the model keeps tensors in external data files, which "
                            "epdo does not load (its digest could not cover them)")
    return model


def _uses_external_data(graph: Any) -> bool:
    import onnx

    def external(tensor: Any) -> bool:
        return tensor.data_location == onnx.TensorProto.EXTERNAL

    if any(external(t) for t in graph.initializer):
        return True
    for node in graph.node:
        for attr in node.attribute:
            if (attr.HasField("t") and external(attr.t)) or any(external(t)
                                                                for t in attr.tensors):
                return True
            if attr.HasField("g") and _uses_external_data(attr.g):
                return True
            if any(_uses_external_data(g) for g in attr.graphs):
                return True
    return False


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Load and check an ONNX file; ArtifactError (one line) when unreadable or invalid."""
    return parse_onnx(read_artifact_bytes(path), path)


def onnx_props(model: Any, where: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model as a dict; ArtifactError for a key given
    twice (readers could disagree on which one counts)."""
    props: dict[str, str] = {}
    for prop in model.metadata_props:
        if prop.key in props:
            raise ArtifactError(f"{where}: metadata key {_show(prop.key)} appears twice "
                                "(tampered?)")
        props[prop.key] = prop.value
    return props


def onnx_io(model: Any, where: str | os.PathLike[str]) -> tuple[str, list[int | None],
                                                                str, list[int | None]]:
    """``(input name, input dims, output name, output dims)`` of an ONNX model: the input
    ``images`` (else the first graph input that is no initializer) and the output ``logits``
    (else the first); a dimension the graph leaves open is None."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs or not graph.output:
        raise ArtifactError(f"{where}: the ONNX graph has no input or no output")

    def pick(values: Sequence[Any], name: str) -> Any:
        return next((v for v in values if v.name == name), values[0])

    def dims(value: Any) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None
                for d in value.type.tensor_type.shape.dim]

    inp, out = pick(inputs, "images"), pick(graph.output, "logits")
    return inp.name, dims(inp), out.name, dims(out)


def check_onnx_model(model: Any, where: str | os.PathLike[str], *, trust: bool = False,
                     complete: bool = True) -> dict[str, Any]:
    """The decoded and checked metadata of a parsed ONNX artifact: types and sizes, the
    digest (see :func:`check_digest` for ``trust``), and agreement with the graph (input
    ``(batch, C, H, W)`` and ``(batch, classes)`` logits). ArtifactError otherwise."""
    meta = validate_metadata(decode_metadata(onnx_props(model, where), where,
                                             complete=complete), where, complete=complete)
    check_digest(meta, graph_digest(model), where, trust=trust)
    _, in_dims, _, out_dims = onnx_io(model, where)
    if meta:
        if len(in_dims) != 4:
            raise ArtifactError(f"{where}: the graph's input has {len(in_dims)} dimensions, "
                                "expected 4 (batch, C, H, W)")
        if len(out_dims) != 2:
            raise ArtifactError(f"{where}: the graph's output has {len(out_dims)} "
                                "dimensions, expected 2 (batch, classes)")
        check_graph_agreement(meta, in_dims[1:], out_dims[1], where)
    return meta


def read_onnx_metadata(path: str | os.PathLike[str], trust: bool = False) -> dict[str, Any]:
    """The decoded metadata of an ONNX artifact, after checking the model, its metadata and
    its digest (:func:`check_onnx_model`)."""
    return check_onnx_model(load_onnx(path), path, trust=trust)


# --------------------------------------------------------------------------- TorchScript


def _archive_root(zf: zipfile.ZipFile, size: int, where: Any,
                  kind: str = "TorchScript archive") -> str:
    """The one top folder of a torch zip archive (``kind`` names it in messages: a
    TorchScript archive, a torch.export program, an AOTInductor package); ArtifactError for
    an archive torch would not have written (entries outside one folder, a name twice,
    overlapping entries, compression other than deflate, or deflated entries that inflate by
    more than :data:`~epdo.exporters.limits.MAX_ARCHIVE_INFLATION`)."""
    infos = zf.infolist()
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if not infos or len(roots) != 1 or any("/" not in info.filename for info in infos):
        raise ArtifactError(f"{where}: not a {kind} (its entries are not in one folder)")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise ArtifactError(f"{where}: corrupted {kind} (an entry name appears twice)")
    if any(info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
           for info in infos):
        raise ArtifactError(f"{where}: not a {kind} as torch writes it (entries compressed "
                            "other than by deflate)")
    if sum(info.compress_size for info in infos) > size:
        raise ArtifactError(f"{where}: corrupted {kind} (overlapping entries)")
    inflated = sum(max(0, info.file_size - info.compress_size) for info in infos)
    if inflated > MAX_ARCHIVE_INFLATION:
        raise ArtifactError(f"{where}: its compressed entries would inflate by {inflated:,} "
                            f"bytes, over the limit of {MAX_ARCHIVE_INFLATION:,} (a zip bomb?)")
    return roots.pop()


def _entries_digest(zf: zipfile.ZipFile, root: str) -> Any:
    """SHA-256 (a hashlib object) over the archive's entries in name order (name, size,
    bytes), all but the metadata and the per-save serialization id; reading checks every
    CRC."""
    digest = hashlib.sha256()
    skip = {f"{root}/{name}" for name in _TS_UNDIGESTED}
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        if info.filename in skip:
            continue
        name = info.filename[len(root) + 1:].encode("utf-8")
        digest.update(len(name).to_bytes(8, "little") + name
                      + info.file_size.to_bytes(8, "little"))
        with zf.open(info) as entry:
            while chunk := entry.read(1 << 20):
                digest.update(chunk)
    return digest


def _ts_digest(entries: Any, input_shape: Any) -> str:
    """The TorchScript digest: the entries' and the declared input shape's (a TorchScript
    graph does not fix the size of its input, so the digest does)."""
    digest = entries.copy()
    digest.update(b"\0epdo.input_shape\0" + json.dumps(input_shape).encode("utf-8"))
    return digest.hexdigest()


def _read_archive(data: Any, size: int, where: Any) -> tuple[Any, str | None]:
    """``(entries digest, epdo.json text or None)`` of a TorchScript archive (bytes or
    path); ArtifactError (one line) when it is no archive torch would have written."""
    try:
        with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as zf:
            root = _archive_root(zf, size, where)
            entries = _entries_digest(zf, root)
            name = f"{root}/extra/{TS_EXTRA_FILE}"
            text = zf.read(name).decode("utf-8") if name in zf.namelist() else None
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError,
            NotImplementedError) as exc:
        raise ArtifactError(f"{where}: not a loadable TorchScript model (truncated or "
                            f"corrupted?): {_first_line(exc)}") from exc
    return entries, text


def torchscript_digest(path: str | os.PathLike[str]) -> str:
    """The digest a TorchScript artifact records in ``epdo.verification.graph_sha256``: the
    SHA-256 of every archive entry but ``extra/epdo.json`` and ``.data/serialization_id``
    (in name order: name, size, bytes), then of the declared ``epdo.input_shape``."""
    entries, text = _read_archive(path, os.path.getsize(path), path)
    try:
        shape = json.loads(text or "{}").get("epdo.input_shape")
    except (ValueError, AttributeError, RecursionError):
        shape = None
    return _ts_digest(entries, shape)


def decode_extra_metadata(text: str | None, where: str | os.PathLike[str], *,
                          complete: bool = True) -> dict[str, Any]:
    """The checked metadata of a zip artifact (TorchScript, ``.pt2``) from the text of its
    ``extra/epdo.json`` (None: the entry is missing, an error when ``complete``): valid JSON,
    an object, and every known key's type (:func:`validate_metadata`); unknown keys dropped."""
    if text is None:
        if complete:
            raise ArtifactError(f"{where}: not an epdo artifact (no extra/{TS_EXTRA_FILE})")
        raw: Any = {}
    else:
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ArtifactError(f"{where}: {TS_EXTRA_FILE} is not valid JSON") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where}: {TS_EXTRA_FILE} is not a JSON object")
    return validate_metadata({k: raw[k] for k in METADATA_KEYS if k in raw}, where,
                             complete=complete)


def check_torchscript_archive(data: bytes, where: str | os.PathLike[str], *,
                              trust: bool = False, complete: bool = True) -> dict[str, Any]:
    """The decoded and checked metadata (``extra/epdo.json``) of a TorchScript artifact's
    bytes: archive structure and CRCs, types and sizes, the digest (see
    :func:`check_digest` for ``trust``). Nothing is run. ArtifactError otherwise."""
    entries, text = _read_archive(data, len(data), where)
    meta = decode_extra_metadata(text, where, complete=complete)
    check_digest(meta, _ts_digest(entries, meta.get("epdo.input_shape")), where, trust=trust)
    return meta


def read_torchscript_metadata(path: str | os.PathLike[str],
                              trust: bool = False) -> dict[str, Any]:
    """The decoded metadata of a TorchScript artifact, checked as
    :func:`check_torchscript_archive` says (read from the zip, nothing run)."""
    return check_torchscript_archive(read_artifact_bytes(path), path, trust=trust)


def save_torchscript(module: Any, path: str | os.PathLike[str],
                     metadata: dict[str, Any]) -> str:
    """Save a TorchScript ``module`` at ``path`` with ``metadata`` in ``extra/epdo.json``,
    its ``epdo.verification`` completed with the archive's digest; returns the digest.

    Saving is deterministic but for the entries the digest leaves out, so the digest of a
    first save is that of the second, which carries it (and is checked to).
    """
    import torch

    def save(meta: dict[str, Any]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
            torch.jit.save(module, str(path),
                           _extra_files={TS_EXTRA_FILE: json.dumps(meta, sort_keys=True)})

    save(metadata)
    digest = torchscript_digest(path)
    ver = {**metadata.get("epdo.verification", {}), DIGEST_KEY: digest}
    save({**metadata, "epdo.verification": ver})
    if torchscript_digest(path) != digest:
        raise ArtifactError(f"{path}: TorchScript saved different bytes twice; cannot "
                            "record its digest")
    return digest


def read_metadata(path: str | os.PathLike[str], trust: bool = False) -> dict[str, Any]:
    """The metadata dict of an artifact (``.onnx``, ``.ts``, ``.pt2`` or ``.aoti.pt2``),
    values decoded, after every check of the module docstring (nothing is run; a ``.pt2``
    is checked as :mod:`epdo.exporters.pt2` says).

    Args:
        path: the artifact.
        trust: accept an artifact without a digest (a digest that does not match is
            refused all the same).

    Raises:
        ArtifactError: unknown suffix, missing file or not a regular file, truncated or
            tampered artifact, missing keys, wrong types, metadata that disagrees with the
            graph; UnverifiedArtifactError (an ArtifactError) for a missing digest. The
            message is one line.
    """
    format = artifact_format(path)
    if format == ONNX:
        return read_onnx_metadata(path, trust)
    if format in (PT2, AOTI):
        from .pt2 import read_pt2_metadata

        return read_pt2_metadata(path, trust, compiled=format == AOTI)
    return read_torchscript_metadata(path, trust)


__all__ = [
    "DIGEST_KEY",
    "METADATA_KEYS",
    "ArtifactError",
    "ExportError",
    "UnverifiedArtifactError",
    "artifact_format",
    "build_metadata",
    "check_digest",
    "check_graph_agreement",
    "check_onnx_model",
    "check_torchscript_archive",
    "decode_metadata",
    "encode_onnx_props",
    "graph_digest",
    "load_onnx",
    "onnx_io",
    "parse_onnx",
    "read_metadata",
    "save_torchscript",
    "torchscript_digest",
    "validate_metadata",
]
