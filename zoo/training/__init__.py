"""The training engine: epochs, checkpoints, resume, distributed data parallel.

Public API::

    from epdo.zoo.training import train

    result = train("quickstart", epochs=2)       # a spec name, YAML path, dict or Spec
    result.run_dir, result.best_test_acc          # runs/quickstart/<timestamp>, 0.87
    train(resume=result.run_dir, epochs=4)        # continue exactly where it stopped

Modules: :mod:`.trainer` (the run's epochs), :mod:`.loop` (steps, epochs, evaluation),
:mod:`.data_setup` (loading the data, fitting the spec to it), :mod:`.resume_state` (what a
checkpoint holds to continue a run: one schema, and which random states),
:mod:`.optimizer_state` (a saved optimizer state, checked), :mod:`.run_summary`
(``summary.json`` and the result), :mod:`.claim` (taking the run folder),
:mod:`.augment` (per-image rotation/flip/crop on the device),
:mod:`.schedule` (optimizers, learning-rate milestones), :mod:`.sampling` (shuffling and
sharding), :mod:`.seeding` (randomness from ``(seed, epoch)``), :mod:`.rundir` (the files),
:mod:`.progress` (Rich bars and epoch lines), :mod:`.device`, :mod:`.distributed`,
:mod:`.interrupts`, :mod:`.config` (overrides), :mod:`.errors`.
"""

from .augment import AugmentDraws
from .data_setup import LabeledImages
from .device import Precision, resolve_device, resolve_precision
from .errors import NonFiniteLossError, TrainError, TrainingInterrupted
from .loop import Engine, evaluate_model
from .progress import NullProgress, Progress, RichProgress
from .run_summary import RunResult
from .rundir import EPOCH_KEYS, RunDir
from .schedule import lr_at, make_optimizer
from .trainer import train

__all__ = [
    "EPOCH_KEYS",
    "AugmentDraws",
    "Engine",
    "LabeledImages",
    "NonFiniteLossError",
    "NullProgress",
    "Precision",
    "Progress",
    "RichProgress",
    "RunDir",
    "RunResult",
    "TrainError",
    "TrainingInterrupted",
    "evaluate_model",
    "lr_at",
    "make_optimizer",
    "resolve_device",
    "resolve_precision",
    "train",
]
