"""Several trained runs, each at several rotation-TTA settings, evaluated alike: the reports
behind one comparison table and figure (``epdo eval RUN_A RUN_B --tta 1,4,8 --angles
0:360:15 --plot cmp.png``).

A *setting* is (n, flip): the model averaged over n rotations by multiples of 360°/n, each
also mirrored with flip (:class:`epdo.zoo.tta.RotationTTA`); (1, False) is the model alone.
Every run is evaluated without TTA first and then at each setting asked for, on the same
test set, in the same process, so that accuracy and images/s line up (the cost of TTA is
about V = n or 2n forward passes per image).

Public API::

    reports = evaluate_runs(["runs/quickstart/a", "runs/quickstart_cnn/b"], tta=[4, 8],
                            angles=parse_angles("0:360:15"))
    labels = comparison_labels(reports)     # "quickstart, no TTA", "quickstart, TTA x4", ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import model_from_checkpoint, read_checkpoint
from .eval_args import EvalError
from .evaluation import EvalReport, evaluate, resolve_device, test_set_of
from .tta import tta_label

__all__ = ["comparison_labels", "evaluate_runs", "run_names", "tta_settings"]

MAX_RUNS = 12
"""The most runs one comparison takes (each is evaluated at every setting and angle)."""


def tta_settings(counts: Sequence[int] | None, flip: bool = False) -> list[tuple[int, bool]]:
    """The settings to evaluate: (1, False), the model alone, first, then (n, flip) for each
    count n (duplicates dropped); ``flip`` without counts is the mirror alone, (1, True).
    ``tta_settings([1, 4, 8]) == [(1, False), (4, False), (8, False)]``;
    ``tta_settings([4], flip=True) == [(1, False), (4, True)]``."""
    counts = counts or ([1] if flip else [])
    settings = [(1, False), *((int(n), bool(flip)) for n in counts)]
    return list(dict.fromkeys(settings))


def evaluate_runs(
    sources: Sequence[str | os.PathLike[str]],
    *,
    tta: Sequence[int] | None = None,
    tta_flip: bool = False,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    angles: list[float] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    split: str = "test",
    progress: Any = None,
) -> list[EvalReport]:
    """One :class:`~epdo.zoo.evaluation.EvalReport` per run and setting
    (:func:`tta_settings`), runs in the order given, settings in order within a run.

    Every checkpoint is read, and the runs' tasks compared, before anything is evaluated:
    an unreadable run, a run given twice, or classifiers mixed with segmentations are an
    error at once (CheckpointError or :class:`EvalError`, one line each).
    """
    if not sources:
        raise EvalError("no run to evaluate; give one or more run directories or checkpoints")
    if len(sources) > MAX_RUNS:
        raise EvalError(f"{len(sources)} runs; at most {MAX_RUNS} are compared at once")
    dev = resolve_device(device)
    runs = []
    seen: dict[str, str] = {}
    for source in sources:
        data = read_checkpoint(source)
        path = str(Path(data["path"]).resolve())
        if path in seen:
            raise EvalError(f"{source} and {seen[path]} are the same checkpoint ({path}); "
                            "give each run once")
        seen[path] = str(source)
        model, spec = model_from_checkpoint(data)
        runs.append((data, model, spec))
    tasks = {spec.plan.task: spec.name for _, _, spec in runs}
    if len(tasks) > 1:
        named = " and ".join(f"a {'segmentation' if t == 'segment' else 'classifier'} "
                             f"({name})" for t, name in sorted(tasks.items()))
        raise EvalError(f"cannot compare {named} in one evaluation (accuracy against mIoU); "
                        "evaluate them separately")
    reports = []
    for data, model, spec in runs:
        test = test_set_of(data, spec, dataset=dataset, data_dir=data_dir, split=split,
                           progress=progress)
        for n, flip in tta_settings(tta, tta_flip):
            report = evaluate(model, test, batch_size=batch_size, device=dev, angles=angles,
                              name=spec.name, tta=n, tta_flip=flip)
            report.checkpoint, report.epoch = str(data["path"]), int(data["epoch"])
            reports.append(report)
    return reports


def run_names(reports: Sequence[EvalReport]) -> list[str]:
    """The run of each report in words: its spec name, followed by its run folder (and
    checkpoint file, if that is still ambiguous) when two runs of one spec are compared."""
    runs: dict[str, set[str]] = {}
    for r in reports:
        runs.setdefault(r.model, set()).add(r.checkpoint or "")
    names = []
    for r in reports:
        others = runs[r.model]
        if len(others) < 2 or not r.checkpoint:
            names.append(r.model)
            continue
        path = Path(r.checkpoint)
        folders = [Path(c).parent.name for c in others]
        where = path.parent.name if folders.count(path.parent.name) == 1 \
            else f"{path.parent.name}/{path.name}"
        names.append(f"{r.model} ({where})")
    return names


def comparison_labels(reports: Sequence[EvalReport]) -> list[str]:
    """A legend label per report: its run (:func:`run_names`) and, when any report has
    one, its TTA setting (:func:`epdo.zoo.tta.tta_label`): ``quickstart, TTA x4``."""
    any_tta = any(r.tta_views > 1 for r in reports)
    return [f"{name}, {tta_label(r.tta, r.tta_flip)}" if any_tta else name
            for name, r in zip(run_names(reports), reports, strict=True)]
