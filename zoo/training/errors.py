"""What can stop a training run, and what the caller needs to know about it.

* :class:`TrainError` — the run cannot start (bad override, dataset that does not fit the
  model, unusable device, a resume that does not match): a ``ValueError`` with a one-line
  message, like the spec and data errors.
* :class:`NonFiniteLossError` — the loss became NaN or infinite; the run stopped at once and
  the last good checkpoint (end of the previous epoch) was left untouched.
* :class:`TrainingInterrupted` — Ctrl-C; the state so far was saved to ``checkpoint-last.pt``.
  It is a ``KeyboardInterrupt``, so code that does not know it still sees a Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EpdoError

__all__ = ["NonFiniteLossError", "TrainError", "TrainingInterrupted"]


class TrainError(EpdoError, ValueError):
    """A training run that cannot start; the message says what to change."""


class NonFiniteLossError(EpdoError, RuntimeError):
    """The training loss became non-finite at ``epoch`` (1-based) and ``step`` (1-based);
    the command line exits with code 1 (the run failed, not its input)."""

    exit_code = 1

    def __init__(
        self, epoch: int, step: int, steps: int, lr: float, run_dir: Path,
        checkpoint: Path | None,
    ) -> None:
        self.epoch, self.step, self.steps, self.lr = epoch, step, steps, lr
        self.run_dir, self.checkpoint = run_dir, checkpoint
        kept = (
            f"the last good checkpoint {checkpoint} was kept"
            if checkpoint is not None
            else "no checkpoint was written (no epoch had completed)"
        )
        super().__init__(
            f"non-finite training loss at epoch {epoch}, step {step}/{steps} (lr {lr:g}); "
            f"the run stopped and {kept}; try a lower learning rate (--lr)"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: ``checkpoint`` holds the state so far.

    ``epoch`` is the number of completed epochs and ``step`` the number of training steps
    already done in the next one; ``epdo train --resume RUN_DIR`` continues from there.
    """

    def __init__(self, run_dir: Path, checkpoint: Path | None, epoch: int, step: int) -> None:
        super().__init__(f"training interrupted; state saved to {checkpoint}")
        self.run_dir, self.checkpoint, self.epoch, self.step = run_dir, checkpoint, epoch, step
