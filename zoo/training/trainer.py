"""``train(spec)``: a whole run, from a spec to a run directory of checkpoints and metrics.

Each epoch trains on the training split (augmented, see :mod:`.augment`) and then evaluates
the test split. The *best* checkpoint is the epoch with the highest test accuracy: this is
how the PDO-eConv and Neural ePDO papers report MNIST-rot and CIFAR results (there is no
separate validation split in those protocols), so read it as the papers' number, not as an
unbiased estimate. ``checkpoint-last.pt`` is the state to resume from.

Randomness is derived from ``(seed, epoch)`` (see :mod:`.seeding`), and checkpoints hold
the model, optimizer and gradient-scaler states, so ``resume=RUN_DIR`` continues exactly: on
the CPU, 2 epochs in one go and 1 + 1 resumed end with identical weights. A run interrupted
with Ctrl-C saves the state at the last finished step and resumes from that step (exactly
in a single process; under torchrun the other ranks' dropout streams restart from a seed).

The run directory is held (locked) by one trainer from before its first file is written to
the end, and is resumable whatever instant a run was killed at (see :mod:`.rundir`).
Everything a resumed run takes from its checkpoint is checked first
(:func:`~epdo.zoo.checkpoint.check_training_state` and its neighbours).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from epdo import __version__

from ..builder import build_model
from ..checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    check_epoch,
    check_training_state,
    load_optimizer_state,
    load_weights,
    read_checkpoint,
    rng_state,
    save_checkpoint,
)
from ..spec import Spec, SpecError, load_spec
from .augment import AugmentDraws
from .config import (
    check_overrides,
    check_train_limits,
    check_workers,
    fitted_to_data,
    resume_spec,
    with_input,
    with_overrides,
)
from .device import Precision, resolve_device, resolve_precision
from .distributed import DistEnv
from .errors import NonFiniteLossError, TrainError, TrainingInterrupted
from .interrupts import StopRequest
from .loop import Engine, NonFiniteStep
from .progress import NullProgress, Progress
from .rundir import SPEC, RunDir
from .sampling import train_batches
from .schedule import lr_at, make_optimizer, set_lr
from .seeding import epoch_generator, seed_global

__all__ = ["LabeledImages", "RunResult", "train"]


class LabeledImages(Protocol):
    """What training needs of a dataset (:class:`epdo.zoo.data.ImageDataset` has it)."""

    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    name: str


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    spec: Spec
    epochs: int
    """Epochs completed."""
    best_epoch: int | None
    best_test_acc: float | None
    final: dict[str, Any] | None
    """The last epoch's ``metrics.jsonl`` record."""
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / BEST

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / LAST


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
    ``precision`` (mixed precision on CUDA / float32). ``resume`` continues the run
    in that directory from its ``checkpoint-last.pt`` (the spec comes from the checkpoint;
    ``epochs`` may extend it; a run killed before that file was first written continues
    from ``checkpoint-best.pt`` or starts again from its ``spec.yaml``). ``out`` must be a
    new or empty folder, or a run folder that saved no checkpoint (see :mod:`.rundir`);
    the run folder is locked against other trainers until this returns. ``augment=False``
    turns the spec's augmentation off (the upright-only experiment). ``data`` = (train,
    test) bypasses dataset loading.

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
    claim = _Claim(env)
    try:
        checkpoint = None
        if resume is not None:
            claim.take(lambda: RunDir.reopen(resume))
            checkpoint, base = _resume_source(RunDir.reopen(resume, lock=False))
            if checkpoint is not None:
                check_epoch(checkpoint, base)
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
        folder = None
        if data is not None:
            train_set, test_set = data
        elif spec.train.dataset == "folder":
            record = _data_record(resume)
            folder = _load_folder(spec, record, skip_bad, memory_budget, workers, report)
            train_set, test_set = folder.train, folder.test
        else:
            train_set, test_set = _load_data(spec)
        spec = _fit_spec(spec, train_set, folder, report)
        if workers is None:
            workers = 0 if folder is None or folder.in_memory else min(4, os.cpu_count() or 1)
        run = _Run(spec, env=env, device=dev, precision=precision, workers=workers,
                   progress=report)
        run.folder = folder
        run.set_data(train_set, test_set)
        env.init(dev)
        try:
            result = run.execute(claim=claim, resumed=resume is not None, checkpoint=checkpoint)
        except BaseException:
            report.close()
            env.shutdown(barrier=False)
            raise
        report.close()
        env.shutdown(barrier=True)
        return result
    finally:
        claim.release()


