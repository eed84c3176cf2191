"""What ``epdo info ARTIFACT`` says of an exported artifact, as ``(key, value)`` rows: the
spec, the format and what it needs to run, the task and the output, the input and its
preprocessing, the class names, how the artifact agreed with PyTorch at export (for a
segmentation: per pixel, and the quarter-turn equivariance of its map) and what its digests
cover. The values are plain text taken from checked metadata; the caller prints them as
data (never as markup).
"""

from __future__ import annotations

import os
from typing import Any

from .artifact import DIGEST_KEY, METADATA_DIGEST_KEY
from .formats import format_for
from .tasks import output_shape, task_of

__all__ = ["artifact_rows"]


def _rotation(ver: dict[str, Any], dense: bool) -> str:
    """The rotation figure of the verification, in words."""
    rel = ver.get("rotation_max_rel")
    if rel is None:
        return "-"
    if not dense:
        return f"max rel difference {rel:.2e}"
    atol = ver.get("rotation_atol")
    held = f"atol {atol:g}" if atol is not None else "not required: no quarter turn in the group"
    return (f"map equivariance: max abs difference {ver.get('rotation_max_abs', rel):.2e} "
            f"({held}), relative {rel:.2e}")


def artifact_rows(path: str | os.PathLike[str], meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of ``epdo info`` for the artifact at ``path`` with checked metadata
    ``meta`` (:func:`epdo.exporters.loading.read_metadata`)."""
    ver = meta["epdo.verification"]
    digest = ver.get(DIGEST_KEY)
    task = task_of(meta)
    c, h, w = meta["epdo.input_shape"]
    pre = meta["epdo.preprocess"]
    shape = ", ".join(str(d) for d in output_shape(meta) or [])
    what = "class scores of every pixel; the mask is their argmax" if task.dense \
        else "class scores of each image"
    agreement = ver.get("agreement", float("nan"))
    return [
        ("spec", meta["epdo.spec_name"]),
        ("group", str(meta["epdo.spec"].get("group", "?"))),
        ("format", f"{ver.get('format')}" + (f", opset {ver['opset']}" if ver.get("opset")
                                            else "")),
        *format_for(path).runtime_rows(ver),
        ("epdo version", meta["epdo.version"]),
        ("task", task.name + ("" if "epdo.task" in meta else " (written before tasks were "
                                                               "recorded)")),
        ("input", f"images (batch, {c}, {h}, {w}) float32 in [0, 1], {pre.get('color')}; "
                  f"files are fitted by {pre.get('fit', 'resize')}"),
        ("output", f"logits (batch, {shape}) float32: {what}"),
        ("normalization", f"(x - {meta['epdo.input_mean']}) / {meta['epdo.input_std']} "
                          "(inside the graph)"),
        ("classes", f"{len(meta['epdo.classes'])}: {', '.join(meta['epdo.classes'])}"),
        ("max abs error", f"{ver.get('max_abs', float('nan')):.2e} (atol {ver.get('atol')})"),
        ("max rel error", f"{ver.get('max_rel', float('nan')):.2e}"),
        (task.agreement_name, f"{100 * agreement:.2f}% (at least "
                              f"{100 * ver.get('min_agreement', task.min_agreement):g}%)"
         if task.dense else f"{100 * agreement:.1f}%"),
        ("90° rotation", _rotation(ver, task.dense)),
        ("verified on", f"random inputs and {ver.get('real_images')}, batches "
                        f"{sorted({ch['batch'] for ch in ver.get('checks', [])})}"),
        ("digest", "none: unverified (--trust)" if digest is None
         else f"sha256 {digest[:16]}… matches the model"
         + (" and its metadata" if METADATA_DIGEST_KEY in ver
            else "; its metadata is not covered (written before metadata digests)")),
    ]
