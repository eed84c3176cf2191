"""The model card written next to every exported artifact (``<artifact>.md``).

Hugging Face's model-card front matter (``library_name``, ``tags``, ``datasets``,
``metrics``, ``pipeline_tag``: image classification or image segmentation), then what a user
of the file needs: the task and the output, the spec (group, layers, parameters), the data
and the class names, the accuracy (a segmentation's mean IoU) the run reached (from its
``summary.json`` when the checkpoint sits in a run folder), how the artifact agreed with the
PyTorch model and its equivariance check, the speed measured at export, the preprocessing,
and how to serve it. Values read from files are shown as data (inside code spans or code
blocks), never as Markdown of their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from epdo.zoo.fileio import atomic_write

from .tasks import task_of

__all__ = ["card_path", "model_card", "write_model_card"]

_SUMMARY_BYTES = 1 << 20


def card_path(artifact: str | os.PathLike[str]) -> Path:
    """``<artifact>.md``."""
    return Path(f"{os.fspath(artifact)}.md")


def _run_summary(checkpoint: str | None) -> dict[str, Any]:
    """The run's ``summary.json`` beside the checkpoint (its numbers only), else {}."""
    if checkpoint is None:
        return {}
    path = Path(checkpoint).parent / "summary.json"
    try:
        if not path.is_file() or path.stat().st_size > _SUMMARY_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    keep = {}
    for key in ("best_test_acc", "best_test_miou", "best_epoch", "epochs_completed",
                "parameters"):
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            keep[key] = value
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("name"), str):
        keep["dataset"] = dataset["name"][:100]
    return keep


def _code(text: Any) -> str:
    """A value as an inline code span (backticks in it cannot close the span)."""
    body = str(text).replace("`", "'").replace("\n", " ")
    return f"`{body}`"


def model_card(report: Any, meta: dict[str, Any], speed: dict[str, float]) -> str:
    """The card's Markdown for an export ``report`` (an ExportReport), the artifact's
    metadata and the images/s measured at export (``{"batch 1": ..., "batch 8": ...}``)."""
    spec = meta["epdo.spec"]
    run = _run_summary(report.source)
    dataset = run.get("dataset") or str(spec.get("train", {}).get("dataset", "unknown"))
    layers = [layer.get("op", "?") for layer in spec.get("layers", []) if isinstance(layer, dict)]
    kind = "neural-epdo" if "neural_epdo" in layers else "pdo-econv" if "pdo_conv" in layers \
        else "cnn"
    task = task_of(meta)
    front = {"library_name": "epdo", "pipeline_tag": task.pipeline_tag,
             "tags": ["rotation-equivariant", kind, str(spec.get("group", "?")), report.format],
             "datasets": [dataset], "metrics": ["mean_iou", "accuracy"] if task.dense
             else ["accuracy"]}
    c, h, w = meta["epdo.input_shape"]
    k = len(meta["epdo.classes"])
    output = f"`(batch, {k}, {h}, {w})` class scores of every pixel (the mask is their " \
        "argmax over the classes)" if task.dense else f"`(batch, {k})` logits"
    pre = meta["epdo.preprocess"]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {_code(meta['epdo.spec_name'])} ({report.format})", "",
             "## Model", "",
             f"- group {_code(spec.get('group'))}, stencils {_code(spec.get('discretization'))}"
             f", layers {_code(' '.join(layers))}",
             f"- task {_code(task.name)}: input `(batch, {c}, {h}, {w})` float32 raw pixels "
             f"in [0, 1]; output {output}",
             "", "## Data and classes", "",
             f"- dataset {_code(dataset)}", "", "```text",
             *[str(name).replace("```", "'''") for name in meta["epdo.classes"]], "```", "",
             "## Accuracy", ""]
    if task.dense and "best_test_miou" in run:
        lines.append(f"- best test mean IoU {100 * run['best_test_miou']:.2f}% at epoch "
                     f"{run.get('best_epoch', '?')} of {run.get('epochs_completed', '?')}")
    elif "best_test_acc" in run:
        lines.append(f"- best test accuracy {100 * run['best_test_acc']:.2f}% at epoch "
                     f"{run.get('best_epoch', '?')} of {run.get('epochs_completed', '?')}")
    else:
        lines.append("- no run summary beside the checkpoint: not measured here "
                     "(`epdo eval RUN --angles 0:360:15` measures it)")
    lines += ["", "## Agreement with PyTorch and equivariance", "",
              f"- max abs error of the logits {report.max_abs:.2e} (tolerance {report.atol:g}), "
              f"{task.agreement_name} {100 * report.agreement:.2f}% (at least "
              f"{100 * task.min_agreement:g}%), on {_code(report.real_images)}"]
    rotation = report.rotation_text()
    if rotation is not None:
        lines.append(f"- {rotation}")
    lines += ["", "## Speed", "",
              *[f"- {name}: {value:.1f} images/s (measured at export, this machine, CPU)"
                for name, value in speed.items()],
              "", "## Preprocessing", "",
              f"- {pre.get('color')} images, fitted to {h}x{w} by {_code(pre.get('fit'))}, "
              "8-bit pixels divided by 255; the normalisation is inside the graph",
              "", "## Serving", "", "```bash",
              f"epdo predict {Path(report.path).name} image.png"
              + (" --out masks/ --overlay" if task.dense else ""),
              f"epdo serve {Path(report.path).name}          # Open Inference Protocol, port 8000",
              "```", ""]
    return "\n".join(lines)


def write_model_card(report: Any, meta: dict[str, Any], speed: dict[str, float]) -> Path:
    """Write :func:`model_card` at :func:`card_path` of the report's artifact."""
    path = card_path(report.path)
    atomic_write(path, model_card(report, meta, speed))
    return path