class _Claim:
    """The run directory as rank 0 holds it (locked, see :mod:`.rundir`), or the error that
    stopped rank 0 from taking it: under torchrun that error is raised on every rank once
    they can hear of it (:meth:`_Run._open_run_dir`), so no process waits for a failed one;
    in a single process it is raised at once."""

    def __init__(self, env: DistEnv) -> None:
        self.env = env
        self.run_dir: RunDir | None = None
        self.error: str | None = None

    def take(self, open_run_dir: Any) -> None:
        if not self.env.is_main:
            return
        try:
            self.run_dir = open_run_dir()
        except TrainError as exc:
            if not self.env.enabled:
                raise
            self.error = str(exc)

    def release(self) -> None:
        if self.run_dir is not None:
            self.run_dir.release()


def _resume_source(run_dir: RunDir) -> tuple[dict[str, Any] | None, Spec]:
    """What a resumed run starts from: its checkpoint and the checkpoint's spec, or, for a
    run killed before its first checkpoint, no checkpoint and the run's ``spec.yaml`` (the
    run starts again at epoch 0)."""
    path = run_dir.resume_checkpoint()
    if path is not None:
        checkpoint = read_checkpoint(path)
        check_training_state(checkpoint)
        try:
            spec = load_spec(checkpoint["spec"])
        except SpecError as exc:
            raise CheckpointError(f"{path}: the spec inside is invalid: {exc}") from exc
        return checkpoint, spec
    if run_dir.holds_run_spec():
        return None, load_spec(run_dir.spec)
    raise CheckpointError(
        f"{run_dir.path}: nothing to resume (no {LAST}, {BEST} or run {SPEC}); start the run "
        f"again with: epdo train SPEC --out {run_dir.path}"
    )


def _check_fixed_input(spec: Spec, size: Any, channels: int | None) -> None:
    """A resumed run keeps its input (the network depends on it)."""
    given = [f for f, v in (("--input-size", size), ("--channels", channels)) if v is not None]
    if given:
        raise TrainError(f"{' and '.join(given)} cannot change a resumed run's input "
                         f"({spec.input.channels}x{spec.input.height}x{spec.input.width}); "
                         "start a new run to change it")


