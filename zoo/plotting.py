"""Figures of evaluation reports, written as PNG files (matplotlib's Agg canvas, no display).

- :func:`plot_report`: accuracy (%) against the rotation of the test images, beside the
  confusion matrix (row-normalized colours, counts in the cells).
- :func:`plot_angle_curves`: several models' accuracy-against-angle curves in one axes,
  e.g. a Neural ePDO model against a plain CNN.
- :func:`plot_comparison`: the same for several runs at several rotation-TTA settings
  (:mod:`epdo.zoo.comparison`): one colour per run, one line style per TTA setting.

Multiples of 90° (the rotations that map the pixel grid onto itself, where an equivariant
model is exactly invariant) are marked with vertical lines. Files are written atomically
(:mod:`epdo.zoo.fileio`: a temporary file beside the target, renamed over it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .evaluation import EvalReport
from .fileio import atomic_path

__all__ = ["plot_angle_curves", "plot_comparison", "plot_report", "save_figure"]

_ANNOTATE_MAX = 12  # write counts into the confusion cells up to this many classes
_TICKS_MAX = 30  # label every class on the confusion axes up to this many classes


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically; the parent folder is created."""
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _angle_axes(ax: Axes, degrees: list[float], chance: float | None,
                score: str = "accuracy") -> None:
    """Limits, ticks (every 45° up to a 360° span, else every 90°), the 90° marks, the
    chance level and labels of an accuracy-against-angle axes."""
    lo, hi = min([0.0, *degrees]), max([90.0, *degrees])
    if lo >= 0.0 and 270.0 < hi < 360.0:
        hi = 360.0  # a full turn sampled as 0:360:step
    step = 45.0 if hi - lo <= 360.0 else 90.0
    start = np.floor(lo / step) * step
    ax.set_xticks(np.arange(start, hi + step / 2, step))
    ax.set_xlim(lo - step / 9, hi + step / 9)
    for mark in np.arange(np.ceil(lo / 90.0) * 90.0, hi + 1e-9, 90.0):
        ax.axvline(mark, color="0.6", linewidth=0.8, linestyle=":", zorder=0)
    if chance is not None:
        ax.axhline(100.0 * chance, color="0.45", linewidth=1.0, linestyle="--", zorder=0,
                   label=f"chance ({100.0 * chance:.0f}%)")
    ax.set_ylim(0.0, 102.0)
    ax.set_xlabel("rotation of the test images (degrees, counter-clockwise; dotted: 90° steps)")
    ax.set_ylabel(f"{score} (%)")
    ax.grid(axis="y", alpha=0.3)


def _curve(ax: Axes, report: EvalReport, label: str, color: str | None = None,
           linestyle: str = "-", marker: str = "o") -> None:
    degrees = [a.degrees for a in report.angles]
    accs = [100.0 * a.score for a in report.angles]
    order = np.argsort(degrees)
    ax.plot(np.asarray(degrees)[order], np.asarray(accs)[order], marker=marker, markersize=3.5,
            linewidth=1.6, label=label, color=color, linestyle=linestyle)


