"""What every artifact carries about itself, whatever its format: the metadata (one strict
schema), the digest check and the agreement of metadata and graph.

Every format stores the same dict (keys :data:`METADATA_KEYS`): ONNX in
``model.metadata_props`` (one entry per key, each value JSON-encoded), the zip formats in
the entry ``extra/epdo.json`` (one JSON object).

The trust model. ``epdo.verification.graph_sha256`` is a SHA-256 digest written at export
(each format says what it covers: :mod:`epdo.exporters.formats`). Reading an artifact
(``epdo info``, ``epdo predict``, serving) checks, before anything is run:

- every metadata value against :class:`Metadata` (types, ranges, the size limit
  :data:`~epdo.exporters.limits.MAX_MODEL_PIXELS`) and against each other
  (:func:`validate_metadata`);
- the digest (:func:`check_digest`): a mismatch is always refused; a missing digest makes the
  artifact *unverified*, refused unless the caller trusts it (``--trust``);
- that metadata and graph agree (:func:`check_graph_agreement`): the declared input shape is
  the graph's, there are as many class names as logits.

The digest detects corruption and edits that did not also rewrite it; it is not a
signature: whoever can write an artifact can write its digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from epdo import __version__
from epdo.zoo.errors import EpdoError
from epdo.zoo.spec.schema import FITS
from epdo.zoo.values import first_line, shown

from .limits import MODEL_PIXELS
from .tasks import output_shape, task_metadata, task_problem

__all__ = [
    "DIGEST_KEY",
    "EXPORT_SCALE",
    "EXTRA_FILE",
    "METADATA_DIGEST_KEY",
    "METADATA_KEYS",
    "REQUIRED_KEYS",
    "ArtifactError",
    "Contents",
    "ExportError",
    "InputError",
    "Metadata",
    "ServingError",
    "UnverifiedArtifactError",
    "build_metadata",
    "check_digest",
    "check_graph_agreement",
    "check_metadata_digest",
    "decode_props",
    "decode_text",
    "first_line",
    "metadata_digest",
    "read_artifact_bytes",
    "show",
    "validate_metadata",
    "with_metadata_digest",
]

REQUIRED_KEYS = ("epdo.version", "epdo.spec_name", "epdo.spec", "epdo.classes",
                 "epdo.input_shape", "epdo.input_mean", "epdo.input_std", "epdo.preprocess",
                 "epdo.verification")
"""The keys every epdo artifact has."""
METADATA_KEYS = (*REQUIRED_KEYS, "epdo.task", "epdo.output")
"""Every key epdo writes; the last two (:mod:`epdo.exporters.tasks`) are absent from
artifacts written before they existed (classifiers)."""
EXTRA_FILE = "epdo.json"
"""The zip formats' metadata entry (``extra/epdo.json`` under the archive's top folder)."""
DIGEST_KEY = "graph_sha256"
"""The key of ``epdo.verification`` that holds the digest of the model (its graph and
weights; each format says what exactly)."""
METADATA_DIGEST_KEY = "metadata_sha256"
"""The key of ``epdo.verification`` that holds the digest of the metadata itself
(:func:`metadata_digest`); artifacts written before it existed carry none."""
EXPORT_SCALE = 1 / 255
"""The pixel scale ``epdo export`` writes in ``epdo.preprocess`` (8-bit pixels to [0, 1])."""
TRUST_ADVICE = "re-export it with epdo export, or pass --trust if you vouch for the file"


class ExportError(EpdoError, RuntimeError):
    """An export that failed or did not verify; ``report`` holds the figures when known."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ArtifactError(ExportError):
    """An artifact that cannot be read: missing, truncated, tampered or not epdo's."""


class UnverifiedArtifactError(ArtifactError):
    """An artifact without a digest: refused unless the caller trusts it."""


class ServingError(EpdoError):
    """A model that cannot be loaded or served (bad file, unavailable provider, bad input)."""


class InputError(ServingError):
    """One input (file or array) that cannot be turned into a model input."""


