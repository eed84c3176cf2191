"""Reporting a run as it goes.

The trainer calls a :class:`Progress` object (on rank 0 only). :class:`NullProgress` says
nothing (the library default); :class:`RichProgress` draws, on a terminal, one transient
bar per epoch with the running loss, accuracy, images/s and ETA, and prints a one-line
summary when the epoch ends. When the console is not a terminal (CI logs, a pipe) it prints
the one-line summaries only.
"""

from __future__ import annotations

from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar

__all__ = ["NullProgress", "Progress", "RichProgress", "epoch_line"]


class Progress(Protocol):
    """What the trainer reports; every method may be a no-op."""

    def run_started(self, info: dict[str, Any]) -> None:
        """The run is set up: ``info`` has run_dir, spec, parameters, dataset, device, ..."""

    def epoch_started(self, epoch: int, epochs: int, steps: int, lr: float) -> None:
        """Epoch ``epoch`` (1-based) of ``epochs`` begins with ``steps`` training steps."""

    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None:
        """``done`` steps are finished; running mean loss and accuracy so far."""

    def evaluating(self, steps: int) -> None:
        """Training of the epoch is over; the test set (``steps`` batches) is evaluated."""

    def epoch_finished(self, record: dict[str, Any], best: bool) -> None:
        """The epoch's ``metrics.jsonl`` record; ``best``: a new best test accuracy."""

    def data_progress(self, what: str, done: int, total: int) -> None:
        """Preparing the data: ``done`` of ``total`` items of ``what`` (e.g. ``"decoding
        train images"``) are finished."""

    def note(self, line: str) -> None:
        """One line the user should read before training starts (files left out, a
        conversion, statistics computed)."""

    def close(self) -> None:
        """Release the terminal (on success, error or interruption)."""


class NullProgress:
    """Reports nothing."""

    def run_started(self, info: dict[str, Any]) -> None:
        pass

    def epoch_started(self, epoch: int, epochs: int, steps: int, lr: float) -> None:
        pass

    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None:
        pass

    def evaluating(self, steps: int) -> None:
        pass

    def epoch_finished(self, record: dict[str, Any], best: bool) -> None:
        pass

    def data_progress(self, what: str, done: int, total: int) -> None:
        pass

    def note(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


def epoch_line(record: dict[str, Any], epochs: int, best: bool = False) -> str:
    """One line summing up an epoch's record."""
    width = len(str(epochs))
    return (
        f"epoch {record['epoch']:>{width}}/{epochs}  lr {record['lr']:.3g}  "
        f"train loss {record['train_loss']:.4f} acc {100 * record['train_acc']:.2f}%  "
        f"test loss {record['test_loss']:.4f} acc {100 * record['test_acc']:.2f}%  "
        + (f"mIoU {100 * record['test_miou']:.2f}%  " if "test_miou" in record else "")
        + f"{record['images_per_s']:.0f} img/s  {record['seconds']:.1f}s"
        + ("  (best)" if best else "")
    )


class RichProgress:
    """Bars on a terminal, one line per epoch everywhere."""

    def __init__(self, console: Console | None = None, *, bars: bool | None = None) -> None:
        self.console = console or Console()
        self.bars = self.console.is_terminal if bars is None else bars
        self._bar: RichBar | None = None
        self._task: Any = None
        self._epochs = 0
        self._data = ""

    def run_started(self, info: dict[str, Any]) -> None:
        # a folder, a spec's or a dataset's name is the user's text: never read as markup
        self.console.print(f"run directory: {info['run_dir']}", highlight=False, soft_wrap=True,
                           markup=False, emoji=False)
        world = info["world_size"]
        batch = f"{info['batch_size']}" + (f" x {world} processes" if world > 1 else "")
        self.console.print(
            f"training {info['spec']} ({info['parameters']:,} parameters) on "
            f"{info['dataset']} ({info['train_images']:,} train / {info['test_images']:,} test "
            f"images), {info['device']} {info['precision']}, batch {batch}, "
            f"{info['epochs']} epochs",
            highlight=False, soft_wrap=True, markup=False, emoji=False,
        )
        if info.get("resumed"):
            self.console.print(f"resuming after epoch {info['start_epoch']}"
                               + (f", step {info['start_step']}" if info["start_step"] else ""),
                               highlight=False)

    def data_progress(self, what: str, done: int, total: int) -> None:
        if not self.bars:
            return
        if self._bar is None or self._data != what:
            self.close()
            self._data = what
            self._bar = RichBar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=True,
            )
            # the description is epdo's own text ("decoding train images"), never a path
            self._task = self._bar.add_task(what, total=total)
            self._bar.start()
        self._bar.update(self._task, completed=done)
        if done >= total:
            self.close()

    def note(self, line: str) -> None:
        self.close()
        # file and class names are the user's text: never read as markup
        self.console.print(f"note: {line}", highlight=False, soft_wrap=True, markup=False,
                           emoji=False)

    def epoch_started(self, epoch: int, epochs: int, steps: int, lr: float) -> None:
        self._epochs = epochs
        if not self.bars:
            return
        self.close()
        self._bar = RichBar(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} acc {task.fields[acc]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[phase]}"),
            console=self.console,
            transient=True,
        )
        self._task = self._bar.add_task(
            "train", total=steps, epoch=f"{epoch}/{epochs}", loss="-", acc="-", speed="-",
            phase="",
        )
        self._bar.start()

    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task, completed=done, loss=f"{loss:.4f}", acc=f"{100 * acc:.1f}%",
                speed=f"{images_per_s:.0f}",
            )

    def evaluating(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, phase="testing")

    def epoch_finished(self, record: dict[str, Any], best: bool) -> None:
        self.close()
        self.console.print(epoch_line(record, self._epochs, best), highlight=False,
                           soft_wrap=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self._data = ""
