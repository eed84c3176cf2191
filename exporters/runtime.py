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
a ``.ts`` file in PyTorch; both share the interface of :class:`Classifier`:
``predict`` (logits), ``predict_proba`` (softmax), ``predict_top_k`` and ``preprocess``
(an image file, a ``.npy`` file or an array -> ``(C, H, W)`` float32 in [0, 1]).
:func:`predict_files` classifies many files at once, keeping one error per bad file.
"""

from __future__ import annotations

import abc
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from epdo.zoo.errors import EpdoError

from .formats import TORCHSCRIPT, TS_EXTRA_FILE, format_of

__all__ = [
    "Classifier",
    "FilePrediction",
    "InputError",
    "OnnxClassifier",
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
        size: ``(H, W)`` of the model input; image files are resized to it (bilinear).
        color: ``"grayscale"`` or ``"rgb"``: the Pillow mode (``L`` / ``RGB``) images are
            converted to.
        scale: factor from 8-bit pixel values to [0, 1] (``1/255``).
        mean, std: per-channel normalization; applied by the runtime only when
            ``normalized_in_graph`` is false (the exporter puts it inside the graph).
    """

    channels: int
    size: tuple[int, int]
    color: str = "grayscale"
    scale: float = 1.0 / 255.0
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
        no ``epdo.input_shape``. Raises ServingError when neither gives a shape.
        """
        shape = metadata.get("epdo.input_shape", input_shape)
        if shape is None or len(shape) != 3 or not all(isinstance(d, int) and d > 0
                                                       for d in shape):
            raise ServingError(f"the model does not say its input shape [C, H, W] "
                               f"(epdo.input_shape: {shape!r})")
        channels, height, width = (int(d) for d in shape)
        pre = metadata.get("epdo.preprocess") or {}
        color = pre.get("color", "grayscale" if channels == 1 else "rgb")
        if color not in ("grayscale", "rgb"):
            raise ServingError(f"unknown preprocess color {color!r} (grayscale or rgb)")
        expected_channels = 1 if color == "grayscale" else 3
        if expected_channels != channels:
            raise ServingError(f"preprocess color {color!r} does not fit {channels} input "
                               "channels")
        size = tuple(int(s) for s in pre.get("size", (height, width)))
        if size != (height, width):
            raise ServingError(f"preprocess size {list(size)} differs from the input shape "
                               f"{[channels, height, width]}")
        mean = tuple(float(m) for m in metadata.get("epdo.input_mean", [0.0]))
        std = tuple(float(s) for s in metadata.get("epdo.input_std", [1.0]))
        return cls(channels=channels, size=(height, width), color=color,
                   scale=float(pre.get("scale", 1.0 / 255.0)), mean=mean, std=std,
                   normalized_in_graph=bool(pre.get("normalized_in_graph", True)))


def _image_to_array(image: Any, pre: Preprocessing) -> np.ndarray:
    """A Pillow image -> ``(C, H, W)`` float32: converted to L/RGB, resized, scaled."""
    from PIL import Image

    image = image.convert("L" if pre.color == "grayscale" else "RGB")
    height, width = pre.size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) * np.float32(pre.scale)
    if pixels.ndim == 2:
        pixels = pixels[None]
    else:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _array_to_input(array: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """An array (H, W), (C, H, W) or (H, W, C), uint8 or float in [0, 1] -> ``(C, H, W)``."""
    array = np.asarray(array)
    c, h, w = pre.input_shape
    if array.dtype == np.uint8:
        values = array.astype(np.float32) * np.float32(pre.scale)
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
    accepted = f"({h}, {w}), " if c == 1 else ""
    raise InputError(f"expected shape {accepted}({c}, {h}, {w}) or ({h}, {w}, {c}), "
                     f"got {tuple(values.shape)}")


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
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise InputError(exc.strerror or str(exc)) from exc
        except ValueError as exc:
            raise InputError(f"not a readable .npy array ({exc})") from exc
        return _array_to_input(array, pre)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return _image_to_array(image, pre)
    except UnidentifiedImageError as exc:
        raise InputError("not an image file Pillow can read") from exc
    except OSError as exc:
        raise InputError(exc.strerror or f"cannot read the image ({exc})") from exc


# --------------------------------------------------------------------------- predictions


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


def _decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Metadata values are JSON strings; anything that does not parse is kept as text."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


class Classifier(abc.ABC):
    """What every served artifact offers; subclasses implement :meth:`_run`.

    Attributes:
        path: the artifact file.
        metadata: its decoded metadata (``epdo.*`` keys; empty when it has none).
        classes: class names, one per logit.
        input_shape: ``(C, H, W)`` of one input.
        preprocessing: the :class:`Preprocessing` read from the metadata.
        providers: where it runs (onnxruntime provider names, or the torch device).
        batch_size: default number of inputs per run in :meth:`predict`.
    """

    path: Path
    metadata: dict[str, Any]
    classes: list[str]
    preprocessing: Preprocessing
    providers: list[str]
    batch_size: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one model input."""
        return self.preprocessing.input_shape

    def _setup(self, metadata: dict[str, Any], graph_shape: Sequence[int] | None,
               num_classes: int | None) -> None:
        self.metadata = metadata
        self.preprocessing = Preprocessing.from_metadata(metadata, graph_shape)
        classes = metadata.get("epdo.classes")
        if classes is None:
            if num_classes is None:
                num_classes = int(self._run(np.zeros((1, *self.input_shape),
                                                     np.float32)).shape[-1])
            classes = [str(i) for i in range(num_classes)]
        self.classes = [str(c) for c in classes]

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(n, K)`` of one batch ``(n, C, H, W)`` float32 (already preprocessed)."""

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

    def predict(self, array: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits ``(N, K)`` float32 of raw inputs in [0, 1] (see :meth:`as_batch`),
        run ``batch_size`` inputs at a time."""
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
        outs = [self._run(x[i:i + size]) for i in range(0, len(x), size)]
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

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


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ServingError(f"{path}: no such model file")
    if not path.is_file():
        raise ServingError(f"{path}: not a file")