def show(value: Any) -> str:
    """A value read from a file, for an error message: its repr, cut at 60 characters."""
    return shown(value, 60)


# --------------------------------------------------------------------------- the schema


def _must(text: str) -> Any:
    """A field that may be absent (its default, never validated) but, when present, must be
    what ``text`` says (its description: the error message quotes it); ``null`` is refused
    unless the field's type admits None."""
    return Field(default=None, description=text)


_Strict = ConfigDict(strict=True, extra="allow", populate_by_name=True)
_Number = Annotated[float, Field(strict=True)]
_Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Positive = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]
_Whole = Annotated[int, Field(strict=True)]
_Size = Annotated[int, Field(strict=True, ge=1)]


class Check(BaseModel):
    """One comparison recorded in ``epdo.verification.checks``."""

    model_config = _Strict
    batch: _Whole


class Verification(BaseModel):
    """``epdo.verification``: how well the artifact agreed with PyTorch at export."""

    model_config = _Strict
    format: str = _must("a string")
    opset: _Whole | None = _must("a whole number or null")
    atol: _Number = _must("a number")
    max_abs: _Number = _must("a number")
    max_rel: _Number = _must("a number")
    agreement: _Number = _must("a number")
    rotation_max_rel: _Number | None = _must("a number or null")
    rotation_max_abs: _Number | None = _must("a number or null")
    rotation_atol: _Number | None = _must("a number or null")
    min_agreement: _Number = _must("a number")
    real_images: str = _must("a string")
    checks: list[Check] = _must("a list of objects with a whole number batch")
    passed: Literal[True] = _must("true")
    torch_version: str = _must("a string")
    compiled_for: dict[str, str] = _must("an object of strings")
    graph_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = _must(
        "64 hexadecimal digits")
    metadata_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = _must(
        "64 hexadecimal digits")


class Preprocess(BaseModel):
    """``epdo.preprocess``: how a served image file becomes a model input."""

    model_config = _Strict
    color: Literal["grayscale", "rgb"] = _must('"grayscale" or "rgb"')
    size: Annotated[list[_Whole], Field(min_length=2, max_length=2)] = _must("[H, W]")
    scale: _Positive = _must("a finite positive number")
    fit: Literal[FITS] = _must(f"one of {', '.join(map(repr, FITS))}")  # type: ignore[valid-type]
    normalized_in_graph: bool = _must("true or false")


class Output(BaseModel):
    """``epdo.output``: the layout of the model's output (:mod:`epdo.exporters.tasks`)."""

    model_config = _Strict
    name: str = _must("a string")
    kind: Literal["vector", "map"] = _must('"vector" or "map"')
    shape: Annotated[list[_Size], Field(min_length=1, max_length=3)] = _must(
        "[K] or [K, H, W], positive whole numbers")


