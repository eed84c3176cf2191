"""``train(spec)``: a whole run, from a spec to a run directory of checkpoints and metrics.

Each epoch trains on the training split (augmented, see :mod:`.augment`) and then evaluates
the test split. The *best* checkpoint is the epoch with the highest test accuracy: this is
how the PDO-eConv and Neural ePDO papers report MNIST-rot and CIFAR results (there is no
separate validation split in those protocols), so read it as the papers' number, not as an
unbiased estimate. ``checkpoint-last.pt`` is the state to resume from.

Randomness is derived from ``(seed, epoch)`` (see :mod:`.seeding`), and checkpoints hold
the model, optimizer and gradient-scaler states, so ``resume=RUN_DIR`` continues exactly: on
the CPU, 2 epochs in one go and 1 + 1 resumed end with identical weights. A run interrupted
with Ctrl-C saves the state at the last finished step, with the global torch generators
(dropout), and resumes from that step (exactly in a single process; under torchrun the other
ranks' dropout streams restart from a seed). :mod:`.resume_state` says which random states
are saved and why those are all.

This module runs the epochs; the other jobs of a run have their own modules: the run folder
is claimed (locked) by :mod:`.claim` and :mod:`.rundir`, the data is loaded and the spec
fitted to it by :mod:`.data_setup`, what a resumed run continues from is written, checked
and read by :mod:`.resume_state` (the optimizer's state by :mod:`.optimizer_state`), and
what a run reports by :mod:`.run_summary`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn

from ..builder import build_model
from ..checkpoint import BEST, LAST, load_weights, save_checkpoint
from ..exactness import exactness_note
from ..spec import Spec, load_spec
from .augment import AugmentDraws
from .claim import RunClaim
from .config import (
    check_overrides,
    check_train_limits,
    check_workers,
    resume_spec,
    with_input,
    with_overrides,
)
from .data_setup import LabeledImages, TrainingData, prepare_data
from .device import Precision, resolve_device, resolve_precision
from .distributed import DistEnv
from .errors import NonFiniteLossError, TrainError, TrainingInterrupted
from .interrupts import StopRequest
from .loop import Engine, NonFiniteStep
from .objective import Objective
from .optimizer_state import load_optimizer_state
from .progress import NullProgress, Progress
from .resume_state import (
    BestEpoch,
    RandomState,
    ResumeState,
    check_start_step,
    resume_source,
)
from .run_summary import RunFacts, RunResult
from .rundir import RunDir
from .sampling import train_batches
from .schedule import lr_at, make_optimizer, set_lr
from .seeding import epoch_generator, seed_global

__all__ = ["train"]


def train(
    spec_source: str | os.PathLike[str] | dict[str, Any] | Spec | None = None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    device: str = "auto",
    amp: bool | str | None = None,
    workers: int | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    augment: bool | None = None,
    progress: Progress | None = None,
    data: tuple[LabeledImages, LabeledImages] | None = None,
    input_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    skip_bad: bool = False,
    memory_budget: str | int | None = None,
) -> RunResult:
    """Train the model of a spec (a shipped name, a YAML path, a dict or a :class:`Spec`).

    The spec's ``train`` section sets the recipe; ``epochs``, ``batch_size`` (per process),
    ``lr``, ``dataset``, ``data_dir`` and ``seed`` override it; ``amp`` True/False overrides its
    ``precision`` (mixed precision: on CUDA bf16, or fp16 with a gradient scaler; on the CPU
    bf16 / float32; see :func:`~.device.resolve_precision`). ``resume`` continues the run
    in that directory from its ``checkpoint-last.pt`` (the spec comes from the checkpoint;
    ``epochs`` may extend it; a run killed before that file was first written continues
    from ``checkpoint-best.pt`` or starts again from its ``spec.yaml``). ``out`` must be a
    new or empty folder, or a run folder that saved no checkpoint (see :mod:`.rundir`);
    the run folder is locked against other trainers until this returns. ``augment=False``
    turns the spec's augmentation off (the upright-only experiment). ``data`` = (train,
    test) bypasses dataset loading. When the input size breaks exact equivariance under the
    group's grid-exact elements, ``progress`` gets one note saying where and the nearest
    exact sizes (:func:`~epdo.zoo.exactness.exactness_note`).

    ``input_size`` and ``channels`` replace the spec's input (a new run only). A ``folder``
    dataset (:mod:`epdo.zoo.data.folder_dataset`) sets the head's number of classes to its
    class folders, is decoded once into uint8 memory when it fits ``memory_budget`` (bytes
    or text such as ``"800M"``; default ``$EPDO_DATA_MEMORY`` or 2 GiB) and streamed from
    disk otherwise; files that do not decode stop the run unless ``skip_bad``. Its split
    is recorded in the run folder's ``data.json``. A spec's ``mean`` / ``std`` of ``auto``
    are computed on the training split. ``workers`` (DataLoader processes) defaults to 0
    for data in memory and to up to 4 for streamed data.

    Raises :class:`TrainError`, :class:`~epdo.zoo.spec.SpecError`,
    :class:`~epdo.zoo.checkpoint.CheckpointError` or the data module's ``DataError`` before
    anything is trained; :class:`NonFiniteLossError` and :class:`TrainingInterrupted` while
    training.
    """
    env = DistEnv.from_environ()
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "dataset": dataset,
                 "data_dir": None if data_dir is None else str(data_dir), "seed": seed}
    check_overrides(**overrides)
    if workers is not None:
        check_workers(workers)
    if augment is False:
        if resume is not None:
            raise TrainError("--no-augment cannot change a resumed run; start a new run")
        overrides["augment"] = {"rotate": False, "flip": False, "vflip": False,
                                "crop_padding": 0, "resized_crop": None}
    if resume is None and spec_source is None:
        raise TrainError("give a spec to train, or --resume RUN_DIR to continue a run")
    claim = RunClaim(env)
    try:
        checkpoint = state = None
        if resume is not None:
            claim.take(lambda: RunDir.reopen(resume))
            checkpoint, state, base = resume_source(RunDir.reopen(resume, lock=False))
            spec = resume_spec(base, spec_source, **overrides)
            _check_fixed_input(spec, input_size, channels)
            check_train_limits(spec.train)
        else:
            spec = with_input(with_overrides(load_spec(spec_source), **overrides),
                              channels=channels, size=input_size)
            check_train_limits(spec.train)
            claim.take(lambda: RunDir.fresh(out, spec.name))
        dev = resolve_device(device, env.local_rank)
        precision = resolve_precision(amp, dev, spec.train.precision)
        precision.configure()
        report = progress if progress is not None and env.is_main else NullProgress()
        spec, prepared = prepare_data(spec, data=data, resume=resume, skip_bad=skip_bad,
                                      memory_budget=memory_budget, workers=workers,
                                      report=report,
                                      classes=list(state.classes) if state and state.classes
                                      else None)
        note = exactness_note(spec)
        if note is not None:  # once, before training: the input size breaks exactness
            report.note(note)
        if workers is None:
            workers = prepared.default_workers()
        run = _Run(spec, prepared, env=env, device=dev, precision=precision, workers=workers,
                   progress=report)
        env.init(dev)
        try:
            result = run.execute(claim=claim, resumed=resume is not None,
                                 checkpoint=checkpoint, state=state)
        except BaseException:
            report.close()
            env.shutdown(barrier=False)
            raise
        report.close()
        env.shutdown(barrier=True)
        return result
    finally:
        claim.release()


def _check_fixed_input(spec: Spec, size: Any, channels: int | None) -> None:
    """A resumed run keeps its input (the network depends on it)."""
    given = [f for f, v in (("--input-size", size), ("--channels", channels)) if v is not None]
    if given:
        raise TrainError(f"{' and '.join(given)} cannot change a resumed run's input "
                         f"({spec.input.channels}x{spec.input.height}x{spec.input.width}); "
                         "start a new run to change it")


class _Run:
    """The state of one training run (one process)."""

    def __init__(
        self, spec: Spec, data: TrainingData, *, env: DistEnv, device: torch.device,
        precision: Precision, workers: int, progress: Progress,
    ) -> None:
        self.spec, self.data, self.env, self.device = spec, data, env, device
        self.precision, self.workers, self.progress = precision, workers, progress
        self.history: list[dict[str, Any]] = []
        self.best: BestEpoch | None = None
        self.completed = 0
        self.wall_before = 0.0
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ setup

    def _build(self, checkpoint: dict[str, Any] | None, state: ResumeState | None) -> None:
        """The model (initial or checkpoint weights, on the device), its optimizer and the
        engine, with the checkpoint's optimizer and gradient-scaler states."""
        t = self.spec.train
        torch.manual_seed(t.seed)  # the initial weights
        model: nn.Module = build_model(self.spec)
        self.parameters = sum(p.numel() for p in model.parameters())
        if checkpoint is not None:
            load_weights(model, checkpoint["model"], checkpoint["path"])
        model.to(self.device)
        if self.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        for module in model.modules():  # one-off work (kernel builds) before the clock starts
            if hasattr(module, "warm_up"):
                module.warm_up(self.device)
        self.module = model
        optimizer = make_optimizer(model, t)
        if checkpoint is not None and checkpoint.get("optimizer") is not None:
            load_optimizer_state(optimizer, checkpoint["optimizer"], checkpoint["path"])
        if self.env.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        self.model, self.optimizer = model, optimizer
        self.engine = Engine(
            model, optimizer, device=self.device, precision=self.precision, dist=self.env,
            workers=self.workers, objective=Objective.of(self.spec),
        )
        if state is not None:
            state.load_scaler(self.engine.scaler)

    def _open_run_dir(self, claim: RunClaim, resumed: bool) -> None:
        """Every rank learns the run directory that rank 0 holds (:meth:`RunClaim.share`);
        rank 0 writes the spec and cuts the metrics back to the checkpoint's epochs."""
        self.run_dir = claim.share()
        if self.env.is_main:
            self.run_dir.write_spec(self.spec.resolved())
            if self.data.folder is not None:
                self.run_dir.write_data(self.data.folder.record())
            self.history = self.run_dir.truncate_metrics(self.completed) if resumed else []

    # ------------------------------------------------------------------ the run

    def execute(
        self, *, claim: RunClaim, resumed: bool, checkpoint: dict[str, Any] | None,
        state: ResumeState | None,
    ) -> RunResult:
        start_step, partial = 0, (0.0, 0.0, 0.0)
        if state is not None:
            self.completed, self.best = state.epoch, state.best
            self.wall_before, start_step = state.wall_seconds, state.step
            partial = state.partial or partial
            if self.env.enabled and not self.env.is_main:
                partial = (0.0, 0.0, 0.0)
        if start_step:
            check_start_step(state, self.spec, len(self.data.train_images), self.env)
        self._build(checkpoint, state)
        self._open_run_dir(claim, resumed)
        self.facts = RunFacts(self.spec, self.run_dir, self.data, self.device, self.precision,
                              self.env.world_size, self.parameters)
        self.progress.run_started(self.facts.started(
            resumed=checkpoint is not None, start_epoch=self.completed, start_step=start_step))
        with StopRequest() as stop:
            try:
                for epoch in range(self.completed, self.spec.train.epochs):
                    self._epoch(epoch, start_step, partial, state, stop)
                    start_step, partial = 0, (0.0, 0.0, 0.0)
                    if self._stop_agreed(stop):
                        raise KeyboardInterrupt
            except NonFiniteStep as exc:
                raise self._non_finite(exc.step) from None
            except KeyboardInterrupt:
                raise self._interrupted() from None
        summary = self._write_summary("completed")
        return self.facts.result(completed=self.completed, best=self.best,
                                 history=self.history, summary=summary)

    def _stop_agreed(self, stop: StopRequest) -> bool:
        """Whether any process has a pending Ctrl-C (all processes get the same answer)."""
        flag = torch.tensor([-int(stop.requested)], device=self.device)
        return bool(self.env.min_(flag).item() < 0)

    def _seed_dropout(self, epoch: int, start_step: int, state: ResumeState | None) -> None:
        """The global torch generators (dropout) for ``epoch`` from ``start_step`` on: the
        checkpoint's states when resuming within an epoch on rank 0, else derived seeds."""
        t, env = self.spec.train, self.env
        if start_step and state is not None and state.rng is not None and env.is_main:
            state.restore_rng(self.device)  # the dropout stream where it stopped
        elif start_step:
            seed_global(t.seed, epoch, "dropout", env.rank, "step", start_step)
        else:
            seed_global(t.seed, epoch, "dropout", env.rank)

    def _epoch(
        self, epoch: int, start_step: int, partial: tuple[float, ...],
        state: ResumeState | None, stop: StopRequest,
    ) -> None:
        t, env, data = self.spec.train, self.env, self.data
        lr = lr_at(epoch, t.lr, t.lr_milestones)
        set_lr(self.optimizer, lr)
        self.lr = lr
        n = len(data.train_images)
        batches = train_batches(
            n, t.batch_size, epoch_generator(t.seed, epoch, "shuffle"), env.rank, env.world_size
        )
        self.steps = len(batches)
        draws = AugmentDraws.draw(t.augment, n, epoch_generator(t.seed, epoch, "augment"))
        self._seed_dropout(epoch, start_step, state)
        self.progress.epoch_started(epoch + 1, t.epochs, len(batches), lr)
        began = time.perf_counter()
        stats = self.engine.train_epoch(
            data.train_images, data.train_labels, batches, draws, start_step=start_step,
            start_sums=partial, progress=self.progress, stop=stop,
        )
        self.progress.evaluating(0)
        scores = self.engine.evaluate(data.test_images, data.test_labels,
                                      max(t.batch_size, 256))
        record = {
            "epoch": epoch + 1, "lr": lr, "train_loss": stats.loss, "train_acc": stats.accuracy,
            **scores.record(),
            "images_per_s": stats.images_per_s, "seconds": time.perf_counter() - began,
        }
        is_best = self.best is None or scores.score > self.best.score
        if is_best:
            self.best = BestEpoch(epoch + 1, scores.accuracy, scores.loss,
                                  None if scores.segmentation is None
                                  else scores.segmentation.mean_iou)
        self.history.append(record)
        if env.is_main:
            self._save_epoch(record, is_best)
        self.completed = epoch + 1
        self.engine.steps_done = 0
        self.progress.epoch_finished(record, is_best)

    # ------------------------------------------------------------------ files

    def _state(self, **more: Any) -> ResumeState:
        """The resume state now (``more``: the step, partial sums and interruption)."""
        scaler = self.engine.scaler
        return ResumeState(
            best=self.best, scaler=scaler.state_dict() if scaler.is_enabled() else None,
            wall_seconds=self._wall(), world_size=self.env.world_size,
            classes=tuple(self.data.classes), rng=RandomState.capture(), **more,
        )

    def _save(self, name: str, epoch: int, metrics: dict[str, Any], state: ResumeState) -> None:
        save_checkpoint(self.run_dir.checkpoint(name), model=self.model, spec=self.spec,
                        epoch=epoch, optimizer=self.optimizer, metrics=metrics,
                        **state.payload())

    def _save_epoch(self, record: dict[str, Any], is_best: bool) -> None:
        epoch = record["epoch"]
        self.run_dir.append_metrics(record)
        state = self._state()
        if is_best:
            self._save(BEST, epoch, record, state)
        self._save(LAST, epoch, record, state)
        self.completed = epoch
        self._write_summary("running" if epoch < self.spec.train.epochs else "completed")

    def _interrupted(self) -> TrainingInterrupted:
        """Save the state so far to checkpoint-last.pt (unless the loss went bad)."""
        engine, last = self.engine, self.run_dir.checkpoint(LAST)
        step = engine.steps_done
        bad = engine.first_bad_step() if step else None
        if bad is not None:
            return self._non_finite(bad)
        if self.env.is_main:
            sums = tuple(engine.sums.tolist()) if step else None
            state = self._state(interrupted=True, step=step, partial=sums)
            self._save(LAST, self.completed, self.history[-1] if self.history else {}, state)
            self._write_summary("interrupted")
        saved = last if self.env.is_main else None  # other ranks report nothing
        return TrainingInterrupted(self.run_dir.path, saved, self.completed, step)

    def _non_finite(self, step: int) -> NonFiniteLossError:
        last = self.run_dir.checkpoint(LAST)
        if self.env.is_main:
            self._write_summary(f"stopped: non-finite loss at epoch {self.completed + 1}, "
                                f"step {step}")
        return NonFiniteLossError(
            self.completed + 1, step, self.steps, self.lr, self.run_dir.path,
            last if last.exists() else None,
        )

    def _wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.started

    def _write_summary(self, status: str) -> dict[str, Any]:
        summary = self.facts.summary(status=status, completed=self.completed, best=self.best,
                                     history=self.history, wall_seconds=self._wall())
        if self.env.is_main:
            self.run_dir.write_summary(summary)
        return summary
