"""`epdo train`: train a spec's model and write a run directory (thin over
:func:`epdo.zoo.training.train`).

Exit codes: 0 done; 1 the loss became non-finite (the last good checkpoint is kept);
2 an input problem (spec, data, checkpoint, flags) reported on one line; 130 Ctrl-C (the
state so far is saved and the command to resume is printed).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import typer

from epdo.cli.main import app, console, err_console, fail, input_errors

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED = 130


def _input_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "fix the input": exit code 2 with their one line."""
    from epdo.zoo.checkpoint import CheckpointError
    from epdo.zoo.training import TrainError

    types: list[type[BaseException]] = [CheckpointError, TrainError]
    try:
        from epdo.zoo.data import DataError
    except ImportError:  # the data module is optional for this command's imports
        pass
    else:
        types.append(DataError)
    return tuple(types)


def training_errors(func: F) -> F:
    """Spec/file errors (via :func:`input_errors`), plus data, checkpoint and training errors,
    non-finite losses (exit 1) and Ctrl-C (exit 130)."""
    from epdo.zoo.training import NonFiniteLossError, TrainingInterrupted

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _input_error_types() as exc:
            _fail_once(str(exc))
        except NonFiniteLossError as exc:
            _fail_once(str(exc), code=1)
        except TrainingInterrupted as exc:
            if exc.checkpoint is not None:
                where = f"after epoch {exc.epoch}" + (f", step {exc.step}" if exc.step else "")
                err_console.print(
                    f"interrupted {where}; state saved to {exc.checkpoint}\n"
                    f"resume with: epdo train --resume {exc.run_dir}",
                    highlight=False, soft_wrap=True,
                )
            raise typer.Exit(INTERRUPTED) from None
        except KeyboardInterrupt:
            if _is_rank_zero():
                err_console.print("interrupted; no checkpoint was saved", highlight=False)
            raise typer.Exit(INTERRUPTED) from None

    return input_errors(wrapper)  # type: ignore[return-value]


@app.command("train")
@training_errors
def train_command(
    spec: str | None = typer.Argument(
        None, metavar="SPEC",
        help="A spec: a YAML file or a shipped spec name (optional with --resume).",
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Number of epochs."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Batch size per process (x processes under torchrun)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Base learning rate."),
    dataset: str | None = typer.Option(
        None, "--dataset", help="mnist-rot, rotated-idx, idx, sample, sample-upright, cifar10, "
        "cifar100."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Where the dataset files are."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of weights, order, augmentation."),
    device: Literal["auto", "cpu", "cuda"] = typer.Option(
        "auto", "--device", help="auto: CUDA when available, else CPU."
    ),
    amp: bool | None = typer.Option(
        None, "--amp/--no-amp", help="Mixed precision on CUDA (bf16, or fp16 with a scaler) "
        "or float32; default: the spec's train.precision (fp32 for the papers' specs).",
        show_default=False,
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    out: str | None = typer.Option(
        None, "--out", help="Run directory (default runs/<spec>/<timestamp>/)."
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="Continue the run in this directory from checkpoint-last.pt."
    ),
    no_augment: bool = typer.Option(
        False, "--no-augment", help="Train without the spec's augmentation (upright images)."
    ),
) -> None:
    """Train a spec's model: metrics per epoch, checkpoints, and the test accuracy."""
    from epdo.zoo.training import RichProgress, train

    if spec is None and resume is None:
        fail("give a SPEC to train (e.g. quickstart), or --resume RUN_DIR")
    result = train(
        spec, epochs=epochs, batch_size=batch_size, lr=lr, dataset=dataset, data_dir=data_dir,
        seed=seed, device=device, amp=amp, workers=workers, out=out, resume=resume,
        augment=False if no_augment else None, progress=RichProgress(console),
    )
    if not _is_rank_zero():
        return
    if result.final is None:
        console.print(f"nothing was trained: {result.run_dir} has no completed epoch")
        return
    final = result.final
    console.print(
        f"final test accuracy: {100 * final['test_acc']:.2f}% (epoch {final['epoch']}; best "
        f"{100 * (result.best_test_acc or 0.0):.2f}% at epoch {result.best_epoch}); "
        f"run directory: {result.run_dir}",
        highlight=False, soft_wrap=True,
    )


def _is_rank_zero() -> bool:
    """Under torchrun only rank 0 prints."""
    return os.environ.get("RANK", "0") == "0"


def _fail_once(message: str, code: int = 2) -> None:
    """:func:`fail` on rank 0; the same exit code, silently, on the other ranks."""
    if _is_rank_zero():
        fail(message, code)
    raise typer.Exit(code)
