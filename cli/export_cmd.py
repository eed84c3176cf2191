"""`epdo export`: a verified ONNX or TorchScript artifact of a trained checkpoint (a thin
layer over :func:`epdo.exporters.export.export_model`).

Exit codes: 0 written; 1 the artifact did not verify (nothing written); 2 an input problem
(checkpoint, existing target, flags) reported on one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from epdo.cli.main import _print_json, app, console, err_console, fail

VERIFICATION_FAILED = 1
CHECKPOINT_NAMES = ("checkpoint-best.pt", "checkpoint-last.pt")


def latest_checkpoint(runs: Path) -> Path:
    """The best checkpoint of the most recent run under ``runs`` (by the modification time
    of its checkpoint files); its last checkpoint when it has no best."""
    newest: tuple[float, Path] | None = None
    for name in CHECKPOINT_NAMES:
        for ckpt in runs.glob(f"**/{name}"):
            mtime = ckpt.stat().st_mtime
            if newest is None or mtime > newest[0]:
                newest = (mtime, ckpt.parent)
    if newest is None:
        raise FileNotFoundError(f"{runs}: no checkpoint found; pass a checkpoint or run directory")
    run_dir = newest[1]
    for name in CHECKPOINT_NAMES:
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no checkpoint")  # pragma: no cover - raced away


def report_table(report: Any) -> Table:
    """The verification checks as a Rich table."""
    table = Table(title=f"verification of {report.spec_name} ({report.format})")
    for col in ("inputs", "batch", "max abs error", "max rel error", "top-1 agreement"):
        table.add_column(col, justify="left" if col == "inputs" else "right", no_wrap=True)
    for c in report.checks:
        table.add_row(c.inputs, str(c.batch), f"{c.max_abs:.2e}", f"{c.max_rel:.2e}",
                      f"{100 * c.agreement:.1f}%")
    return table


def _print_report(report: Any) -> None:
    console.print(report_table(report))
    console.print(f"real images: {report.real_images}")
    if report.rotation_max_rel is not None:
        console.print(f"90° rotation invariance of the logits: max relative difference "
                      f"{report.rotation_max_rel:.2e}")
    console.print(f"export {report.export_seconds:.2f} s, verification "
                  f"{report.verify_seconds:.2f} s (atol {report.atol:g})")


@app.command("export")
def export_command(
    checkpoint: str = typer.Argument(
        None, help="Checkpoint file or run directory; default: the best checkpoint of the "
        "most recent run under runs/."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    output: str = typer.Option(None, "--output", "-o",
                               help="Artifact path; default <spec_name>.onnx|.ts beside the "
                               "checkpoint."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 17)."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest accepted abs error of the logits."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing artifact."),
    runs: str = typer.Option("runs", "--runs", help="Where to look for the latest run."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Export a trained model to ONNX or TorchScript, verified against PyTorch."""
    from epdo.exporters.export import ExportError, VerificationError, export_model

    if format not in ("onnx", "torchscript"):
        fail(f"--format {format!r}: use onnx or torchscript")
    if checkpoint is None:
        try:
            source = latest_checkpoint(Path(runs))
        except (FileNotFoundError, OSError) as exc:
            fail(str(exc))
        err_console.print(f"exporting the latest run's checkpoint: {source}", highlight=False,
                          soft_wrap=True)
    else:
        source = Path(checkpoint)
    try:
        report = export_model(source, format, output, opset=opset, atol=atol, force=force)
    except VerificationError as exc:
        if exc.report is not None and not as_json:
            console.print(report_table(exc.report))
        fail(str(exc), VERIFICATION_FAILED)
    except ExportError as exc:
        fail(str(exc))
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        fail(f"{exc.filename or ''}: {exc.strerror}")
    if as_json:
        _print_json(report.to_dict())
        return
    _print_report(report)
    console.print(f"wrote {os.fspath(report.path)}", highlight=False)
