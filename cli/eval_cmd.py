"""`epdo eval`: test loss, accuracy (a segmentation's mIoU, IoU and Dice), confusion matrix
and accuracy against rotation angle of a trained checkpoint (a thin layer over
:mod:`epdo.zoo.evaluation` and :mod:`epdo.zoo.plotting`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from epdo.cli.app import console, err_console, print_json
from epdo.cli.text import literal

_SPARKS = "▁▂▃▄▅▆▇█"
_CONFUSION_MAX = 20  # print the confusion matrix as a table up to this many classes


def sparkline(values: list[float]) -> str:
    """One block character per value in [0, 1] (absolute scale, so a flat curve is flat)."""
    top = len(_SPARKS) - 1
    return "".join(_SPARKS[min(top, max(0, round(v * top)))] for v in values)


def _confusion_table(report: Any) -> Table:
    table = Table(title="confusion matrix (rows: true class, columns: predicted)",
                  title_justify="left")
    table.add_column("true \\ pred", no_wrap=True)
    for name in report.classes:
        table.add_column(literal(name[:10]), justify="right", no_wrap=True)
    table.add_column("recall", justify="right", no_wrap=True)
    for i, (name, row) in enumerate(zip(report.classes, report.confusion, strict=True)):
        cells = []
        for j, count in enumerate(row):
            if i == j:
                cells.append(f"[bold green]{count}[/]")
            else:
                cells.append(f"[red]{count}[/]" if count else "[dim]·[/]")
        recall = report.per_class_accuracy[i]
        table.add_row(literal(name), *cells, "-" if recall is None else f"{100.0 * recall:.1f}%")
    return table


def _classes_table(report: Any) -> Table:
    """A segmentation's per-class IoU and Dice, and each class's share of the pixels."""
    table = Table(title="per class (pixels of the test masks)", title_justify="left")
    for col in ("class", "IoU", "Dice", "pixels"):
        table.add_column(col, justify="left" if col == "class" else "right", no_wrap=True)
    total = max(report.pixels or 0, 1)
    for name, row, iou, dice in zip(report.classes, report.confusion, report.iou,
                                    report.dice, strict=True):
        table.add_row(literal(name), "-" if iou is None else f"{100.0 * iou:.1f}%",
                      "-" if dice is None else f"{100.0 * dice:.1f}%",
                      f"{100.0 * sum(row) / total:.1f}%")
    return table


def _angles_table(report: Any) -> Table:
    base = report.score
    table = Table(title=f"{report.score_name} on the rotated test set (counter-clockwise)",
                  title_justify="left")
    seg = report.mean_iou is not None
    cols = ("angle", *(("mIoU", "pixel acc.") if seg else ("accuracy",)), "vs 0°", "loss", "")
    for col in cols:
        table.add_column(col, justify="left" if col == "" else "right", no_wrap=True)
    for a in report.angles:
        delta = 100.0 * (a.score - base)
        scores = (f"{100.0 * a.score:.2f}%", f"{100.0 * a.accuracy:.2f}%") if seg \
            else (f"{100.0 * a.accuracy:.2f}%",)
        table.add_row(f"{a.degrees:g}°", *scores, "0" if delta == 0 else f"{delta:+.2f}",
                      f"{a.loss:.4f}", "█" * round(20 * a.score))
    return table


def _line(*parts: str | tuple[str, str]) -> None:
    """One line on stdout from plain strings and ``(text, style)`` pairs, every text
    printed literally (no markup, no emoji codes)."""
    console.print(Text.assemble(*(literal(p) if isinstance(p, str) else literal(*p)
                                  for p in parts)), highlight=False)


def _print_report(report: Any) -> None:
    epoch = f", epoch {report.epoch}" if report.epoch is not None else ""
    where = f" ({report.checkpoint}{epoch})" if report.checkpoint else ""
    _line((str(report.model), "bold"), f"{where} on {report.dataset} {report.split}: "
          f"{report.num_images:,} images, device {report.device}")
    if report.mean_iou is not None:
        _print_segmentation(report)
        return
    _line(f"test loss {report.loss:.4f}   accuracy ", (f"{100.0 * report.accuracy:.2f}%", "bold"),
          f" ({report.correct:,}/{report.num_images:,})   error "
          f"{100.0 * (1.0 - report.accuracy):.2f}%")
    if len(report.classes) <= _CONFUSION_MAX:
        console.print(_confusion_table(report))
    else:
        recalls = [(r, c) for r, c in zip(report.per_class_accuracy, report.classes,
                                           strict=True) if r is not None]
        worst = ", ".join(f"{c} {100.0 * r:.0f}%" for r, c in sorted(recalls)[:5])
        _line(f"{len(report.classes)} classes (confusion matrix in --json / --plot); "
              f"lowest recall: {worst}")
    if report.angles:
        console.print(_angles_table(report))
        accs = [a.accuracy for a in report.angles]
        _line(f"accuracy against angle: {sparkline(accs)}   min "
              f"{100.0 * min(accs):.2f}%, mean {100.0 * sum(accs) / len(accs):.2f}%")


def _print_segmentation(report: Any) -> None:
    _line(f"test loss {report.loss:.4f}   mIoU ", (f"{100.0 * report.mean_iou:.2f}%", "bold"),
          f"   pixel accuracy {100.0 * report.accuracy:.2f}% ({report.pixels:,} pixels "
          "labelled)")
    console.print(_classes_table(report))
    if report.angles:
        console.print(_angles_table(report))
        scores = [a.score for a in report.angles]
        _line(f"mIoU against angle: {sparkline(scores)}   min {100.0 * min(scores):.2f}%, "
              f"mean {100.0 * sum(scores) / len(scores):.2f}%")


def eval_command(
    source: Annotated[Path, typer.Argument(
        metavar="CHECKPOINT_OR_RUN", help="A checkpoint file or a run directory.")],
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Dataset to evaluate on (default: the spec's train.dataset; a run "
        "trained on folder:PATH or seg:PATH is evaluated on the test files it recorded), "
        "folder:PATH or seg:PATH.")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Folder of the dataset's files (default: the spec's, $EPDO_DATA, "
        "the user cache).")] = None,
    angles: Annotated[str | None, typer.Option(
        "--angles", help="Also evaluate on the test set rotated by these degrees: "
        "start:stop:step (stop exclusive) like 0:360:15, or a list like 0,90,180.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a PNG: accuracy (a segmentation's mIoU) against angle and "
        "the confusion matrix.")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Images per batch.")] = 256,
    device: Annotated[str, typer.Option(
        "--device", help="auto (CUDA when present), cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON only.")] = False,
) -> None:
    """Test loss, accuracy and confusion matrix of a trained model (a segmentation's mIoU,
    per-class IoU and Dice); with --angles, its accuracy (mIoU) on the test images rotated
    by each angle (what equivariance buys)."""
    from epdo.zoo.evaluation import evaluate_checkpoint, parse_angles
    from epdo.zoo.training.progress import RichProgress

    degrees = parse_angles(angles) if angles is not None else None
    bars = RichProgress(err_console if as_json else console)
    try:
        report = evaluate_checkpoint(source, dataset=dataset, data_dir=data_dir,
                                     angles=degrees, batch_size=batch_size, device=device,
                                     progress=bars.data_progress)
    finally:
        bars.close()
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if plot is not None:
        from epdo.zoo.plotting import plot_report

        written = plot_report(report, plot)
        (err_console if as_json else console).print(literal(f"plot written to {written}"),
                                                    highlight=False)
