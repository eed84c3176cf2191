"""Serving exported artifacts: onnxruntime (and TorchScript) classifiers with the artifact's
own preprocessing.

An exported artifact carries everything needed to serve it (see ``epdo export``):

- the graph takes ``images`` of shape ``(batch, C, H, W)``, float32 raw pixels in [0, 1]
  (the normalization ``(x - mean) / std`` is inside the graph) and returns ``logits`` of
  shape ``(batch, classes)``;
- its metadata (ONNX ``metadata_props``, each value a JSON string; TorchScript extra file
  ``epdo.json``) holds ``epdo.classes``, ``epdo.input_shape`` ``[C, H, W]`` and
  ``epdo.preprocess`` ``{"color": "grayscale"|"rgb", "size": [H, W], "scale": 1/255,
  "normalized_in_graph": true}``.

:class:`OnnxClassifier` runs an ``.onnx`` file in onnxruntime, :class:`TorchScriptClassifier`
a ``.ts`` file in PyTorch, :class:`PT2Classifier` a ``.pt2`` program or ``.aoti.pt2``
AOTInductor package in PyTorch; all share the interface of :class:`Classifier`:
``predict`` (logits), ``predict_proba`` (softmax), ``predict_top_k`` and ``preprocess``
(an image file, a ``.npy`` file or an array -> ``(C, H, W)`` float32 in [0, 1]).
:func:`predict_files` classifies many files at once, keeping one error per bad file.

Loading checks the artifact before running anything (see :mod:`epdo.exporters.metadata`):
its digest (a missing one is refused unless ``trust=True``), the type of every metadata
value, and that metadata and graph agree; then one plain gray input is run, whose logits must
be finite and as many as the class names. Inputs are bounded before they are decoded
(:mod:`epdo.exporters.limits`): an image's pixel count from its header, a ``.npy`` file's
shape from its header (it must be the model's) and its data against the file's size; only
regular files are read (a FIFO or a device is an input error, never a hang).
"""

from __future__ import annotations

import abc
import io
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from epdo.zoo.data.images import ImageError, decode_image, model_pixels
from epdo.zoo.errors import EpdoError

from .files import open_regular
from .formats import AOTI, PT2, TORCHSCRIPT, format_of
from .limits import MAX_BATCH_BYTES
from .metadata import (
    DIGEST_KEY,
    ArtifactError,
    check_onnx_model,
    check_torchscript_archive,
    onnx_io,
    parse_onnx,
    read_artifact_bytes,
    validate_metadata,
)

__all__ = [
    "Classifier",
    "FilePrediction",
    "InputError",
    "OnnxClassifier",
    "PT2Classifier",
    "Prediction",
    "Preprocessing",
    "ServingError",
    "TorchScriptClassifier",
    "load_classifier",
    "predict_files",
    "preprocess_input",
    "resolve_onnx_providers",
    "softmax",
]

PROVIDERS = ("auto", "cpu", "cuda")
DEFAULT_BATCH_SIZE = 64
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


class ServingError(EpdoError):
    """A model that cannot be loaded or served (bad file, unavailable provider, bad input)."""


