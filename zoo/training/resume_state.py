"""What a run continues from: one schema for a checkpoint's ``extra`` and ``rng`` entries.

:class:`ResumeState` is that schema. The trainer writes it (:meth:`ResumeState.payload`, the
``rng`` and ``extra`` arguments of :func:`~epdo.zoo.checkpoint.save_checkpoint`); a resumed
run checks and reads it in :meth:`ResumeState.from_checkpoint`, and nowhere else::

    extra:
      best           {"epoch": int, "test_acc": float, "test_loss": float} | None
      step           int >= 0: steps of the next epoch already done (saved on Ctrl-C;
                     0 at the end of an epoch)
      partial        [loss sum, correct, images] of those steps | None
      interrupted    bool: saved on Ctrl-C
      scaler         the gradient scaler's state_dict (float16 autocast) | None
      wall_seconds   float >= 0: training time so far
      world_size     int >= 1: the processes that trained it
      torch_version  str
      classes        [str]: the class names, one per class of the head (also read for
                     export and prediction by :func:`epdo.zoo.checkpoint.checkpoint_classes`)
    rng:
      torch          uint8 tensor: torch's CPU generator
      cuda           [uint8 tensor, one per CUDA device]: the CUDA generators

**Which random state a resumed run needs** (see :mod:`.seeding`). Each epoch's shuffle and
augmentation draws come from their own ``torch.Generator`` seeded by ``(seed, epoch)``, and
the global torch generators (dropout: CPU, or CUDA on a GPU) are reseeded at the start of
every epoch; the DataLoader's worker seeds come from its own fixed generator and the workers
draw nothing. So a run resumed at the end of an epoch needs no saved random state, and one
resumed within an epoch (after Ctrl-C) needs only the global torch generators where its last
step left them: ``rng.torch`` and, on a GPU, its device's ``rng.cuda`` entry, which
:meth:`ResumeState.restore_rng` restores. Nothing in training draws from numpy's or Python's
global generators, so they are not saved; checkpoints of earlier versions hold them as
``rng.numpy`` and ``rng.python``, which are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checkpoint import BEST, LAST, USE_ANOTHER, CheckpointError, check_epoch, read_checkpoint
from ..spec import Spec, SpecError, load_spec
from ..values import first_line, is_finite_number, is_int, shown
from .distributed import DistEnv
from .rundir import SPEC, RunDir
from .sampling import train_batches
from .seeding import epoch_generator

__all__ = ["BestEpoch", "RandomState", "ResumeState", "check_start_step", "resume_source"]


@dataclass(frozen=True)
class BestEpoch:
    """The epoch (1-based) with the best test score so far (the accuracy; a segmentation's
    mean IoU), and its test scores."""

    epoch: int
    test_acc: float
    test_loss: float
    test_miou: float | None = None

    @property
    def score(self) -> float:
        """What a later epoch must beat: the mean IoU when there is one, else the accuracy."""
        return self.test_acc if self.test_miou is None else self.test_miou

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``extra["best"]`` entry."""
        out = {"epoch": self.epoch, "test_acc": self.test_acc, "test_loss": self.test_loss}
        if self.test_miou is not None:
            out["test_miou"] = self.test_miou
        return out


