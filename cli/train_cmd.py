"""`epdo train`: train a spec's model and write a run directory (thin over
:func:`epdo.zoo.training.train`).

Exit codes: 0 done; 1 the loss became non-finite (the last good checkpoint is kept);
2 an input problem (spec, data, checkpoint, flags) reported on one line; 130 Ctrl-C (the
state so far is saved and the command to resume is printed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import typer

from epdo.cli.app import INTERRUPTED, console, fail, print_note
from epdo.cli.text import literal

F = TypeVar("F", bound=Callable[..., Any])


def interruptible(func: F) -> F:
    """Ctrl-C exits with code 130, saying where the state was saved and how to resume (the
    other errors take the one error path of :func:`epdo.cli.app.handles_errors`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from epdo.zoo.training import TrainingInterrupted

        try:
            return func(*args, **kwargs)
        except TrainingInterrupted as exc:
            if exc.checkpoint is not None:
                where = f"after epoch {exc.epoch}" + (f", step {exc.step}" if exc.step else "")
                print_note(f"interrupted {where}; state saved to {exc.checkpoint}\n"
                           f"resume with: epdo train --resume {exc.run_dir}")
            raise typer.Exit(INTERRUPTED) from None
        except KeyboardInterrupt:
            print_note("interrupted; no checkpoint was saved")
            raise typer.Exit(INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


@interruptible
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
        "cifar100, seg-sample, seg-sample-upright, folder:PATH (your images, one subfolder "
        "per class) or seg:PATH (your images and masks: PATH/images/ and PATH/masks/)."
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
    workers: int | None = typer.Option(
        None, "--workers", min=0, help="DataLoader worker processes (default: 0 for data in "
        "memory, up to 4 for images streamed from disk).", show_default=False,
    ),
    input_size: int | None = typer.Option(
        None, "--input-size", min=1, help="Model input size in pixels (square), replacing "
        "the spec's; images are fitted to it as the spec's input.fit says.",
    ),
    channels: int | None = typer.Option(
        None, "--channels", min=1, help="Model input channels (1 grayscale, 3 RGB), replacing "
        "the spec's.",
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out image files that cannot be read (they are listed "
        "in the run folder's data.json) instead of stopping.",
    ),
    memory_budget: str | None = typer.Option(
        None, "--memory-budget", help="Decoded images kept in memory at most, e.g. 800M or 4G "
        "(default $EPDO_DATA_MEMORY or 2G); beyond it they are streamed from disk.",
    ),
    out: str | None = typer.Option(
        None, "--out", help="Run directory: a new or empty folder (default "
        "runs/<spec>/<timestamp>/)."
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="Continue the run in this directory from checkpoint-last.pt "
        "(a run killed in its first epoch: from checkpoint-best.pt or its spec.yaml)."
    ),
    no_augment: bool = typer.Option(
        False, "--no-augment", help="Train without the spec's augmentation (upright images)."
    ),
) -> None:
    """Train a spec's model: metrics per epoch, checkpoints, and the test accuracy."""
    from epdo.zoo.training import RichProgress, train
    from epdo.zoo.training.distributed import is_main_process

    if spec is None and resume is None:
        fail("give a SPEC to train (e.g. quickstart), or --resume RUN_DIR")
    result = train(
        spec, epochs=epochs, batch_size=batch_size, lr=lr, dataset=dataset, data_dir=data_dir,
        seed=seed, device=device, amp=amp, workers=workers, out=out, resume=resume,
        augment=False if no_augment else None, progress=RichProgress(console),
        input_size=input_size, channels=channels, skip_bad=skip_bad,
        memory_budget=memory_budget,
    )
    if not is_main_process():
        return
    if result.final is None:
        console.print(literal(f"nothing was trained: {result.run_dir} has no completed epoch"),
                      highlight=False, soft_wrap=True)
        return
    final = result.final
    if "test_miou" in final:  # a segmentation: the best epoch is the best mean IoU
        score, key, best = "mIoU", "test_miou", result.best_test_miou
    else:
        score, key, best = "accuracy", "test_acc", result.best_test_acc
    console.print(
        literal(f"final test {score}: {100 * final[key]:.2f}% (epoch {final['epoch']}; "
                f"best {100 * (best or 0.0):.2f}% at epoch {result.best_epoch}); "
                f"run directory: {result.run_dir}"),
        highlight=False, soft_wrap=True,
    )

