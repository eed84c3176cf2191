"""`epdo eval`: test loss, accuracy (a segmentation's mIoU, IoU and Dice), confusion matrix,
images/s and accuracy against rotation angle of trained checkpoints, with rotation
test-time augmentation, several runs side by side (a thin layer over
:mod:`epdo.zoo.comparison`, :mod:`epdo.zoo.evaluation` and :mod:`epdo.zoo.plotting`).
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
    speed = f", {report.images_per_second:,.0f} images/s" if report.images_per_second else ""
    _line((str(report.model), "bold"), f"{where} on {report.dataset} {report.split}: "
          f"{report.num_images:,} images, device {report.device}{speed}")
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


def _comparison_table(reports: list[Any], runs: list[str]) -> Table:
    """One row per run and TTA setting: the score unrotated and over the angles, images/s
    and the time per image against the same run without TTA."""
    from epdo.zoo.tta import tta_label

    score = reports[0].score_name
    table = Table(title=f"{score} and speed by run and TTA (images/s measured in this run)",
                  title_justify="left")
    cols = ["run", "TTA", score]
    if reports[0].angles:
        cols += ["mean (angles)", "min (angles)"]
    for col in (*cols, "images/s", "time"):
        table.add_column(col, justify="left" if col in ("run", "TTA") else "right")
    alone = {r.checkpoint: r.images_per_second for r in reports if r.tta_views == 1}
    for report, run in zip(reports, runs, strict=True):
        cells = [literal(run), tta_label(report.tta, report.tta_flip, short=True),
                 f"{100.0 * report.score:.2f}%"]
        if report.angles:
            scores = [a.score for a in report.angles]
            cells += [f"{100.0 * sum(scores) / len(scores):.2f}%", f"{100.0 * min(scores):.2f}%"]
        speed, base = report.images_per_second, alone.get(report.checkpoint)
        cells += ["-" if speed is None else f"{speed:,.0f}",
                  f"{base / speed:.1f}x" if speed and base else "-"]
        table.add_row(*cells)
    return table


def _angle_columns(reports: list[Any], labels: list[str]) -> Table:
    """The score of every report (columns) at every angle (rows)."""
    table = Table(title=f"{reports[0].score_name} on the rotated test set (counter-clockwise)",
                  title_justify="left")
    table.add_column("angle", justify="right", no_wrap=True)
    for label in labels:
        table.add_column(literal(label), justify="right")
    for i, a in enumerate(reports[0].angles):
        table.add_row(f"{a.degrees:g}°", *(f"{100.0 * r.angles[i].score:.2f}%" for r in reports))
    return table


def _print_comparison(reports: list[Any], labels: list[str], runs: list[str]) -> None:
    for report in dict((r.checkpoint, r) for r in reports).values():
        epoch = f", epoch {report.epoch}" if report.epoch is not None else ""
        _line((str(report.model), "bold"), f" ({report.checkpoint}{epoch}) on "
              f"{report.dataset} {report.split}: {report.num_images:,} images, device "
              f"{report.device}")
    console.print(_comparison_table(reports, runs))
    if reports[0].angles:
        console.print(_angle_columns(reports, labels))


def eval_command(
    sources: Annotated[list[Path], typer.Argument(
        metavar="RUN...", help="Checkpoint files or run directories; several are compared "
        "in one table and one --plot figure.")],
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
    tta: Annotated[str | None, typer.Option(
        "--tta", metavar="N[,N...]", help="Rotation test-time augmentation: average the "
        "softmax over N turns of each image by multiples of 360/N degrees (N divides 360; "
        "only N = 1, 2, 4 are exact on the pixel grid). Each run is evaluated without TTA "
        "and at each N (e.g. 4 or 1,4,8), with accuracy and images/s side by side.")] = None,
    tta_flip: Annotated[bool, typer.Option(
        "--tta-flip", help="Also mirror every TTA view (2N views).")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a PNG: accuracy (a segmentation's mIoU) against angle and "
        "the confusion matrix; with several runs or --tta, every run and setting against "
        "angle in one figure (needs --angles).")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Images per batch.")] = 256,
    device: Annotated[str, typer.Option(
        "--device", help="auto (CUDA when present), cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON only (a list of reports for several runs "
        "or --tta).")] = False,
) -> None:
    """Test loss, accuracy, confusion matrix and images/s of a trained model (a
    segmentation's mIoU, per-class IoU and Dice); with --angles, its accuracy (mIoU) on the
    test images rotated by each angle (what equivariance buys); with --tta, the same with
    rotation test-time augmentation; with several runs, all of them side by side."""
    from epdo.zoo.comparison import comparison_labels, evaluate_runs, run_names
    from epdo.zoo.eval_args import parse_tta
    from epdo.zoo.evaluation import EvalError, parse_angles
    from epdo.zoo.training.progress import RichProgress

    degrees = parse_angles(angles) if angles is not None else None
    counts = parse_tta(tta) if tta is not None else None
    several = len(sources) > 1 or counts is not None or tta_flip
    if plot is not None and several and degrees is None:
        raise EvalError("--plot of several runs or TTA settings draws score against angle; "
                        "add --angles, e.g. --angles 0:360:15")
    bars = RichProgress(err_console if as_json else console)
    try:
        reports = evaluate_runs(sources, tta=counts, tta_flip=tta_flip, dataset=dataset,
                                data_dir=data_dir, angles=degrees, batch_size=batch_size,
                                device=device, progress=bars.data_progress)
    finally:
        bars.close()
    labels = comparison_labels(reports)
    if as_json:
        print_json([r.to_dict() for r in reports] if several else reports[0].to_dict())
    elif several:
        _print_comparison(reports, labels, run_names(reports))
    else:
        _print_report(reports[0])
    if plot is not None:
        from epdo.zoo.plotting import plot_comparison, plot_report

        written = plot_comparison(reports, labels, plot) if several \
            else plot_report(reports[0], plot)
        (err_console if as_json else console).print(literal(f"plot written to {written}"),
                                                    highlight=False)
