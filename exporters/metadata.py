"""Artifact metadata: what an exported model carries about itself, and reading it back.

Both formats carry the same dict (keys in :data:`METADATA_KEYS`):

- ONNX: ``model.metadata_props``, one entry per key, every value a JSON-encoded string
  (``json.loads`` each value to get the dict back);
- TorchScript: the extra file ``epdo.json`` holding the JSON object of the dict.

``epdo.verification`` also records ``graph_sha256`` for ONNX (the SHA-256 of the graph's
deterministic serialization), so :func:`read_metadata` notices an artifact whose weights
were changed after export.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from epdo import __version__
from epdo.zoo.errors import EpdoError
from epdo.zoo.spec import Spec

from .formats import ONNX, TS_EXTRA_FILE, format_of

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


class ExportError(EpdoError, RuntimeError):
    """An export that failed or did not verify; ``report`` holds the figures when known."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ArtifactError(ExportError):
    """An artifact that cannot be read: missing, truncated, tampered or not epdo's."""


def build_metadata(spec: Spec, classes: list[str], verification: dict[str, Any]) -> dict[str, Any]:
    """The metadata dict (decoded values) of an artifact of ``spec``."""
    c = spec.input.channels
    mean, std = list(spec.input.mean), list(spec.input.std)  # one per channel (the schema's)
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
            "scale": 1 / 255,
            "normalized_in_graph": True,
        },
        "epdo.verification": verification,
    }


def encode_onnx_props(metadata: dict[str, Any]) -> dict[str, str]:
    """Every value JSON-encoded, for ONNX ``metadata_props``."""
    return {k: json.dumps(v, sort_keys=True) for k, v in metadata.items()}


def artifact_format(path: str | os.PathLike[str]) -> str:
    """``onnx`` or ``torchscript`` from the file suffix; ArtifactError otherwise."""
    format = format_of(path)
    if format is None:
        suffix = Path(path).suffix.lower()
        raise ArtifactError(
            f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected .onnx or .ts"
        )
    return format


def graph_digest(model: Any) -> str:
    """SHA-256 of an ONNX model's graph (deterministic serialization; metadata excluded)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Load and check an ONNX file; ArtifactError (one line) when unreadable or invalid."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ArtifactError(
            f"{path}: not a readable ONNX model (truncated or corrupted?): {_first_line(exc)}"
        ) from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError
        raise ArtifactError(f"{path}: invalid ONNX model: {_first_line(exc)}") from exc
    return model


def _decode(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    missing = [k for k in METADATA_KEYS if k not in raw]
    if missing:
        raise ArtifactError(f"{path}: not an epdo artifact (metadata lacks {', '.join(missing)})")
    out: dict[str, Any] = {}
    for key in METADATA_KEYS:
        try:
            out[key] = json.loads(raw[key])
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: metadata {key} is not valid JSON (tampered?)") from exc
    return out


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of an ONNX artifact, after checking the model and its digest."""
    model = load_onnx(path)
    meta = _decode(Path(path), {p.key: p.value for p in model.metadata_props})
    expected = (meta.get("epdo.verification") or {}).get("graph_sha256")
    if expected is not None and expected != graph_digest(model):
        raise ArtifactError(
            f"{path}: the graph does not match the digest recorded at export (tampered?)"
        )
    return meta


def read_torchscript_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of a TorchScript artifact (read from the zip, nothing run)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ArtifactError(f"{path}: corrupted TorchScript archive (bad CRC in {bad})")
            names = [n for n in zf.namelist() if n.endswith(f"/extra/{TS_EXTRA_FILE}")]
            if not names:
                raise ArtifactError(f"{path}: not an epdo artifact (no extra/{TS_EXTRA_FILE})")
            text = zf.read(names[0]).decode("utf-8")
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path}: not a readable TorchScript archive (truncated or corrupted?): "
            f"{_first_line(exc)}"
        ) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ArtifactError(f"{path}: {TS_EXTRA_FILE} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: {TS_EXTRA_FILE} is not a JSON object")
    return _decode(path, {k: json.dumps(v) for k, v in data.items()})


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata dict of an artifact (``.onnx`` or ``.ts``), values decoded.

    Raises:
        ArtifactError: unknown suffix, missing file, truncated or tampered artifact,
            missing keys; the message is one line.
    """
    if artifact_format(path) == ONNX:
        return read_onnx_metadata(path)
    return read_torchscript_metadata(path)