class InputError(ServingError):
    """One input (file or array) that cannot be turned into a model input."""


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model inputs, read from the artifact's metadata.

    Attributes:
        channels: C of the model input (1 for ``grayscale``, 3 for ``rgb``).
        size: ``(H, W)`` of the model input; image files are fitted to it as ``fit``
            says (:mod:`epdo.zoo.data.images`, the conversion training used).
        color: ``"grayscale"`` or ``"rgb"``: the Pillow mode (``L`` / ``RGB``) images are
            converted to.
        scale: factor from 8-bit pixel values to [0, 1] (``1/255``).
        fit: ``resize`` or ``center_crop`` (artifacts written before it existed: resize).
        mean, std: per-channel normalization; applied by the runtime only when
            ``normalized_in_graph`` is false (the exporter puts it inside the graph).
    """

    channels: int
    size: tuple[int, int]
    color: str = "grayscale"
    scale: float = 1.0 / 255.0
    fit: str = "resize"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    normalized_in_graph: bool = True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one model input."""
        return (self.channels, *self.size)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any],
                      input_shape: Sequence[int] | None = None) -> Preprocessing:
        """The preprocessing of an artifact from its decoded metadata.

        ``input_shape`` (``[C, H, W]`` of the graph) is the fallback when the metadata has
        no ``epdo.input_shape``. The values are checked as
        :func:`epdo.exporters.metadata.validate_metadata` does (types, finite numbers, the
        size limit). Raises ServingError when they are wrong or neither gives a shape.
        """
        where = "the model"
        try:
            validate_metadata(metadata, where, complete=False)
            shape = metadata.get("epdo.input_shape", input_shape)
            if shape is None or len(shape) != 3 or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                raise ServingError(f"the model does not say its input shape [C, H, W] "
                                   f"(epdo.input_shape: {shape!r})")
            if "epdo.input_shape" not in metadata:  # the graph's: the same checks
                validate_metadata({**metadata, "epdo.input_shape": list(shape)}, where,
                                  complete=False)
        except ArtifactError as exc:
            raise ServingError(str(exc)) from exc
        channels, height, width = (int(d) for d in shape)
        pre = metadata.get("epdo.preprocess") or {}
        color = pre.get("color", "grayscale" if channels == 1 else "rgb")
        mean = tuple(float(m) for m in metadata.get("epdo.input_mean", [0.0]))
        std = tuple(float(s) for s in metadata.get("epdo.input_std", [1.0]))
        return cls(channels=channels, size=(height, width), color=color,
                   scale=float(pre.get("scale", 1.0 / 255.0)),
                   fit=str(pre.get("fit", "resize")), mean=mean, std=std,
                   normalized_in_graph=bool(pre.get("normalized_in_graph", True)))