class Metadata(BaseModel):
    """The metadata of an artifact, one field per key of :data:`METADATA_KEYS` (each may be
    absent: a trusted artifact may lack some; a present one is never null). Strict: no value
    is converted."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    version: str = Field(None, alias="epdo.version", description="a string")
    spec_name: str = Field(None, alias="epdo.spec_name", description="a string")
    spec: dict[str, Any] = Field(None, alias="epdo.spec", description="a JSON object")
    classes: Annotated[list[str], Field(min_length=1)] = Field(
        None, alias="epdo.classes", description="a non-empty list of class names (strings)")
    input_shape: Annotated[list[_Size], Field(min_length=3, max_length=3)] = Field(
        None, alias="epdo.input_shape",
        description="[C, H, W], three positive whole numbers")
    input_mean: Annotated[list[_Finite], Field(min_length=1)] = Field(
        None, alias="epdo.input_mean", description="a list of finite numbers")
    input_std: Annotated[list[_Positive], Field(min_length=1)] = Field(
        None, alias="epdo.input_std", description="a list of finite positive numbers")
    preprocess: Preprocess = Field(None, alias="epdo.preprocess", description="a JSON object")
    verification: Verification = Field(None, alias="epdo.verification",
                                       description="a JSON object")
    task: Literal["classify", "segment"] = Field(None, alias="epdo.task",
                                                 description='"classify" or "segment"')
    output: Output = Field(None, alias="epdo.output", description="a JSON object")


def _schema_error(exc: ValidationError, meta: dict[str, Any], where: Any) -> ArtifactError:
    """The first schema error as one line: ``metadata <key path> must be <what>, got <value>``
    (the path stops at the first list index: the whole list is shown)."""
    loc = exc.errors()[0]["loc"]
    model: Any = Metadata
    names: list[str] = []
    value: Any = meta
    want = "valid"
    for part in loc:
        if not isinstance(part, str) or model is None:
            break
        info = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if info is None:
            break
        names.append(part)
        value = value.get(part) if isinstance(value, dict) else None
        want = info.description or want
        kinds = (info.annotation, *getattr(info.annotation, "__args__", ()))
        inner = [a for a in kinds if isinstance(a, type) and issubclass(a, BaseModel)]
        model = inner[0] if inner else None
    return ArtifactError(f"{where}: metadata {'.'.join(names)} must be {want}, "
                         f"got {show(value)}")


def _relations(meta: dict[str, Any], where: Any) -> None:
    """The checks between values: channels, the size limit, per-channel lengths, and the
    preprocessing that ``epdo export`` writes."""
    shape = meta.get("epdo.input_shape")
    if shape is not None:
        c, h, w = shape
        if c not in (1, 3):
            raise ArtifactError(f"{where}: metadata epdo.input_shape {shape}: {c} channels; "
                                "served models take 1 (grayscale) or 3 (RGB)")
        limit = MODEL_PIXELS.value()
        if h * w > limit:
            raise ArtifactError(f"{where}: metadata epdo.input_shape {shape} declares "
                                f"{h * w:,} pixels per input, over the limit of {limit:,} "
                                f"({MODEL_PIXELS.advice()})")
    for key, sign in (("epdo.input_mean", ""), ("epdo.input_std", "positive ")):
        values = meta.get(key)
        if values is not None and shape is not None and len(values) not in (1, shape[0]):
            counts = f"1 or {shape[0]} " if shape[0] != 1 else "1 "
            raise ArtifactError(f"{where}: metadata {key} must be a list of {counts}finite "
                                f"{sign}numbers, got {show(values)}")
    problem = task_problem(meta)
    if problem is not None:
        raise ArtifactError(f"{where}: metadata {problem}")
    pre = meta.get("epdo.preprocess")
    if pre is None:
        return
    key = "epdo.preprocess"
    color = pre.get("color")
    if color is not None and shape is not None and shape[0] != (1 if color == "grayscale" else 3):
        raise ArtifactError(f"{where}: metadata {key}.color {color!r} does not fit the "
                            f"{shape[0]} input channels of epdo.input_shape")
    size = pre.get("size")
    if size is not None and shape is not None and tuple(size) != tuple(shape[1:]):
        raise ArtifactError(f"{where}: metadata {key}.size must be [{shape[1]}, {shape[2]}] "
                            f"as in epdo.input_shape, got {show(size)}")
    ver = meta.get("epdo.verification") or {}
    if DIGEST_KEY in ver:  # epdo export wrote it: anything else would change the graph's input
        if "scale" in pre and abs(pre["scale"] - EXPORT_SCALE) > 1e-12:
            raise ArtifactError(f"{where}: metadata {key}.scale {pre['scale']!r} is not the "
                                "1/255 epdo export writes (tampered?)")
        if pre.get("normalized_in_graph") is False:
            raise ArtifactError(f"{where}: metadata {key}.normalized_in_graph is false, but "
                                "epdo export puts the normalization in the graph (tampered?)")


def _missing(meta: dict[str, Any], where: Any) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ArtifactError(f"{where}: not an epdo artifact (metadata lacks "
                            f"{', '.join(missing)})")


def validate_metadata(meta: dict[str, Any], where: str | os.PathLike[str], *,
                      complete: bool = True) -> dict[str, Any]:
    """Check decoded metadata against :class:`Metadata` and :func:`_relations`; returns
    ``meta`` unchanged. ``complete``: every key of :data:`REQUIRED_KEYS` must be there.

    Raises:
        ArtifactError: one line naming the file and the key, e.g. ``metadata epdo.classes
            must be a non-empty list of class names (strings), got 'cde'``.
    """
    if complete:
        _missing(meta, where)
    try:
        Metadata.model_validate(meta)
    except ValidationError as exc:
        raise _schema_error(exc, meta, where) from None
    _relations(meta, where)
    return meta


def _loads(text: str, what: str, where: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{where}: {what} is not valid JSON (tampered?): "
                            f"{show(text)}") from exc


def decode_props(raw: dict[str, str], where: Any, *, complete: bool = True) -> dict[str, Any]:
    """The checked metadata from ONNX ``metadata_props`` (key -> JSON text); other keys
    are left out."""
    if complete:
        _missing(raw, where)
    meta = {key: _loads(raw[key], f"metadata {key}", where)
            for key in METADATA_KEYS if key in raw}
    return validate_metadata(meta, where, complete=complete)


def decode_text(text: str | None, where: Any, *, complete: bool = True) -> dict[str, Any]:
    """The checked metadata from the text of a zip artifact's ``extra/epdo.json`` (None:
    absent, an error when ``complete``); unknown keys are left out."""
    if text is None:
        if complete:
            raise ArtifactError(f"{where}: not an epdo artifact (no extra/{EXTRA_FILE})")
        return {}
    raw = _loads(text, EXTRA_FILE, where)
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where}: {EXTRA_FILE} is not a JSON object")
    return validate_metadata({k: raw[k] for k in METADATA_KEYS if k in raw}, where,
                             complete=complete)


# --------------------------------------------------------------------------- digest, graph


@dataclass
class Contents:
    """What a format read from an artifact's bytes, before any check of its metadata.

    Attributes:
        metadata: the checked metadata (:func:`validate_metadata`).
        digest: the digest of what was read, for the declared input shape
            (``digest(input_shape) -> hex``).
        input_dims: ``(C, H, W)`` of the graph's input, None where it leaves one open or
            does not say (a compiled package).
        output_dims: the graph's output shape after the batch, ``(K,)`` or ``(K, H, W)``
            (None for an open dimension), None when it does not say.
        unsafe: the graph's operators outside the format's allow-list (a format whose
            graph is code, TorchScript): refused unless the user vouches for the file.
        notes: format-specific facts (an ONNX graph's input and output names, an
            AOTInductor package's build notes).
    """

    metadata: dict[str, Any]
    digest: Any
    input_dims: tuple[int | None, ...] | None = None
    output_dims: tuple[int | None, ...] | None = None
    unsafe: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


def metadata_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata: the canonical JSON (sorted keys, no spaces) of every key of
    :data:`METADATA_KEYS` present, ``epdo.verification`` without its two digests. It covers
    all a reader is told: class names, input shape, preprocessing, the spec, the
    verification figures."""
    ver = {k: v for k, v in (meta.get("epdo.verification") or {}).items()
           if k not in (DIGEST_KEY, METADATA_DIGEST_KEY)}
    body = {**{k: meta[k] for k in METADATA_KEYS if k in meta}, "epdo.verification": ver}
    body = json.loads(json.dumps(body))  # as a reader decodes it (tuples, non-string keys)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_metadata_digest(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with ``epdo.verification.metadata_sha256`` set (a new dict)."""
    ver = {**meta.get("epdo.verification", {}), METADATA_DIGEST_KEY: metadata_digest(meta)}
    return {**meta, "epdo.verification": ver}


def check_digest(meta: dict[str, Any], actual: str, where: str | os.PathLike[str], *,
                 trust: bool = False) -> bool:
    """Compare the model digest recorded at export with ``actual``; True when they are
    equal (the metadata's own digest: :func:`check_metadata_digest`).

    A missing model digest returns False when ``trust`` and raises UnverifiedArtifactError
    otherwise; a digest that does not match always raises ArtifactError.
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


def check_metadata_digest(meta: dict[str, Any], where: str | os.PathLike[str]) -> None:
    """The metadata against its digest, when it has one (ArtifactError when it differs)."""
    ver = meta.get("epdo.verification") or {}
    recorded = ver.get(METADATA_DIGEST_KEY)
    if recorded is not None and recorded != metadata_digest(meta):
        raise ArtifactError(f"{where}: its metadata does not match the digest recorded at "
                            "export (tampered or corrupted); re-export it from its checkpoint")


def check_graph_agreement(meta: dict[str, Any], input_dims: Sequence[int | None] | None,
                          output_dims: Sequence[int | None] | None,
                          where: str | os.PathLike[str]) -> None:
    """The metadata against the graph: ``input_dims`` ``(C, H, W)`` of its input and
    ``output_dims`` of its output after the batch (None for an open dimension; either None
    when the graph does not say).

    Raises:
        ArtifactError: the declared input shape is not the graph's, there are not as many
            class names as logits, or the declared output shape (``[K]``, or ``[K, H, W]``
            for a segmentation) is not the graph's.
    """
    shape = meta.get("epdo.input_shape")
    if shape is not None and input_dims is not None:
        if len(input_dims) != 3 or any(d is not None and d != s
                                       for d, s in zip(input_dims, shape, strict=True)):
            dims = ", ".join("?" if d is None else str(d) for d in input_dims)
            raise ArtifactError(f"{where}: metadata epdo.input_shape {shape} does not match "
                                f"the graph's input (batch, {dims})")
    declared = output_shape(meta)
    if declared is None or output_dims is None:
        return
    if len(output_dims) != len(declared) or any(
            d is not None and d != s for d, s in zip(output_dims[1:], declared[1:], strict=True)):
        dims = ", ".join("?" if d is None else str(d) for d in output_dims)
        raise ArtifactError(f"{where}: metadata epdo.output shape {declared} does not match "
                            f"the graph's output (batch, {dims})")
    if output_dims[0] is not None and output_dims[0] != declared[0]:
        raise ArtifactError(f"{where}: metadata epdo.classes has {declared[0]} class names "
                            f"but the model returns {output_dims[0]} logits")


# --------------------------------------------------------------------------- writing, reading


def build_metadata(spec: Any, classes: list[str], verification: dict[str, Any]) -> dict[str, Any]:
    """The metadata dict (decoded values) of an artifact of ``spec`` (a zoo Spec)."""
    c = spec.input.channels
    mean, std = spec.input.normalization()
    h, w = spec.input.height, spec.input.width
    return {
        "epdo.version": __version__,
        "epdo.spec_name": spec.name,
        "epdo.spec": spec.resolved(),
        "epdo.classes": list(classes),
        "epdo.input_shape": [c, h, w],
        "epdo.input_mean": mean,
        "epdo.input_std": std,
        "epdo.preprocess": {"color": "rgb" if c == 3 else "grayscale", "size": [h, w],
                            "scale": EXPORT_SCALE, "fit": spec.input.fit,
                            "normalized_in_graph": True},
        "epdo.verification": verification,
        **task_metadata(spec.plan.task, len(classes), (h, w)),
    }


def read_artifact_bytes(path: str | os.PathLike[str], error: type[EpdoError] | None = None,
                        what: str = "file") -> bytes:
    """The bytes of an artifact file, read once (what is checked is what is run); ``error``
    (ArtifactError by default) when it is missing or not a regular file (a FIFO is never
    waited on)."""
    from .files import open_regular

    error = error or ArtifactError
    try:
        with open_regular(path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise error(f"{path}: no such {what}") from exc
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or first_line(exc)}") from exc
