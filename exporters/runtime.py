"""Serving exported artifacts: one classifier for every format, with the artifact's own
preprocessing.

An exported artifact carries everything needed to serve it (see ``epdo export``): the graph
takes ``images (batch, C, H, W)`` float32 raw pixels in [0, 1] (the normalization is inside
the graph) and returns ``logits (batch, classes)``, or for a segmentation
``logits (batch, classes, H, W)`` (class scores per pixel; :mod:`epdo.exporters.tasks`); its
metadata holds the task, the class names, the input shape and the preprocessing
(:mod:`epdo.exporters.preprocess`).

:class:`Classifier` (made by :func:`load_classifier`) reads an artifact the way every reader
does (:mod:`epdo.exporters.loading`: the file read once, inspected, its digest and fit
checked) and loads the checked bytes as its format says; then one plain gray input is run,
whose logits must be finite and of the declared shape. ``predict`` (logits, or maps),
``predict_proba`` (softmax over the classes), ``predict_top_k`` (classifiers),
``predict_masks`` (segmentations: the argmax of each pixel) and ``preprocess`` serve it;
:func:`predict_files` classifies many files at once, keeping one error per bad file
(a segmentation's files: :func:`epdo.exporters.masks.segment_files`).
:class:`OnnxClassifier`, :class:`TorchScriptClassifier` and :class:`PT2Classifier` are the
same classifier limited to one family of formats.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .artifact import (
    DIGEST_KEY,
    ArtifactError,
    InputError,
    ServingError,
    first_line,
    read_artifact_bytes,
)
from .formats import all_formats, format_for
from .limits import MAX_BATCH_BYTES
from .loading import check_artifact
from .preprocess import Preprocessing, preprocess_input
from .tasks import Task, output_shape, task_of

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
    "softmax",
]

DEFAULT_BATCH_SIZE = 64


def _safe_formats() -> str:
    """The formats that run no code of the file's, for a message (``.onnx or .pt2``)."""
    names = [f.suffix for f in all_formats() if not f.native_code]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


# --------------------------------------------------------------------------- predictions


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax ``exp(z_k) / sum_j exp(z_j)`` along ``axis`` (the classes: -1 of ``(N, K)``
    logits, 1 of ``(N, K, H, W)`` maps), computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


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