@dataclass(frozen=True)
class RandomState:
    """The global torch generators: the CPU's (a uint8 tensor) and each CUDA device's."""

    cpu: torch.Tensor
    cuda: tuple[torch.Tensor, ...] = ()

    @classmethod
    def capture(cls) -> RandomState:
        """The generators' states now."""
        cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else ()
        return cls(torch.get_rng_state(), cuda)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``rng`` entry (``cuda`` only when there are CUDA devices)."""
        state: dict[str, Any] = {"torch": self.cpu}
        if self.cuda:
            state["cuda"] = list(self.cuda)
        return state


@dataclass(frozen=True)
class ResumeState:
    """The training state a checkpoint holds besides weights and optimizer (module
    docstring); ``epoch`` (epochs completed) and ``path`` come from the checkpoint itself
    and are not written by :meth:`payload`."""

    best: BestEpoch | None = None
    step: int = 0
    partial: tuple[float, float, float] | None = None
    interrupted: bool = False
    scaler: dict[str, float] | None = None
    wall_seconds: float = 0.0
    world_size: int = 1
    torch_version: str = field(default_factory=lambda: str(torch.__version__))
    classes: tuple[str, ...] = ()
    rng: RandomState | None = None
    epoch: int = 0
    path: str | None = None

    def payload(self) -> dict[str, Any]:
        """``{"rng": ..., "extra": ...}`` for :func:`~epdo.zoo.checkpoint.save_checkpoint`."""
        extra = {
            "best": self.best.to_dict() if self.best is not None else None,
            "step": self.step,
            "partial": list(self.partial) if self.partial is not None else None,
            "interrupted": self.interrupted,
            "scaler": dict(self.scaler) if self.scaler is not None else None,
            "wall_seconds": self.wall_seconds,
            "world_size": self.world_size,
            "torch_version": self.torch_version,
            "classes": list(self.classes),
        }
        return {"rng": self.rng.to_dict() if self.rng is not None else None, "extra": extra}

    @classmethod
    def from_checkpoint(cls, data: Mapping[str, Any]) -> ResumeState:
        """The state of a checkpoint dict read by :func:`~epdo.zoo.checkpoint.read_checkpoint`
        (its structure checked there), every entry checked to be what an epdo run writes;
        :class:`CheckpointError` naming the entry otherwise. Entries missing from older
        checkpoints take their defaults."""
        path = data.get("path")
        extra = data.get("extra") or {}

        def bad(what: str, value: Any) -> CheckpointError:
            return CheckpointError(
                f"{path}: its {what} is {shown(value)}, which no epdo run writes; {USE_ANOTHER}"
            )

        epoch = data["epoch"]
        step = extra.get("step", 0)
        if not is_int(step) or step < 0:
            raise bad("'extra.step' (steps done in the next epoch)", step)
        partial = extra.get("partial")
        if partial is not None and not (
            isinstance(partial, (list, tuple)) and len(partial) == 3
            and all(is_finite_number(v) and v >= 0 for v in partial)
        ):
            raise bad("'extra.partial' (three sums)", partial)
        wall = extra.get("wall_seconds", 0.0)
        if not is_finite_number(wall) or wall < 0:
            raise bad("'extra.wall_seconds'", wall)
        best = extra.get("best")
        if best is not None and not (
            isinstance(best, Mapping) and is_int(best.get("epoch"))
            and 1 <= best["epoch"] <= max(epoch, 1)
            and all(is_finite_number(best.get(k)) for k in ("test_acc", "test_loss"))
            and (best.get("test_miou") is None or is_finite_number(best["test_miou"]))
        ):
            raise bad("'extra.best' (the best epoch)", best)
        scaler = extra.get("scaler")
        if scaler is not None and not (
            isinstance(scaler, Mapping)
            and all(isinstance(k, str) and is_finite_number(v) and v >= 0
                    for k, v in scaler.items())
        ):
            raise bad("'extra.scaler' (the gradient scaler state)", scaler)
        interrupted = extra.get("interrupted", False)
        if not isinstance(interrupted, bool):
            raise bad("'extra.interrupted'", interrupted)
        world = extra.get("world_size", 1)
        if not is_int(world) or world < 1:
            raise bad("'extra.world_size' (the number of processes)", world)
        version = extra.get("torch_version", "")
        if not isinstance(version, str):
            raise bad("'extra.torch_version'", version)
        classes = extra.get("classes") or []
        if not isinstance(classes, list) or not all(isinstance(n, str) for n in classes):
            raise bad("'extra.classes' (the class names)", classes)
        return cls(
            best=None if best is None else BestEpoch(
                int(best["epoch"]), float(best["test_acc"]), float(best["test_loss"]),
                None if best.get("test_miou") is None else float(best["test_miou"])),
            step=step,
            partial=None if partial is None else tuple(float(v) for v in partial),
            interrupted=interrupted,
            scaler=None if scaler is None else dict(scaler),
            wall_seconds=float(wall),
            world_size=world,
            torch_version=version,
            classes=tuple(classes),
            rng=_random_state(data.get("rng"), bad),
            epoch=epoch,
            path=None if path is None else str(path),
        )

    def restore_rng(self, device: torch.device) -> None:
        """Set the global torch generators to the saved states: the CPU's, and on a CUDA
        ``device`` its own (where the checkpoint holds one); :class:`CheckpointError` when a
        state does not fit this torch. Without a saved state, nothing changes."""
        if self.rng is None:
            return
        try:
            torch.set_rng_state(self.rng.cpu)
            if device.type == "cuda" and (device.index or 0) < len(self.rng.cuda):
                torch.cuda.set_rng_state(self.rng.cuda[device.index or 0], device)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.path}: the checkpoint's random state does not fit: {first_line(exc)}"
            ) from None

    def load_scaler(self, scaler: torch.amp.GradScaler) -> None:
        """Load the saved gradient scaler state into ``scaler`` when both exist (a run
        without a scaler, or a checkpoint without one, keeps ``scaler`` as it is)."""
        if not self.scaler or not scaler.is_enabled():
            return
        try:
            scaler.load_state_dict(dict(self.scaler))
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: gradient scaler state does not fit: {exc}"
            ) from None


def _random_state(rng: Any, bad: Any) -> RandomState | None:
    """The checked ``rng`` entry (None when the checkpoint has none); ``bad(what, value)``
    makes the error."""
    if rng is None:
        return None
    reference = torch.get_rng_state()
    state = rng.get("torch")
    if not (isinstance(state, torch.Tensor) and state.dtype == reference.dtype
            and state.shape == reference.shape):
        raise bad("'rng.torch' (the random state)", state)
    cuda = rng.get("cuda", [])
    if not (isinstance(cuda, (list, tuple)) and all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1 for t in cuda
    )):
        raise bad("'rng.cuda' (the CUDA random states)", cuda)
    return RandomState(state, tuple(cuda))



def resume_source(run_dir: RunDir) -> tuple[dict[str, Any] | None, ResumeState | None, Spec]:
    """What a resumed run starts from: its checkpoint (``checkpoint-last.pt``, else
    ``checkpoint-best.pt``), the checked state in it and its spec; or, for a run killed
    before its first checkpoint, no checkpoint, no state and the run's ``spec.yaml`` (the
    run starts again at epoch 0). :class:`CheckpointError` when there is nothing to resume
    or the checkpoint is unusable."""
    path = run_dir.resume_checkpoint()
    if path is not None:
        checkpoint = read_checkpoint(path)
        state = ResumeState.from_checkpoint(checkpoint)
        try:
            spec = load_spec(checkpoint["spec"])
        except SpecError as exc:
            raise CheckpointError(f"{path}: the spec inside is invalid: {exc}") from exc
        check_epoch(checkpoint, spec)
        return checkpoint, state, spec
    if run_dir.holds_run_spec():
        return None, None, load_spec(run_dir.spec)
    raise CheckpointError(
        f"{run_dir.path}: nothing to resume (no {LAST}, {BEST} or run {SPEC}); start the run "
        f"again with: epdo train SPEC --out {run_dir.path}"
    )


def check_start_step(state: ResumeState, spec: Spec, images: int, env: DistEnv) -> None:
    """A checkpoint saved within an epoch holds fewer steps than that epoch has here (with
    ``images`` training images shared by ``env``'s processes); :class:`CheckpointError`
    otherwise."""
    t = spec.train
    steps = len(train_batches(images, t.batch_size,
                              epoch_generator(t.seed, state.epoch, "shuffle"),
                              env.rank, env.world_size))
    if state.step > steps:
        raise CheckpointError(
            f"{state.path}: says {state.step} steps of epoch {state.epoch + 1} were done, but "
            f"that epoch has {steps} here; resume it with the data and number of processes "
            "it was trained with"
        )