def _data_record(resume: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The ``data.json`` of the run being resumed, if it has one."""
    if resume is None:
        return None
    from ..data.folder_dataset import read_record

    path = RunDir(resume).data
    return read_record(path) if path.is_file() else None


def _load_folder(spec: Spec, record: dict[str, Any] | None, skip_bad: bool,
                 budget: str | int | None, workers: int | None, report: Progress) -> Any:
    """The spec's folder dataset, decoded as the spec's input says, its notes reported."""
    from ..data import DataError
    from ..data.folder_dataset import load_folder, memory_budget
    from ..data.folder_images import PixelSettings

    t, inp = spec.train, spec.input
    if not t.data_dir:
        raise DataError(f"spec {spec.name!r} trains on a folder of images: give it with "
                        "--dataset folder:PATH (one subfolder per class)")
    if inp.channels not in (1, 3):
        raise TrainError(f"a folder dataset is read as 1 (grayscale) or 3 (RGB) channels, "
                         f"but spec {spec.name!r} has {inp.channels}; use --channels 1 or 3")
    if record is not None and record["classes"] and record.get("input") != {
            "channels": inp.channels, "size": list(inp.size), "fit": inp.fit}:
        raise TrainError("the run's data.json was decoded for another input than its spec's; "
                         "start a new run")
    settings = PixelSettings(inp.channels, (inp.height, inp.width), inp.fit)
    folder = load_folder(t.data_dir, settings, seed=t.seed, test_fraction=t.test_fraction,
                         skip_bad=skip_bad, budget=memory_budget(budget), workers=workers,
                         record=record, progress=report.data_progress)
    for line in folder.notes:
        report.note(line)
    return folder


def _fit_spec(spec: Spec, train_set: LabeledImages, folder: Any, report: Progress) -> Spec:
    """The spec fitted to its data: a folder's number of classes in the head, and ``auto``
    statistics computed on the training split."""
    classes = None
    if folder is not None:
        classes = len(folder.classes)
        if spec.plan.num_classes != classes:
            report.note(f"the head predicts the folder's {classes} classes (spec "
                        f"{spec.name!r} says {spec.plan.num_classes})")
    mean = std = None
    if not spec.input.statistics_known:
        if folder is not None:
            mean, std = folder.mean, folder.std
        else:
            from ..data.statistics import channel_statistics

            mean, std = channel_statistics(train_set.images)
        report.note("input statistics of the training split: mean "
                    + ", ".join(f"{m:.4f}" for m in mean) + "; std "
                    + ", ".join(f"{v:.4f}" for v in std))
    return fitted_to_data(spec, classes=classes, mean=mean, std=std)


def _load_data(spec: Spec) -> tuple[LabeledImages, LabeledImages]:
    from ..data import load_dataset

    t = spec.train
    return load_dataset(t.dataset, "train", t.data_dir), load_dataset(t.dataset, "test", t.data_dir)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


class _Run:
    """The state of one training run (one process)."""

    def __init__(
        self, spec: Spec, *, env: DistEnv, device: torch.device, precision: Precision,
        workers: int, progress: Progress,
    ) -> None:
        self.spec, self.env, self.device, self.precision = spec, env, device, precision
        self.workers, self.progress = workers, progress
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.completed = 0
        self.wall_before = 0.0
        self.started = time.perf_counter()
        self.folder: Any = None  # a folder dataset's FolderData (its record goes to data.json)

    # ------------------------------------------------------------------ setup

    def set_data(self, train_set: LabeledImages, test_set: LabeledImages) -> None:
        """Check the datasets against the spec's input and classes; keep their tensors."""
        inp, name = self.spec.input, self.spec.name
        expected = (inp.channels, inp.height, inp.width)
        classes = _num_classes(self.spec)
        for split, ds in (("train", train_set), ("test", test_set)):
            shape = tuple(ds.images.shape[1:])
            if len(ds.images.shape) != 4 or shape != expected:
                raise TrainError(
                    f"dataset {ds.name!r} ({split}) has images of shape {_shape(shape)} but spec "
                    f"{name!r} expects {_shape(expected)}; choose a matching --dataset or spec"
                )
            if len(ds.labels) != len(ds.images) or len(ds.images) == 0:
                raise TrainError(
                    f"dataset {ds.name!r} ({split}) has no images or mismatched labels"
                )
            top = int(ds.labels.max())
            if top >= classes or int(ds.labels.min()) < 0:
                raise TrainError(
                    f"dataset {ds.name!r} ({split}) has label {top} but spec {name!r} has "
                    f"{classes} classes; choose a matching --dataset or spec"
                )
        self.train_set, self.test_set = train_set, test_set
        self.train_images = _as_inputs(train_set.images)
        self.train_labels = train_set.labels.long().contiguous()
        self.test_images = _as_inputs(test_set.images)
        self.test_labels = test_set.labels.long().contiguous()

    def _build(self, checkpoint: dict[str, Any] | None) -> None:
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
            workers=self.workers,
        )
        scaler = (checkpoint.get("extra") or {}).get("scaler") if checkpoint else None
        if scaler and self.engine.scaler.is_enabled():
            try:
                self.engine.scaler.load_state_dict(dict(scaler))
            except (RuntimeError, KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"{checkpoint['path']}: gradient scaler state does not fit: {exc}"
                ) from None

    def _open_run_dir(self, claim: _Claim, resumed: bool) -> None:
        """Every rank learns the run directory that rank 0 holds, or the error that stopped
        rank 0 from taking it (so no process waits for one that has failed); rank 0 writes
        the spec and cuts the metrics back to the checkpoint's epochs."""
        path = str(claim.run_dir.path) if claim.run_dir is not None else None
        path, error = self.env.broadcast((path, claim.error))
        if error is not None:
            raise TrainError(error)
        self.run_dir = claim.run_dir if claim.run_dir is not None else RunDir(path)
        if self.env.is_main:
            self.run_dir.write_spec(self.spec.resolved())
            if self.folder is not None:
                self.run_dir.write_data(self.folder.record())
            self.history = self.run_dir.truncate_metrics(self.completed) if resumed else []

    # ------------------------------------------------------------------ the run

    def execute(
        self, *, claim: _Claim, resumed: bool, checkpoint: dict[str, Any] | None
    ) -> RunResult:
        start_step, partial = 0, (0.0, 0.0, 0.0)
        if checkpoint is not None:
            extra = checkpoint.get("extra") or {}
            self.completed = int(checkpoint["epoch"])
            self.best = extra.get("best")
            self.wall_before = float(extra.get("wall_seconds", 0.0))
            start_step = int(extra.get("step", 0))
            partial = tuple(float(v) for v in extra.get("partial") or partial)
            if self.env.enabled and not self.env.is_main:
                partial = (0.0, 0.0, 0.0)
        if start_step:
            self._check_start_step(start_step, checkpoint)
        self._build(checkpoint)
        self._open_run_dir(claim, resumed)
        self.progress.run_started(self._info(checkpoint is not None, start_step))
        t = self.spec.train
        with StopRequest() as stop:
            try:
                for epoch in range(self.completed, t.epochs):
                    resumed_rng = checkpoint.get("rng") if start_step and checkpoint else None
                    self._epoch(epoch, start_step, partial, resumed_rng, stop)
                    start_step, partial = 0, (0.0, 0.0, 0.0)
                    if self._stop_agreed(stop):
                        raise KeyboardInterrupt
            except NonFiniteStep as exc:
                raise self._non_finite(exc.step) from None
            except KeyboardInterrupt:
                raise self._interrupted() from None
        summary = self._write_summary("completed")
        return self._result(summary)

    def _check_start_step(self, start_step: int, checkpoint: dict[str, Any]) -> None:
        """A checkpoint saved within an epoch holds fewer steps than that epoch has."""
        t, env = self.spec.train, self.env
        steps = len(train_batches(len(self.train_images), t.batch_size,
                                  epoch_generator(t.seed, self.completed, "shuffle"),
                                  env.rank, env.world_size))
        if start_step > steps:
            raise CheckpointError(
                f"{checkpoint['path']}: says {start_step} steps of epoch {self.completed + 1} "
                f"were done, but that epoch has {steps} here; resume it with the data and "
                "number of processes it was trained with"
            )

    def _stop_agreed(self, stop: StopRequest) -> bool:
        """Whether any process has a pending Ctrl-C (all processes get the same answer)."""
        flag = torch.tensor([-int(stop.requested)], device=self.device)
        return bool(self.env.min_(flag).item() < 0)

    def _epoch(
        self, epoch: int, start_step: int, partial: tuple[float, ...],
        resumed_rng: dict[str, Any] | None, stop: StopRequest,
    ) -> None:
        t, env = self.spec.train, self.env
        lr = lr_at(epoch, t.lr, t.lr_milestones)
        set_lr(self.optimizer, lr)
        self.lr = lr
        n = len(self.train_images)
        batches = train_batches(
            n, t.batch_size, epoch_generator(t.seed, epoch, "shuffle"), env.rank, env.world_size
        )
        self.steps = len(batches)
        draws = AugmentDraws.draw(t.augment, n, epoch_generator(t.seed, epoch, "augment"))
        if start_step and resumed_rng is not None and env.is_main:
            try:  # the dropout stream where it stopped (types checked on reading)
                torch.set_rng_state(resumed_rng["torch"])
                cuda_states = resumed_rng.get("cuda") or []
                if self.device.type == "cuda" and self.device.index < len(cuda_states):
                    torch.cuda.set_rng_state(cuda_states[self.device.index], self.device)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise CheckpointError(
                    f"{self.run_dir.path}: the checkpoint's random state does not fit: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                ) from None
        elif start_step:
            seed_global(t.seed, epoch, "dropout", env.rank, "step", start_step)
        else:
            seed_global(t.seed, epoch, "dropout", env.rank)
        self.progress.epoch_started(epoch + 1, t.epochs, len(batches), lr)
        began = time.perf_counter()
        stats = self.engine.train_epoch(
            self.train_images, self.train_labels, batches, draws, start_step=start_step,
            start_sums=partial, progress=self.progress, stop=stop,
        )
        self.progress.evaluating(0)
        test_loss, test_acc = self.engine.evaluate(
            self.test_images, self.test_labels, max(t.batch_size, 256)
        )
        record = {
            "epoch": epoch + 1, "lr": lr, "train_loss": stats.loss, "train_acc": stats.accuracy,
            "test_loss": test_loss, "test_acc": test_acc,
            "images_per_s": stats.images_per_s, "seconds": time.perf_counter() - began,
        }
        is_best = self.best is None or test_acc > self.best["test_acc"]
        if is_best:
            self.best = {"epoch": epoch + 1, "test_acc": test_acc, "test_loss": test_loss}
        self.history.append(record)
        if env.is_main:
            self._save_epoch(record, is_best)
        self.completed = epoch + 1
        self.engine.steps_done = 0
        self.progress.epoch_finished(record, is_best)

    # ------------------------------------------------------------------ files

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {
            "best": self.best, "step": 0, "partial": None, "interrupted": False,
            "scaler": self.engine.scaler.state_dict() if self.engine.scaler.is_enabled() else None,
            "wall_seconds": self._wall(), "world_size": self.env.world_size,
            "torch_version": str(torch.__version__), "classes": list(self.train_set.classes),
            **more,
        }

    def _save_epoch(self, record: dict[str, Any], is_best: bool) -> None:
        rd, epoch = self.run_dir, record["epoch"]
        rd.append_metrics(record)
        extra = self._extra()
        if is_best:
            save_checkpoint(rd.checkpoint(BEST), model=self.model, spec=self.spec, epoch=epoch,
                            optimizer=self.optimizer, rng=rng_state(), metrics=record, extra=extra)
        save_checkpoint(rd.checkpoint(LAST), model=self.model, spec=self.spec, epoch=epoch,
                        optimizer=self.optimizer, rng=rng_state(), metrics=record, extra=extra)
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
            sums = engine.sums.tolist() if step else None
            save_checkpoint(
                last, model=self.model, spec=self.spec, epoch=self.completed,
                optimizer=self.optimizer, rng=rng_state(),
                metrics=self.history[-1] if self.history else {},
                extra=self._extra(interrupted=True, step=step, partial=sums),
            )
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

    def _info(self, resumed: bool, start_step: int) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir.path), "spec": self.spec.name,
            "parameters": self.parameters, "dataset": self.train_set.name,
            "train_images": len(self.train_images), "test_images": len(self.test_images),
            "device": _describe(self.device), "precision": self.precision.name,
            "batch_size": self.spec.train.batch_size, "world_size": self.env.world_size,
            "epochs": self.spec.train.epochs, "resumed": resumed,
            "start_epoch": self.completed, "start_step": start_step,
        }

    def _write_summary(self, status: str) -> dict[str, Any]:
        t = self.spec.train
        speeds = [r["images_per_s"] for r in self.history if r["images_per_s"] > 0]
        summary = {
            "spec": self.spec.name,
            "status": status,
            "run_dir": str(self.run_dir.path),
            "dataset": {
                "name": self.train_set.name,
                "source": str(getattr(self.train_set, "source", "")),
                "train_images": len(self.train_images),
                "test_images": len(self.test_images),
                "classes": list(self.train_set.classes),
                **self._folder_summary(),
            },
            "epochs": t.epochs,
            "epochs_completed": self.completed,
            "best_epoch": self.best["epoch"] if self.best else None,
            "best_test_acc": self.best["test_acc"] if self.best else None,
            "final": self.history[-1] if self.history else None,
            "device": _describe(self.device),
            "precision": self.precision.name,
            "world_size": self.env.world_size,
            "batch_size_per_process": t.batch_size,
            "parameters": self.parameters,
            "wall_seconds": self._wall(),
            "mean_images_per_s": sum(speeds) / len(speeds) if speeds else None,
            "epdo_version": __version__,
            "torch_version": str(torch.__version__),
        }
        if self.env.is_main:
            self.run_dir.write_summary(summary)
        return summary

    def _folder_summary(self) -> dict[str, Any]:
        f = self.folder
        if f is None:
            return {}
        return {"layout": f.layout, "in_memory": f.in_memory, "skipped": len(f.skipped),
                "record": str(self.run_dir.data), "files": f.info}

    def _result(self, summary: dict[str, Any]) -> RunResult:
        return RunResult(
            run_dir=self.run_dir.path, spec=self.spec, epochs=self.completed,
            best_epoch=self.best["epoch"] if self.best else None,
            best_test_acc=self.best["test_acc"] if self.best else None,
            final=self.history[-1] if self.history else None,
            history=list(self.history), summary=summary,
        )


def _num_classes(spec: Spec) -> int:
    """The number of classes of a spec's head (a classifier is needed to train)."""
    classes = spec.plan.num_classes
    if classes is None:
        raise TrainError(f"spec {spec.name!r} has no head layer: training needs a classifier")
    return classes


def _as_inputs(images: Any) -> Any:
    """A split's images as the loaders take them: uint8 pixels and streamed files as they
    are (converted on the device), other tensors as contiguous float32."""
    if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:
        return images.float().contiguous()
    return images


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)
