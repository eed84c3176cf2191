"""The model card written next to every exported artifact (``<artifact>.md``).

Hugging Face's model-card front matter (``library_name``, ``tags``, ``datasets``,
``metrics``, ``pipeline_tag``), then what a user of the file needs: the spec (group, layers,
parameters), the data and the class names, the accuracy the run reached (from its
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
    for key in ("best_test_acc", "best_epoch", "epochs_completed", "parameters"):
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
    front = {"library_name": "epdo", "pipeline_tag": "image-classification",
             "tags": ["rotation-equivariant", kind, str(spec.get("group", "?")), report.format],
             "datasets": [dataset], "metrics": ["accuracy"]}
    c, h, w = meta["epdo.input_shape"]
    pre = meta["epdo.preprocess"]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {_code(meta['epdo.spec_name'])} ({report.format})", "",
             "## Model", "",
             f"- group {_code(spec.get('group'))}, stencils {_code(spec.get('discretization'))}"
             f", layers {_code(' '.join(layers))}",
             f"- input `(batch, {c}, {h}, {w})` float32 raw pixels in [0, 1]; output "
             f"`(batch, {len(meta['epdo.classes'])})` logits",
             "", "## Data and classes", "",
             f"- dataset {_code(dataset)}", "", "```text",
             *[str(name).replace("```", "'''") for name in meta["epdo.classes"]], "```", "",
             "## Accuracy", ""]
    if "best_test_acc" in run:
        lines.append(f"- best test accuracy {100 * run['best_test_acc']:.2f}% at epoch "
                     f"{run.get('best_epoch', '?')} of {run.get('epochs_completed', '?')}")
    else:
        lines.append("- no run summary beside the checkpoint: not measured here "
                     "(`epdo eval RUN --angles 0:360:15` measures it)")
    lines += ["", "## Agreement with PyTorch and equivariance", "",
              f"- max abs error of the logits {report.max_abs:.2e} (tolerance {report.atol:g}), "
              f"top-1 agreement {100 * report.agreement:.1f}%, on {_code(report.real_images)}"]
    if report.rotation_max_rel is not None:
        lines.append(f"- 90 degree rotation of the input: logits change by at most "
                     f"{report.rotation_max_rel:.2e} (relative)")
    lines += ["", "## Speed", "",
              *[f"- {name}: {value:.1f} images/s (measured at export, this machine, CPU)"
                for name, value in speed.items()],
              "", "## Preprocessing", "",
              f"- {pre.get('color')} images, fitted to {h}x{w} by {_code(pre.get('fit'))}, "
              "8-bit pixels divided by 255; the normalisation is inside the graph",
              "", "## Serving", "", "```bash",
              f"epdo predict {Path(report.path).name} image.png",
              f"epdo serve {Path(report.path).name}          # Open Inference Protocol, port 8000",
              "```", ""]
    return "\n".join(lines)


def write_model_card(report: Any, meta: dict[str, Any], speed: dict[str, float]) -> Path:
    """Write :func:`model_card` at :func:`card_path` of the report's artifact."""
    path = card_path(report.path)
    atomic_write(path, model_card(report, meta, speed))
    return path