class Classifier:
    """An exported artifact served: checked, loaded and run as its format says.

    Args:
        path: the artifact file (its suffix gives its format:
            :data:`epdo.exporters.formats.SUFFIXES`).
        provider: ``auto`` (a GPU when there is one and the format's runtime can use it),
            ``cpu`` or ``cuda`` (an error when it is unavailable).
        batch_size: default inputs per run in :meth:`predict`.
        trust: you vouch for the file: accept an artifact without a digest (its metadata
            may then be incomplete: the graph gives the input shape, logit indices the class
            names), and load a format that runs native code at all (an AOTInductor
            package). A digest that does not match is refused all the same.
        threads: intra-op threads of a runtime that has its own (onnxruntime); None: its
            default.

    Attributes:
        path: the artifact file.
        format: its :class:`~epdo.exporters.formats.ArtifactFormat`.
        metadata: its decoded, checked metadata (``epdo.*`` keys; a trusted artifact may
            lack some).
        verified: whether its digest was checked (False only for an artifact without one,
            loaded with ``trust=True``).
        classes: class names, one per logit.
        task: ``classify`` or ``segment`` (:mod:`epdo.exporters.tasks`; ``classify`` for an
            artifact written before segmentations existed).
        output_shape: ``(K,)``, or ``(K, H, W)`` for a segmentation: the output of one input.
        input_shape: ``(C, H, W)`` of one input.
        preprocessing: the :class:`Preprocessing` read from the metadata.
        providers: where it runs (onnxruntime provider names, or the torch device).
        batch_size: default number of inputs per run in :meth:`predict`.

    Raises:
        ServingError: one line: missing or invalid file, digest missing (without ``trust``)
            or not matching, metadata of the wrong type or disagreeing with the graph, a
            native-code format without ``trust``, an unavailable provider, non-finite
            logits for a plain input.

    Example::

        clf = load_classifier("model.onnx")
        x = clf.preprocess("digit.png")[None]         # (1, C, H, W) in [0, 1]
        clf.predict_top_k(x, k=3)[0][0].label         # the most probable class
    """

    family: ClassVar[str | None] = None
    """The formats a subclass serves (their ``family``); None: any."""

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, *, trust: bool = False,
                 threads: int | None = None) -> None:
        self.path = Path(path)
        self.batch_size = int(batch_size)
        try:
            fmt = format_for(self.path)
            if self.family is not None and fmt.family != self.family:
                raise ServingError(f"{self.path}: a {fmt.title}, which "
                                   f"{type(self).__name__} does not serve; use "
                                   "load_classifier")
            fmt.accepts(provider, self.path)
            data = read_artifact_bytes(self.path, ServingError, "model file")
            checked = check_artifact(fmt, data, self.path, trust=trust, complete=not trust)
            if fmt.native_code and not trust:
                raise ServingError(
                    f"{self.path}: an {fmt.title} is native code that runs when it is "
                    "loaded; pass --trust (trust=True) if you built it or trust its source, "
                    f"or serve {_safe_formats()}, which run no code of the file's")
            self.session = fmt.load(data, self.path, checked.contents, provider,
                                    threads=threads)
        except ArtifactError as exc:
            raise ServingError(str(exc)) from exc
        del data
        self.format = fmt
        self.providers = list(self.session.providers)
        dims = checked.contents.input_dims
        self._setup(checked.metadata, list(dims) if dims and None not in dims else None)

    @property
    def compiled(self) -> bool:
        """Whether the artifact is compiled native code (an AOTInductor package)."""
        return self.format.native_code

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one model input."""
        return self.preprocessing.input_shape

    @property
    def kind(self) -> Task:
        """The model's :class:`~epdo.exporters.tasks.Task`."""
        return task_of(self.metadata)

    @property
    def task(self) -> str:
        """``classify`` or ``segment``."""
        return self.kind.name

    @property
    def segments(self) -> bool:
        """Whether the model segments: one class per pixel, ``(N, K, H, W)`` logits."""
        return self.kind.dense

    def _setup(self, metadata: dict[str, Any], graph_shape: Sequence[int] | None) -> None:
        """Preprocessing, task and classes from the (checked) metadata, then one run of a
        plain gray input: its logits must be finite and of the declared output shape."""
        self.metadata = metadata
        self.verified = DIGEST_KEY in (metadata.get("epdo.verification") or {})
        self.preprocessing = Preprocessing.from_metadata(metadata, graph_shape)
        probe = self._forward(np.full((1, *self.input_shape), 0.5, np.float32))
        declared = output_shape(metadata)
        if probe.ndim != 1 + self.kind.rank or probe.shape[0] != 1 or (
                declared is not None and list(probe.shape[2:]) != declared[1:]):
            want = self.kind.layout().replace("batch", "1")
            if declared is not None and self.segments:
                want = str((1, *declared))
            raise ServingError(f"{self.path}: the model returns an output of shape "
                               f"{tuple(probe.shape)} for one input, expected {want}")
        if not np.all(np.isfinite(probe)):
            raise ServingError(f"{self.path}: the model returns non-finite logits (NaN or "
                               "infinity) for a plain gray input: its weights are broken; "
                               "re-export it from its checkpoint")
        self.output_shape = tuple(int(d) for d in probe.shape[1:])
        num_logits = int(probe.shape[1])
        classes = metadata.get("epdo.classes")
        if classes is None:
            classes = [str(i) for i in range(num_logits)]
        if len(classes) != num_logits:
            raise ServingError(f"{self.path}: metadata epdo.classes has {len(classes)} class "
                               f"names but the model returns {num_logits} logits")
        self.classes = list(classes)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(n, *output_shape)`` of one batch ``(n, C, H, W)`` float32 (already
        preprocessed)."""
        return self.session.run(batch)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`_run`, its runtime's errors turned into one ServingError line."""
        try:
            return np.asarray(self._run(batch))
        except Exception as exc:  # onnxruntime's pybind errors, torch's RuntimeError, ...
            raise ServingError(f"{self.path}: the model failed to run on a batch of shape "
                               f"{tuple(batch.shape)}: {first_line(exc)}") from exc

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
        """Logits ``(N, *output_shape)`` float32, unchecked: they may be non-finite."""
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
            return np.zeros((0, *self.output_shape), np.float32)
        outs = [self._forward(x[i:i + size]) for i in range(0, len(x), size)]
        out = np.concatenate(outs, axis=0).astype(np.float32, copy=False)
        if out.shape != (len(x), *self.output_shape):
            raise ServingError(f"{self.path}: the model returned logits of shape "
                               f"{tuple(out.shape)} for {len(x)} inputs, expected "
                               f"{(len(x), *self.output_shape)}")
        return out

    def predict(self, array: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits of raw inputs in [0, 1] (see :meth:`as_batch`), run ``batch_size`` inputs
        at a time: ``(N, K)`` float32, or for a segmentation the maps ``(N, K, H, W)``
        (the class scores of every pixel).

        Raises:
            InputError: an array of the wrong shape.
            ServingError: the model fails, or returns NaN or infinite logits (never passed
                on as probabilities).
        """
        out = self._logits(array, batch_size)
        bad = np.flatnonzero(~np.isfinite(out).all(axis=tuple(range(1, out.ndim))))
        if bad.size:
            raise ServingError(f"{self.path}: the model returned non-finite logits (NaN or "
                               f"infinity) for input {int(bad[0])} ({bad.size} of {len(out)} "
                               "inputs); the artifact may be broken")
        return out

    def predict_proba(self, array: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities (softmax of :meth:`predict` over the classes, float64):
        ``(N, K)``, or ``(N, K, H, W)`` for a segmentation."""
        return softmax(self.predict(array, batch_size), axis=1)

    def predict_top_k(self, array: np.ndarray, k: int = 5,
                      batch_size: int | None = None) -> list[list[Prediction]]:
        """The ``k`` most probable classes of every input, most probable first
        (``k`` is capped at the number of classes); a classifier's only."""
        self._need(False, "predict_top_k", "predict_masks")
        return _top_k(self.predict_proba(array, batch_size), self.classes, k)

    def predict_masks(self, array: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The class of every pixel, ``mask[n, i, j] = argmax_k logits[n, k, i, j]`` (the
        first of equal scores): ``(N, H, W)`` int64 at the model's size; a segmentation's
        only."""
        self._need(True, "predict_masks", "predict_top_k")
        return self.predict(array, batch_size).argmax(axis=1)

    def _need(self, dense: bool, method: str, other: str) -> None:
        """ServingError when ``method`` does not fit the model's task."""
        if self.segments != dense:
            raise ServingError(f"{self.path}: {method} is for "
                               f"{'segmentation' if dense else 'classification'} models; "
                               f"this one does {self.task}: use {other}")

    def preprocess(self, source: str | os.PathLike[str] | np.ndarray | Any) -> np.ndarray:
        """One input ``(C, H, W)`` float32 in [0, 1] from an image file, a ``.npy`` file, an
        array or a Pillow image, as the metadata says (see :func:`preprocess_input`)."""
        return preprocess_input(source, self.preprocessing)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {self.task}, input "
                f"{list(self.input_shape)}, {len(self.classes)} classes, providers "
                f"{self.providers})")


class OnnxClassifier(Classifier):
    """A :class:`Classifier` of ``.onnx`` artifacts (onnxruntime)."""

    family = "onnx"


class TorchScriptClassifier(Classifier):
    """A :class:`Classifier` of TorchScript artifacts (torch)."""

    family = "torchscript"


class PT2Classifier(Classifier):
    """A :class:`Classifier` of ``torch.export`` artifacts: the ``.pt2`` program and its
    ``.aoti.pt2`` AOTInductor package (native code: loaded only with ``trust``)."""

    family = "pt2"


def load_classifier(path: str | os.PathLike[str], provider: str = "auto",
                    batch_size: int = DEFAULT_BATCH_SIZE, *, trust: bool = False,
                    threads: int | None = None) -> Classifier:
    """The classifier of an artifact, of the subclass that serves its format's family (see
    :class:`Classifier` for the arguments)."""
    try:
        family = format_for(path).family
    except ArtifactError as exc:
        raise ServingError(str(exc)) from exc
    kind = next((c for c in Classifier.__subclasses__() if c.family == family), Classifier)
    return kind(path, provider, batch_size, trust=trust, threads=threads)


def predict_files(classifier: Classifier, inputs: Iterable[str | os.PathLike[str]],
                  top_k: int = 5, batch_size: int | None = None) -> list[FilePrediction]:
    """Preprocess every input file, classify the good ones in batches, keep the others'
    errors: one :class:`FilePrediction` per input, in order.

    One bad input never costs the others their predictions: a file that cannot be read or
    decoded, or whose logits come out NaN or infinite, gets its ``error``. At most
    ``batch_size`` inputs (fewer when they would take more than
    :data:`~epdo.exporters.limits.MAX_BATCH_BYTES`) are held in memory at once. A
    segmentation's files: :func:`epdo.exporters.masks.segment_files`.
    """
    classifier._need(False, "predict_files", "epdo.exporters.masks.segment_files")
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