def _confusion_axes(fig: Figure, ax: Axes, report: EvalReport) -> None:
    """The confusion matrix: colours = fraction of each true class, numbers = counts."""
    counts = np.asarray(report.confusion, dtype=np.int64)
    k = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= _TICKS_MAX:
        ax.set_xticks(range(k), report.classes, rotation=45 if k > 3 else 0, ha="right"
                      if k > 3 else "center", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(range(k), report.classes, fontsize=8)
    if k <= _ANNOTATE_MAX:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    what = f"{report.num_images} images" if report.pixels is None \
        else f"{report.pixels:,} pixels"
    ax.set_title(f"confusion matrix, unrotated ({what}, "
                 f"accuracy {100.0 * report.accuracy:.1f}%)", fontsize=10)


def plot_report(report: EvalReport, path: str | os.PathLike[str]) -> Path:
    """Accuracy against rotation angle (when the report has angles) beside the confusion
    matrix, as a PNG at ``path``; returns the path."""
    with_angles = bool(report.angles)
    fig = Figure(figsize=(13.0, 5.2) if with_angles else (6.8, 5.6))
    if with_angles:
        ax_curve, ax_conf = fig.subplots(1, 2, width_ratios=[1.25, 1.0])
        _curve(ax_curve, report, report.model, color="tab:blue")
        chance = None if report.mean_iou is not None else 1.0 / len(report.classes)
        _angle_axes(ax_curve, [a.degrees for a in report.angles], chance, report.score_name)
        ax_curve.set_title(f"{report.score_name} on the rotated test set", fontsize=10)
        ax_curve.legend(loc="best", fontsize=8)
    else:
        ax_conf = fig.subplots()
    _confusion_axes(fig, ax_conf, report)
    epoch = f", epoch {report.epoch}" if report.epoch is not None else ""
    fig.suptitle(f"{report.model}{epoch} on {report.dataset} ({report.split}): "
                 f"loss {report.loss:.3f}, {report.score_name} {100.0 * report.score:.2f}%")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_angle_curves(reports: Mapping[str, EvalReport], path: str | os.PathLike[str],
                      title: str = "accuracy against rotation of the test images") -> Path:
    """One accuracy-against-angle curve per ``{label: report}`` (each report needs angles),
    in one axes, as a PNG at ``path``; returns the path."""
    if not reports:
        raise ValueError("plot_angle_curves needs at least one report")
    curves = [(r, f"{label} ({100.0 * r.score:.1f}% at 0°)", None, "-", "o")
              for label, r in reports.items()]
    return _curves_figure(curves, path, title, (8.0, 5.0))


_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v")]


def plot_comparison(reports: Sequence[EvalReport], labels: Sequence[str],
                    path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Score (accuracy, or mIoU for segmentations) against angle of several reports in one
    axes, as a PNG at ``path``: one colour per run (``report.checkpoint``, else the model
    name), one line style and marker per TTA setting (``tta``, ``tta_flip``), ``labels`` in
    the legend; the title names the score and the test set unless ``title`` is given."""
    if not reports or len(labels) != len(reports):
        raise ValueError("plot_comparison needs reports and one label per report")
    runs = list(dict.fromkeys(r.checkpoint or r.model for r in reports))
    settings = list(dict.fromkeys((r.tta, r.tta_flip) for r in reports))
    curves = []
    for label, r in zip(labels, reports, strict=True):
        style, marker = _STYLES[settings.index((r.tta, r.tta_flip)) % len(_STYLES)]
        color = f"C{runs.index(r.checkpoint or r.model) % 10}"
        curves.append((r, label, color, style, marker))
    if title is None:
        data = {f"{r.dataset} {r.split}" for r in reports}
        on = f" ({data.pop()})" if len(data) == 1 else ""
        title = f"{reports[0].score_name} against rotation of the test images{on}"
    return _curves_figure(curves, path, title, (9.0, 5.4))


def _curves_figure(curves: list[tuple[EvalReport, str, str | None, Any, str]],
                   path: str | os.PathLike[str], title: str,
                   size: tuple[float, float]) -> Path:
    """``(report, label, colour, line style, marker)`` curves in one axes, written as a PNG;
    ValueError for a report without angles, or accuracy mixed with mIoU."""
    missing = [label for r, label, *_ in curves if not r.angles]
    if missing:
        raise ValueError(f"reports without angles: {', '.join(missing)}; evaluate with angles")
    names = {r.score_name for r, *_ in curves}
    if len(names) > 1:
        raise ValueError("one figure draws one score: classifiers or segmentations, not both")
    score = names.pop()
    fig = Figure(figsize=size)
    ax = fig.subplots()
    degrees: list[float] = []
    for r, label, color, style, marker in curves:
        _curve(ax, r, label, color=color, linestyle=style, marker=marker)
        degrees += [a.degrees for a in r.angles]
    chances = {len(r.classes) for r, *_ in curves}
    chance = 1.0 / chances.pop() if len(chances) == 1 and score == "accuracy" else None
    _angle_axes(ax, degrees, chance, score)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
