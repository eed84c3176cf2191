"""What an artifact computes: its task, the layout of its output and how export verifies it.

==============  ========  =================  ==============================================
``epdo.task``   output    shape after N      verified at export (beside the values)
==============  ========  =================  ==============================================
``classify``    vector    ``[K]``            top-1 agreement on every input (100%)
``segment``     map       ``[K, H, W]``      argmax agreement on >= 99.9% of the pixels;
                                             ``f(r x) = r f(x)`` for the quarter turn ``r``
                                             (when the group has it)
==============  ========  =================  ==============================================

The output is always named ``logits``: ``(N, K)`` class scores of each image, or
``(N, K, H, W)`` class scores of each pixel, whose argmax over K is the mask. The map of a
segmentation has the input's size (the spec's plan refuses a smaller one).

The metadata records it in two keys (:mod:`epdo.exporters.artifact` checks their types):

- ``epdo.task``: ``"classify"`` or ``"segment"``;
- ``epdo.output``: ``{"name": "logits", "kind": "vector" | "map", "shape": [K] | [K, H, W]}``.

Artifacts written before these keys existed lack both: they are classifiers whose output
shape is ``[len(epdo.classes)]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CLASSIFY", "OUTPUT_NAME", "SEGMENT", "TASKS", "Task", "output_shape",
           "task_metadata", "task_named", "task_of", "task_problem"]

OUTPUT_NAME = "logits"
"""The name of every artifact's one output."""


@dataclass(frozen=True)
class Task:
    """One task an artifact can have.

    Attributes:
        name: ``classify`` or ``segment`` (the metadata's ``epdo.task``).
        kind: ``vector`` or ``map`` (``epdo.output.kind``).
        rank: dimensions of one input's output: 1 (``[K]``) or 3 (``[K, H, W]``).
        min_agreement: the least fraction of argmax agreement between artifact and PyTorch
            that export accepts: of the inputs (1.0, every one) or of the pixels (0.999).
        agreement_name: how reports name that fraction.
        pipeline_tag: the Hugging Face pipeline of its model card.
    """

    name: str
    kind: str
    rank: int
    min_agreement: float
    agreement_name: str
    pipeline_tag: str

    @property
    def dense(self) -> bool:
        """Whether the output is a map (one answer per pixel)."""
        return self.kind == "map"

    def layout(self) -> str:
        """The output's layout in words, for messages: ``(batch, classes)``..."""
        return "(batch, classes, H, W)" if self.dense else "(batch, classes)"

    def output_shape(self, classes: int, size: tuple[int, int]) -> list[int]:
        """``[K]`` or ``[K, H, W]`` for ``classes`` classes and an input of ``size`` (H, W)."""
        return [classes, *size] if self.dense else [classes]


CLASSIFY = Task("classify", "vector", 1, 1.0, "top-1 agreement", "image-classification")
SEGMENT = Task("segment", "map", 3, 0.999, "pixel agreement", "image-segmentation")
TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFY, SEGMENT)}
"""The tasks, by name."""


def task_named(name: str) -> Task:
    """The task called ``name``; ValueError naming the choices otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; use {' or '.join(TASKS)}") from None


def task_of(meta: dict[str, Any]) -> Task:
    """The task of an artifact from its (checked) metadata: ``classify`` without
    ``epdo.task`` (artifacts written before it existed)."""
    return TASKS.get(meta.get("epdo.task", CLASSIFY.name), CLASSIFY)


def output_shape(meta: dict[str, Any]) -> list[int] | None:
    """The declared output shape of one input (``epdo.output.shape``; ``[len(classes)]``
    for an artifact written before it existed), None when the metadata says neither."""
    output = meta.get("epdo.output")
    if isinstance(output, dict) and isinstance(output.get("shape"), list):
        return list(output["shape"])
    classes = meta.get("epdo.classes")
    return [len(classes)] if isinstance(classes, list) else None


def task_metadata(task: str, classes: int, size: tuple[int, int]) -> dict[str, Any]:
    """``{"epdo.task": ..., "epdo.output": ...}`` of a model of task ``task`` with
    ``classes`` classes and inputs of ``size`` (H, W)."""
    kind = task_named(task)
    return {"epdo.task": kind.name,
            "epdo.output": {"name": OUTPUT_NAME, "kind": kind.kind,
                            "shape": kind.output_shape(classes, size)}}


def task_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong between ``epdo.task``, ``epdo.output``, the class names and the input
    shape (values whose types are already checked), as the end of a sentence; None when
    they agree."""
    output = meta.get("epdo.output")
    task = meta.get("epdo.task")
    if output is None:
        return None if task in (None, CLASSIFY.name) else \
            f"epdo.task is {task!r} but epdo.output is missing"
    kind = task_of(meta)
    shape = output.get("shape")
    if "kind" in output and output["kind"] != kind.kind:
        return (f"epdo.output.kind {output['kind']!r} does not fit epdo.task {kind.name!r} "
                f"(a {kind.name} model's output is a {kind.kind})")
    if shape is None:
        return None
    if len(shape) != kind.rank:
        return (f"epdo.output.shape {shape} does not fit epdo.task {kind.name!r}: expected "
                f"{'[K, H, W]' if kind.dense else '[K]'}")
    classes = meta.get("epdo.classes")
    if classes is not None and shape[0] != len(classes):
        return (f"epdo.classes has {len(classes)} class names but the model returns "
                f"{shape[0]} logits (epdo.output.shape {shape})")
    inputs = meta.get("epdo.input_shape")
    if kind.dense and inputs is not None and list(shape[1:]) != list(inputs[1:]):
        return (f"epdo.output.shape {shape}: a segmentation map has the input's size "
                f"{inputs[1]}x{inputs[2]}")
    return None
