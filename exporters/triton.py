"""A Triton Inference Server model repository for an exported artifact: the same verified
file, served at scale without any of epdo's Python (Triton, or KServe with Triton).

``write_repository(artifact, folder)`` writes::

    folder/<name>/config.pbtxt     platform, max_batch_size, dynamic_batching, the input
                                   "images" (FP32, dims C, H, W) and output "logits" (FP32,
                                   dims classes, with the labels file; a segmentation's
                                   dims classes, H, W: per-pixel scores, the labels file
                                   not attached, as Triton's classification extension
                                   ranks whole outputs)
    folder/<name>/labels.txt       the class names, one per line (Triton's classification
                                   extension labels its answers with them)
    folder/<name>/1/<model file>   the artifact, byte for byte

The artifact is read through the checks every reader runs
(:func:`epdo.exporters.loading.open_artifact`); only formats Triton has a backend for
(``ArtifactFormat.triton_platform``) can be written. Each file is written atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from epdo.zoo.fileio import atomic_write

from .artifact import ExportError
from .loading import open_artifact
from .tasks import output_shape, task_of

__all__ = ["config_text", "write_repository"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def config_text(name: str, platform: str, input_shape: list[int], output_dims: list[int],
                max_batch_size: int, max_delay_us: int, labels: bool = True) -> str:
    """The ``config.pbtxt`` of a model (Triton's protobuf text format of ``ModelConfig``):
    the output's ``dims`` are ``output_dims`` (``[K]`` or ``[K, H, W]``), labelled by
    ``labels.txt`` when ``labels``."""
    c, h, w = input_shape
    label = '    label_filename: "labels.txt"\n' if labels else ""
    return (f'name: "{name}"\n'
            f'platform: "{platform}"\n'
            f"max_batch_size: {max_batch_size}\n"
            "input [\n  {\n    name: \"images\"\n    data_type: TYPE_FP32\n"
            f"    dims: [ {c}, {h}, {w} ]\n  }}\n]\n"
            "output [\n  {\n    name: \"logits\"\n    data_type: TYPE_FP32\n"
            f"    dims: [ {', '.join(str(d) for d in output_dims)} ]\n{label}  }}\n]\n"
            "dynamic_batching {\n"
            f"  max_queue_delay_microseconds: {max_delay_us}\n}}\n")


def write_repository(artifact: str | os.PathLike[str], folder: str | os.PathLike[str], *,
                     name: str | None = None, max_batch_size: int = 64,
                     max_delay_us: int = 5000) -> Path:
    """Write the Triton repository entry of ``artifact`` under ``folder`` (see the module
    docstring); returns the model's folder. ``name`` defaults to the artifact's spec name.

    Raises:
        ArtifactError: the artifact does not pass the readers' checks.
        ExportError: a format Triton does not run, a bad name or batch size.
    """
    checked = open_artifact(artifact)
    platform = checked.format.triton_platform
    if platform is None:
        raise ExportError(f"{artifact}: Triton has no backend epdo targets for "
                          f"{checked.format.title}s; export --format onnx for Triton")
    meta = checked.metadata
    name = name or meta["epdo.spec_name"]
    if not _NAME.fullmatch(name):
        raise ExportError(f"Triton model name {name[:80]!r}: use letters, digits, '_', '.' or "
                          "'-' (at most 64)")
    if max_batch_size < 1:
        raise ExportError(f"max_batch_size must be 1 or more, got {max_batch_size}")
    classes = meta["epdo.classes"]
    if any("\n" in c or "\r" in c for c in classes):
        raise ExportError(f"{artifact}: a class name holds a line break, which Triton's "
                          "labels file cannot")
    model = Path(folder) / name
    atomic_write(model / "1" / checked.format.triton_file, checked.data)
    atomic_write(model / "labels.txt", "".join(f"{c}\n" for c in classes))
    atomic_write(model / "config.pbtxt",
                 config_text(name, platform, meta["epdo.input_shape"], output_shape(meta),
                             max_batch_size, max_delay_us, labels=not task_of(meta).dense))
    return model