def _scaled(pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8 pixels times ``scale`` as float32; the exporter's 1/255 is a division by 255,
    as in training (:func:`epdo.zoo.transforms.to_unit_range`), so both give the same bits."""
    divisor = 1.0 / scale
    values = pixels.astype(np.float32)
    if abs(divisor - round(divisor)) < 1e-6:
        return np.ascontiguousarray(values / np.float32(round(divisor)))
    return np.ascontiguousarray(values * np.float32(scale))


def _image_to_array(image: Any, pre: Preprocessing) -> np.ndarray:
    """A Pillow image -> ``(C, H, W)`` float32: the model's pixels
    (:func:`~epdo.zoo.data.images.model_pixels`, as in training) times ``pre.scale``."""
    try:
        pixels = model_pixels(image, pre.channels, pre.size, pre.fit)
    except ImageError as exc:
        raise InputError(str(exc)) from exc
    return _scaled(pixels, pre.scale)


def _array_to_input(array: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """An array (H, W), (C, H, W) or (H, W, C), uint8 or float in [0, 1] -> ``(C, H, W)``."""
    array = np.asarray(array)
    c, h, w = pre.input_shape
    if array.dtype == np.uint8:
        values = _scaled(array, pre.scale)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise InputError("the array holds NaN or infinite values")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise InputError(f"float values must lie in [0, 1], got [{values.min():.3g}, "
                             f"{values.max():.3g}] (or store uint8 pixels)")
    else:
        raise InputError(f"expected uint8 or float pixels, got dtype {array.dtype}")
    if values.shape == (c, h, w):
        return np.ascontiguousarray(values)
    if c == 1 and values.shape == (h, w):
        return np.ascontiguousarray(values[None])
    if values.shape == (h, w, c):
        return np.ascontiguousarray(values.transpose(2, 0, 1))
    raise _shape_error(values.shape, pre)


def preprocess_input(source: str | os.PathLike[str] | np.ndarray | Any,
                     pre: Preprocessing) -> np.ndarray:
    """One model input ``(C, H, W)`` float32 in [0, 1] from an image, a file or an array.

    Args:
        source: a path to an image Pillow reads (PNG, JPEG, ...: converted to grayscale or
            RGB, resized bilinearly to the model size, scaled by ``pre.scale``), a path to
            a ``.npy`` file or a numpy array (uint8, or float in [0, 1]; shape (H, W) for
            one-channel models, (C, H, W) or (H, W, C); not resized), or a Pillow image.
        pre: the artifact's preprocessing.

    Raises:
        InputError: unreadable file, not an image, wrong dtype, range or shape.
    """
    if isinstance(source, np.ndarray):
        return _array_to_input(source, pre)
    if not isinstance(source, (str, os.PathLike)):
        from PIL import Image

        if isinstance(source, Image.Image):
            return _image_to_array(source, pre)
        raise InputError(f"cannot preprocess a {type(source).__name__}")
    path = Path(source)
    try:
        file = open_regular(path)
    except OSError as exc:
        raise InputError(exc.strerror or _first_line(exc)) from exc
    with file:
        if path.suffix.lower() == ".npy":
            return _array_to_input(_read_npy(file, pre), pre)
        return _read_image(file, pre)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shape_error(shape: tuple[int, ...], pre: Preprocessing) -> InputError:
    c, h, w = pre.input_shape
    accepted = f"({h}, {w}), " if c == 1 else ""
    return InputError(f"expected shape {accepted}({c}, {h}, {w}) or ({h}, {w}, {c}), "
                      f"got {tuple(shape)}")


def _read_npy(file: Any, pre: Preprocessing) -> np.ndarray:
    """The array of an open ``.npy`` file, its header checked before any data is read: a
    shape the model takes, uint8 or float, and as many data bytes as the header declares
    (a crafted header cannot make it allocate more than one model input)."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(file)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(file)
        else:
            raise InputError(f"not a readable .npy array (format version {version} is not "
                             "supported; save it with numpy.save)")
    except InputError:
        raise
    except Exception as exc:  # a crafted header: ValueError, SyntaxError, EOFError, ...
        raise InputError(f"not a readable .npy array ({_first_line(exc)})") from exc
    if dtype.hasobject or not (dtype == np.uint8 or dtype.kind == "f"):
        raise InputError(f"expected uint8 or float pixels, got dtype {dtype}")
    c, h, w = pre.input_shape
    shape = tuple(shape)
    if shape not in {(c, h, w), (h, w, c)} | ({(h, w)} if c == 1 else set()):
        raise _shape_error(shape, pre)
    nbytes = math.prod(shape) * dtype.itemsize
    data = file.read(nbytes)
    if len(data) < nbytes:
        raise InputError(f"truncated .npy file: its header declares {nbytes:,} bytes of data, "
                         f"the file holds {len(data):,}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_image(file: Any, pre: Preprocessing) -> np.ndarray:
    """One model input from an open image file, read exactly as training read its images
    (:func:`~epdo.zoo.data.images.decode_image`: the header's pixel count checked against
    :data:`~epdo.exporters.limits.MAX_IMAGE_PIXELS` before anything is decoded)."""
    try:
        pixels, _ = decode_image(file, pre.channels, pre.size, pre.fit)
    except ImageError as exc:
        raise InputError(str(exc)) from exc
    return _scaled(pixels, pre.scale)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits, computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """One of the top-k classes of one input."""

    index: int
    label: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        """``{"class", "index", "probability"}``: the JSON form used by ``epdo predict``."""
        return {"class": self.label, "index": self.index, "probability": self.probability}


@dataclass
class FilePrediction:
    """The result for one input file: top-k classes and logits, or an error."""

    input: str
    top_k: list[Prediction] = field(default_factory=list)
    logits: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether this input was predicted."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """``{"input", "top_k", "logits"}`` (plus ``"error"`` when it failed)."""
        data: dict[str, Any] = {"input": self.input,
                                "top_k": [p.to_dict() for p in self.top_k],
                                "logits": self.logits}
        if self.error is not None:
            data["error"] = self.error
        return data


def _top_k(probabilities: np.ndarray, classes: Sequence[str], k: int) -> list[list[Prediction]]:
    k = max(1, min(int(k), probabilities.shape[-1]))
    rows = []
    for p in probabilities:
        order = np.argsort(-p, kind="stable")[:k]
        rows.append([Prediction(int(i), classes[int(i)], float(p[i])) for i in order])
    return rows


# --------------------------------------------------------------------------- classifiers


class Classifier(abc.ABC):
    """What every served artifact offers; subclasses implement :meth:`_run`.

    Attributes:
        path: the artifact file.
        metadata: its decoded, checked metadata (``epdo.*`` keys; a trusted artifact may
            lack some).
        verified: whether its digest was checked (False only for an artifact without one,
            loaded with ``trust=True``).
        classes: class names, one per logit.
        input_shape: ``(C, H, W)`` of one input.
        preprocessing: the :class:`Preprocessing` read from the metadata.
        providers: where it runs (onnxruntime provider names, or the torch device).
        batch_size: default number of inputs per run in :meth:`predict`.
    """

    path: Path
    metadata: dict[str, Any]
    verified: bool
    classes: list[str]
    preprocessing: Preprocessing
    providers: list[str]
    batch_size: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one model input."""
        return self.preprocessing.input_shape

    def _setup(self, metadata: dict[str, Any], graph_shape: Sequence[int] | None) -> None:
        """Preprocessing and classes from the (checked) metadata, then one run of a plain
        gray input: its logits must be finite, and as many as the class names."""
        self.metadata = metadata
        self.verified = DIGEST_KEY in (metadata.get("epdo.verification") or {})
        self.preprocessing = Preprocessing.from_metadata(metadata, graph_shape)
        probe = self._forward(np.full((1, *self.input_shape), 0.5, np.float32))
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise ServingError(f"{self.path}: the model returns an output of shape "
                               f"{tuple(probe.shape)} for one input, expected (1, classes)")
        if not np.all(np.isfinite(probe)):
            raise ServingError(f"{self.path}: the model returns non-finite logits (NaN or "
                               "infinity) for a plain gray input: its weights are broken; "
                               "re-export it from its checkpoint")
        num_logits = int(probe.shape[1])
        classes = metadata.get("epdo.classes")
        if classes is None:
            classes = [str(i) for i in range(num_logits)]
        if len(classes) != num_logits:
            raise ServingError(f"{self.path}: metadata epdo.classes has {len(classes)} class "
                               f"names but the model returns {num_logits} logits")
        self.classes = list(classes)

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(n, K)`` of one batch ``(n, C, H, W)`` float32 (already preprocessed)."""

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`_run`, its runtime's errors turned into one ServingError line."""
        try:
            return np.asarray(self._run(batch))
        except Exception as exc:  # onnxruntime's pybind errors, torch's RuntimeError, ...
            raise ServingError(f"{self.path}: the model failed to run on a batch of shape "
                               f"{tuple(batch.shape)}: {_first_line(exc)}") from exc

    def as_batch(self, array: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 from ``(N, C, H, W)``, ``(C, H, W)`` or (one channel)
        ``(H, W)``; raises InputError on any other shape."""
        x = np.asarray(array, dtype=np.float32)
        c, h, w = self.input_shape
        if x.shape == (c, h, w) or (c == 1 and x.shape == (h, w)):
            x = x.reshape(1, c, h, w)
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise InputError(f"expected an array (N, {c}, {h}, {w}), ({c}, {h}, {w})"
                             + (f" or ({h}, {w})" if c == 1 else "")
                             + f", got {tuple(x.shape)}")
        return np.ascontiguousarray(x)

    def _logits(self, array: np.ndarray, batch_size: int | None) -> np.ndarray:
        """Logits ``(N, K)`` float32, unchecked: rows may be non-finite."""
        x = self.as_batch(array)
        size = int(batch_size or self.batch_size)
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pre = self.preprocessing
        if not pre.normalized_in_graph:
            mean = np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)
            x = (x - mean) / std
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        outs = [self._forward(x[i:i + size]) for i in range(0, len(x), size)]
        out = np.concatenate(outs, axis=0).astype(np.float32, copy=False)
        if out.shape != (len(x), len(self.classes)):
            raise ServingError(f"{self.path}: the model returned logits of shape "
                               f"{tuple(out.shape)} for {len(x)} inputs, expected "
                               f"({len(x)}, {len(self.classes)})")
        return out

    def predict(self, array: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits ``(N, K)`` float32 of raw inputs in [0, 1] (see :meth:`as_batch`),
        run ``batch_size`` inputs at a time.

        Raises:
            InputError: an array of the wrong shape.
            ServingError: the model fails, or returns NaN or infinite logits (never passed
                on as probabilities).
        """
        out = self._logits(array, batch_size)
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if bad.size:
            raise ServingError(f"{self.path}: the model returned non-finite logits (NaN or "
                               f"infinity) for input {int(bad[0])} ({bad.size} of {len(out)} "
                               "inputs); the artifact may be broken")
        return out

    def predict_proba(self, array: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` (softmax of :meth:`predict`, float64)."""
        return softmax(self.predict(array, batch_size))

    def predict_top_k(self, array: np.ndarray, k: int = 5,
                      batch_size: int | None = None) -> list[list[Prediction]]:
        """The ``k`` most probable classes of every input, most probable first
        (``k`` is capped at the number of classes)."""
        return _top_k(self.predict_proba(array, batch_size), self.classes, k)

    def preprocess(self, source: str | os.PathLike[str] | np.ndarray | Any) -> np.ndarray:
        """One input ``(C, H, W)`` float32 in [0, 1] from an image file, a ``.npy`` file, an
        array or a Pillow image, as the metadata says (see :func:`preprocess_input`)."""
        return preprocess_input(source, self.preprocessing)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, input {list(self.input_shape)}, "
                f"{len(self.classes)} classes, providers {self.providers})")


def _gpu_present() -> bool:
    """Whether this machine has a CUDA GPU (asked to torch when installed)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of epdo
        return os.path.exists("/dev/nvidiactl")
    return bool(torch.cuda.is_available())


def resolve_onnx_providers(provider: str = "auto") -> list[str]:
    """onnxruntime providers for ``auto``, ``cpu`` or ``cuda``.

    ``auto`` prefers CUDAExecutionProvider when onnxruntime offers it (the
    ``onnxruntime-gpu`` package) and a GPU exists, with CPU as the fallback; ``cuda``
    requires it and raises ServingError, saying what to install, when it is missing.
    """
    if provider not in PROVIDERS:
        raise ServingError(f"unknown provider {provider!r}: choose auto, cpu or cuda")
    if provider == "cpu":
        return [_CPU]
    import onnxruntime

    has_cuda = _CUDA in onnxruntime.get_available_providers()
    if provider == "cuda":
        if not has_cuda:
            raise ServingError(
                "provider 'cuda' needs CUDAExecutionProvider, which this onnxruntime lacks "
                f"(available: {', '.join(onnxruntime.get_available_providers())}); install "
                "onnxruntime-gpu instead of onnxruntime: pip install 'epdo[serve-gpu]'")
        if not _gpu_present():
            raise ServingError("provider 'cuda': onnxruntime-gpu is installed but no CUDA "
                               "GPU is visible")
        return [_CUDA, _CPU]
    return [_CUDA, _CPU] if has_cuda and _gpu_present() else [_CPU]


def _read_model(path: Path) -> bytes:
    """The bytes of a model file, read once (what is checked is what is run)."""
    return read_artifact_bytes(path, ServingError, "model file")


class OnnxClassifier(Classifier):
    """An exported ``.onnx`` classifier served by onnxruntime.

    Args:
        path: the ``.onnx`` file.
        provider: ``auto`` (CUDA when onnxruntime-gpu is installed and a GPU exists, CPU
            otherwise), ``cpu`` or ``cuda`` (an error when CUDA is unavailable).
        batch_size: default inputs per run in :meth:`predict`.
        trust: accept an artifact without a digest (``--trust``); its metadata may then
            also be incomplete (the graph gives the input shape, logit indices the class
            names). A digest that does not match is refused all the same.

    Raises:
        ServingError: missing or invalid file, digest missing (without ``trust``) or not
            matching, metadata of the wrong type or disagreeing with the graph, non-finite
            logits, unavailable provider, no input shape.

    Example::

        clf = OnnxClassifier("model.onnx")
        x = clf.preprocess("digit.png")[None]         # (1, C, H, W) in [0, 1]
        clf.predict_top_k(x, k=3)[0][0].label         # the most probable class
    """

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, *, trust: bool = False) -> None:
        self.path = Path(path)
        self.batch_size = int(batch_size)
        requested = resolve_onnx_providers(provider)
        data = _read_model(self.path)
        try:
            proto = parse_onnx(data, self.path)
            metadata = check_onnx_model(proto, self.path, trust=trust, complete=not trust)
            self.input_name, in_dims, self.output_name, _ = onnx_io(proto, self.path)
        except ArtifactError as exc:
            raise ServingError(str(exc)) from exc
        del proto
        import onnxruntime

        from .ort_options import session_options

        options = session_options()  # epdo's serving options; errors only in the log
        try:
            self.session = onnxruntime.InferenceSession(data, sess_options=options,
                                                        providers=requested)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ServingError(f"{self.path}: not a loadable ONNX model "
                               f"({_first_line(exc)})") from exc
        self.providers = list(self.session.get_providers())
        if provider == "cuda" and _CUDA not in self.providers:
            raise ServingError("provider 'cuda': onnxruntime could not start "
                               "CUDAExecutionProvider (CUDA/cuDNN libraries missing?)")
        static = [d for d in in_dims[1:] if d is not None]
        self._setup(metadata, static if len(in_dims) == 4 and len(static) == 3 else None)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


class TorchScriptClassifier(Classifier):
    """An exported TorchScript ``.ts`` classifier run by PyTorch (metadata in the extra
    file ``epdo.json``).

    Args:
        path: the ``.ts`` file.
        provider: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``.
        batch_size: default inputs per run in :meth:`predict`.
        trust: accept an artifact without a digest (as :class:`OnnxClassifier`).
    """

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, *, trust: bool = False) -> None:
        import torch

        if provider not in PROVIDERS:
            raise ServingError(f"unknown provider {provider!r}: choose auto, cpu or cuda")
        if provider == "cuda" and not torch.cuda.is_available():
            raise ServingError("provider 'cuda': torch sees no CUDA GPU")
        use_cuda = provider == "cuda" or (provider == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.path = Path(path)
        self.batch_size = int(batch_size)
        data = _read_model(self.path)
        try:
            metadata = check_torchscript_archive(data, self.path, trust=trust,
                                                 complete=not trust)
        except ArtifactError as exc:
            raise ServingError(str(exc)) from exc
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
                self.module = torch.jit.load(io.BytesIO(data), map_location=self.device)
        except Exception as exc:  # torch raises RuntimeError and friends on bad archives
            raise ServingError(f"{self.path}: not a loadable TorchScript model "
                               f"({_first_line(exc)})") from exc
        self.module.eval()
        self.providers = [str(self.device)]
        self._setup(metadata, None)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()


class PT2Classifier(Classifier):
    """An exported ``torch.export`` classifier run by PyTorch: a ``.pt2`` program, or a
    ``.aoti.pt2`` AOTInductor package (compiled code); metadata in ``extra/epdo.json``.

    What it needs (:mod:`epdo.exporters.pt2`): a ``.pt2`` runs with a torch that reads its
    program format (the releases of the writer's series; the file records the writer), on
    the CPU or CUDA, without a compiler or epdo's model code. A ``.aoti.pt2`` runs with the
    torch release that compiled it, on the CPU only, of the platform, architecture and vector
    instruction set it was compiled for (checked before loading), without a compiler or
    Python model code. Loading a ``.pt2`` runs no code of the file's (it is checked first);
    loading a ``.aoti.pt2`` runs its compiled library, which no check can make safe (its
    digest shows it is intact, not who made it), so a package is loaded only with
    ``trust=True`` (``--trust``): for packages you built or whose source you trust.

    Args:
        path: the ``.pt2`` or ``.aoti.pt2`` file (the suffix says which).
        provider: ``auto`` (CUDA when torch sees a GPU, for a ``.pt2``; a package runs on
            the CPU), ``cpu`` or ``cuda`` (a ``.pt2`` only).
        batch_size: default inputs per run in :meth:`predict`.
        trust: you vouch for the file: accept an artifact without a digest (as
            :class:`OnnxClassifier`), and run an AOTInductor package's native code at all.

    Attributes:
        compiled: whether it is an AOTInductor package.
    """

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, *, trust: bool = False) -> None:
        import torch

        from .pt2 import check_pt2_archive, load_package, load_program

        if provider not in PROVIDERS:
            raise ServingError(f"unknown provider {provider!r}: choose auto, cpu or cuda")
        self.path = Path(path)
        self.batch_size = int(batch_size)
        self.compiled = format_of(self.path) == AOTI
        if self.compiled and provider == "cuda":
            raise ServingError(f"{self.path}: an AOTInductor package compiled for the CPU runs "
                               "on the CPU only; use --provider cpu, or the .pt2 program")
        if provider == "cuda" and not torch.cuda.is_available():
            raise ServingError("provider 'cuda': torch sees no CUDA GPU")
        use_cuda = not self.compiled and (provider == "cuda" or (
            provider == "auto" and torch.cuda.is_available()))
        self.device = torch.device("cuda" if use_cuda else "cpu")
        data = _read_model(self.path)
        try:
            metadata, contents = check_pt2_archive(data, self.path, compiled=self.compiled,
                                                   trust=trust, complete=not trust)
            if self.compiled and not trust:
                raise ServingError(
                    f"{self.path}: an AOTInductor package is native code that runs when it is "
                    "loaded; pass --trust (trust=True) if you built it or trust its source, "
                    "or serve the .pt2 program or the .onnx graph, which run no code of the "
                    "file's")
            self.module = (load_package(data, self.path) if self.compiled
                           else load_program(data, self.path, self.device))
        except ArtifactError as exc:
            raise ServingError(str(exc)) from exc
        del data
        self.providers = [str(self.device)]
        dims = contents.input_dims
        self._setup(metadata, list(dims) if dims and None not in dims else None)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()


def load_classifier(path: str | os.PathLike[str], provider: str = "auto",
                    batch_size: int = DEFAULT_BATCH_SIZE, *, trust: bool = False) -> Classifier:
    """The classifier for an artifact: TorchScript for ``.ts``/``.pt``/``.torchscript``,
    :class:`PT2Classifier` for ``.pt2``/``.aoti.pt2``
    (:data:`epdo.exporters.formats.SUFFIXES`), ONNX otherwise. ``trust`` accepts an
    artifact without a digest (see :class:`OnnxClassifier`)."""
    format = format_of(path)
    if format == TORCHSCRIPT:
        return TorchScriptClassifier(path, provider, batch_size, trust=trust)
    if format in (PT2, AOTI):
        return PT2Classifier(path, provider, batch_size, trust=trust)
    return OnnxClassifier(path, provider, batch_size, trust=trust)


def predict_files(classifier: Classifier, inputs: Iterable[str | os.PathLike[str]],
                  top_k: int = 5, batch_size: int | None = None) -> list[FilePrediction]:
    """Preprocess every input file, classify the good ones in batches, keep the others'
    errors: one :class:`FilePrediction` per input, in order.

    One bad input never costs the others their predictions: a file that cannot be read or
    decoded, or whose logits come out NaN or infinite, gets its ``error``. At most
    ``batch_size`` inputs (fewer when they would take more than
    :data:`~epdo.exporters.limits.MAX_BATCH_BYTES`) are held in memory at once.
    """
    results = [FilePrediction(input=str(p)) for p in inputs]
    per_input = 4 * math.prod(classifier.input_shape)
    size = max(1, min(int(batch_size or classifier.batch_size), MAX_BATCH_BYTES // per_input))
    for start in range(0, len(results), size):
        arrays: list[np.ndarray] = []
        good: list[FilePrediction] = []
        for result in results[start:start + size]:
            try:
                arrays.append(classifier.preprocess(result.input))
            except InputError as exc:
                result.error = str(exc)
            else:
                good.append(result)
        if not good:
            continue
        logits = classifier._logits(np.stack(arrays), size)
        del arrays
        finite = np.isfinite(logits).all(axis=1)
        top = iter(_top_k(softmax(logits[finite]), classifier.classes, top_k))
        for result, row, ok in zip(good, logits, finite, strict=True):
            if not ok:
                result.error = ("the model returned non-finite logits (NaN or infinity) for "
                                "this input")
                continue
            result.logits = [float(v) for v in row]
            result.top_k = next(top)
    return results
