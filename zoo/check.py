"""``epdo check SPEC|RUN``: a model's equivariance, before training or after.

The subject is a spec (a YAML file or a shipped name: random weights, seeded, with the
BatchNorm statistics calibrated on smooth random images, see
:func:`~epdo.zoo.equivariance.calibrated_model`) or a run (a run directory or a checkpoint
file: the trained weights in eval mode with their own running statistics, nothing
recalibrated), so the effect of training is visible. It is checked in float64 (or float32)
on ``batch`` smooth images inside the inscribed disk, three ways:

- the final logits against a plain CNN (:func:`~epdo.zoo.equivariance.check_model`);
- every layer's output (:func:`~epdo.zoo.layer_equivariance.layer_report`), with the first
  layer where exactness breaks and why;
- the input sizes at which the spec is exact (:func:`~epdo.zoo.exactness.size_rule`), and
  a warning when its own size is not (:func:`~epdo.zoo.exactness.exactness_note`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .builder import ZooModel
from .checkpoint import load_model
from .equivariance import (
    DEFAULT_ANGLES,
    EquivarianceReport,
    calibrated_model,
    check_model,
    require_classes,
    smooth_images,
)
from .exactness import SizeRule, exactness_note, size_rule
from .layer_equivariance import LayerReport, layer_report
from .spec import Spec, load_spec

__all__ = ["CheckResult", "is_run", "run_check"]


def is_run(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` names trained weights: a directory (a run) or a ``.pt`` file (a
    checkpoint); anything else is a spec (a YAML file or a shipped spec name)."""
    path = Path(target)
    return path.is_dir() or path.suffix == ".pt"


@dataclass
class CheckResult:
    """What ``epdo check`` reports: the subject (``trained`` weights or random ones, and
    where they came from), the final logits beside a plain CNN, every layer, the exact-size
    rule and the warning for an input size that breaks exactness (None when it does not)."""

    target: str
    trained: bool
    source: str
    logits: EquivarianceReport
    layers: LayerReport
    rule: SizeRule
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        """The final-logits report's keys, plus ``target``, ``trained``, ``source``,
        ``layers``, ``exactness`` and ``warning``."""
        out = self.logits.to_dict()
        out.update(target=self.target, trained=self.trained, source=self.source,
                   layers=self.layers.to_dict(), exactness=self.rule.to_dict(),
                   warning=self.warning)
        return out


def _spec_of(target: str) -> tuple[Spec, ZooModel | None]:
    """The subject's spec, and for a run its trained model (eval mode); a spec's model is
    built later, after the warning."""
    if is_run(target):
        model, spec = load_model(target)
        return spec, model
    return load_spec(target), None


def run_check(
    target: str,
    batch: int = 8,
    seed: int = 0,
    angles: Sequence[float] = DEFAULT_ANGLES,
    float64: bool = True,
    calibration: int = 32,
    warn: Callable[[str], None] | None = None,
) -> CheckResult:
    """Check ``target`` (a spec or a run, :func:`is_run`) on ``batch`` smooth images (seed
    ``seed + 2``) at the quarter turns (and flips) and ``angles``. ``warn`` is called once,
    before anything is built or measured, with the warning when the spec's input size breaks
    exactness. SpecError / CheckpointError for a subject that cannot be checked (one without
    class scores included)."""
    dtype = torch.float64 if float64 else torch.float32
    spec, trained = _spec_of(str(target))
    require_classes(spec)
    rule = size_rule(spec)
    warning = exactness_note(spec, rule)
    if warning is not None and warn is not None:
        warn(warning)
    if trained is not None:
        model = trained.to(dtype).eval()
        c, h, w = model.input_shape
        calib = smooth_images(calibration, c, h, w, seed=seed + 1, dtype=dtype)
        source = f"trained weights from {target} (eval mode, their own BatchNorm statistics)"
    else:
        model, calib = calibrated_model(spec, seed, dtype, calibration)
        source = (f"random weights (seed {seed}), BatchNorm calibrated on {calibration} "
                  "smooth images")
    c, h, w = model.input_shape
    inputs = smooth_images(batch, c, h, w, seed=seed + 2, dtype=dtype)
    logits = check_model(model, inputs, calib, seed, tuple(angles))
    layers = layer_report(model, inputs, angles)
    return CheckResult(str(target), trained is not None, source, logits, layers, rule,
                       warning)