class OnnxClassifier(Classifier):
    """An exported ``.onnx`` classifier served by onnxruntime.

    Args:
        path: the ``.onnx`` file.
        provider: ``auto`` (CUDA when onnxruntime-gpu is installed and a GPU exists, CPU
            otherwise), ``cpu`` or ``cuda`` (an error when CUDA is unavailable).
        batch_size: default inputs per run in :meth:`predict`.

    Raises:
        ServingError: missing or invalid file, unavailable provider, no input shape.

    Example::

        clf = OnnxClassifier("model.onnx")
        x = clf.preprocess("digit.png")[None]         # (1, C, H, W) in [0, 1]
        clf.predict_top_k(x, k=3)[0][0].label         # the most probable class
    """

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.path = Path(path)
        self.batch_size = int(batch_size)
        requested = resolve_onnx_providers(provider)
        _check_file(self.path)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no provider-fallback chatter
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), sess_options=options,
                                                        providers=requested)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServingError(f"{self.path}: not a loadable ONNX model ({first})") from exc
        self.providers = list(self.session.get_providers())
        if provider == "cuda" and _CUDA not in self.providers:
            raise ServingError("provider 'cuda': onnxruntime could not start "
                               "CUDAExecutionProvider (CUDA/cuDNN libraries missing?)")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [i.name for i in inputs]
        self.input_name = "images" if "images" in names else names[0]
        out_names = [o.name for o in outputs]
        self.output_name = "logits" if "logits" in out_names else out_names[0]
        graph_shape = inputs[names.index(self.input_name)].shape[1:]
        static = [d for d in graph_shape if isinstance(d, int)]
        out_shape = outputs[out_names.index(self.output_name)].shape
        num_classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
        raw = self.session.get_modelmeta().custom_metadata_map
        self._setup(_decode_metadata(dict(raw)),
                    static if len(static) == 3 else None, num_classes)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


class TorchScriptClassifier(Classifier):
    """An exported TorchScript ``.ts`` classifier run by PyTorch (metadata in the extra
    file ``epdo.json``).

    Args:
        path: the ``.ts`` file.
        provider: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``.
        batch_size: default inputs per run in :meth:`predict`.
    """

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        import torch

        if provider not in PROVIDERS:
            raise ServingError(f"unknown provider {provider!r}: choose auto, cpu or cuda")
        if provider == "cuda" and not torch.cuda.is_available():
            raise ServingError("provider 'cuda': torch sees no CUDA GPU")
        use_cuda = provider == "cuda" or (provider == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.path = Path(path)
        self.batch_size = int(batch_size)
        _check_file(self.path)
        extra = {TS_EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
                self.module = torch.jit.load(str(self.path), map_location=self.device,
                                             _extra_files=extra)
        except Exception as exc:  # torch raises RuntimeError and friends on bad archives
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServingError(f"{self.path}: not a loadable TorchScript model ({first})") \
                from exc
        self.module.eval()
        try:
            metadata = json.loads(extra[TS_EXTRA_FILE] or "{}")
        except ValueError as exc:
            raise ServingError(f"{self.path}: unreadable {TS_EXTRA_FILE}") from exc
        self.providers = [str(self.device)]
        self._setup(metadata if isinstance(metadata, dict) else {}, None, None)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()


def load_classifier(path: str | os.PathLike[str], provider: str = "auto",
                    batch_size: int = DEFAULT_BATCH_SIZE) -> Classifier:
    """The classifier for an artifact: TorchScript for ``.ts``/``.pt``/``.torchscript``
    (:data:`epdo.exporters.formats.SUFFIXES`), ONNX otherwise."""
    if format_of(path) == TORCHSCRIPT:
        return TorchScriptClassifier(path, provider, batch_size)
    return OnnxClassifier(path, provider, batch_size)


def predict_files(classifier: Classifier, inputs: Iterable[str | os.PathLike[str]],
                  top_k: int = 5, batch_size: int | None = None) -> list[FilePrediction]:
    """Preprocess every input file, classify the good ones in batches, keep the others'
    errors: one :class:`FilePrediction` per input, in order."""
    results = [FilePrediction(input=str(p)) for p in inputs]
    arrays: list[np.ndarray] = []
    good: list[FilePrediction] = []
    for result in results:
        try:
            arrays.append(classifier.preprocess(result.input))
        except InputError as exc:
            result.error = str(exc)
        else:
            good.append(result)
    if good:
        logits = classifier.predict(np.stack(arrays), batch_size)
        top = _top_k(softmax(logits), classifier.classes, top_k)
        for result, row, preds in zip(good, logits, top, strict=True):
            result.logits = [float(v) for v in row]
            result.top_k = preds
    return results
