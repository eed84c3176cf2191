"""`epdo export`: a verified ONNX, TorchScript or torch.export (``.pt2`` program,
``.aoti.pt2`` AOTInductor package) artifact of a trained checkpoint (a thin layer over
:func:`epdo.exporters.export.export_model`).

Exit codes: 0 written; 1 the artifact did not verify (nothing written); 2 an input problem
(checkpoint, existing target, flags, ``--format aoti`` without a C++ compiler) reported on
one line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from epdo.cli.app import console, fail, print_json, print_note, result_is_final
from epdo.cli.text import literal
from epdo.exporters.formats import FORMATS, all_formats


def report_table(report: Any) -> Table:
    """The verification checks as a Rich table."""
    table = Table(title=literal(f"verification of {report.spec_name} ({report.format})"))
    for col in ("inputs", "batch", "max abs error", "max rel error",
                report.kind.agreement_name):
        table.add_column(col, justify="left" if col == "inputs" else "right", no_wrap=True)
    for c in report.checks:
        table.add_row(literal(c.inputs), str(c.batch), f"{c.max_abs:.2e}", f"{c.max_rel:.2e}",
                      f"{100 * c.agreement:.2f}%" if report.kind.dense
                      else f"{100 * c.agreement:.1f}%")
    return table


def _line(text: str) -> None:
    """One line on stdout, printed literally (no markup, no emoji codes)."""
    console.print(literal(text), highlight=False)


def _print_report(report: Any) -> None:
    console.print(report_table(report))
    _line(f"real images: {report.real_images}")
    rotation = report.rotation_text()
    if rotation is not None:
        _line(rotation)
    _line(f"export {report.export_seconds:.2f} s, verification "
          f"{report.verify_seconds:.2f} s (atol {report.atol:g})")


def export_command(
    checkpoint: str = typer.Argument(
        None, help="Checkpoint file or run directory; default: the best checkpoint of the "
        "most recent run under runs/."),
    format: str = typer.Option(
        "onnx", "--format", "-f", help="; ".join(f.summary for f in all_formats()) + "."),
    output: str = typer.Option(None, "--output", "-o",
                               help="Artifact path; default <spec_name> and the format's "
                               "suffix, beside the checkpoint."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset; default and minimum: the "
                              "exporter's (17)."),
    atol: float = typer.Option(None, "--atol", help="Largest accepted abs error of the logits "
                               "(a finite number >= 0); default: the format's (1e-4)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing artifact."),
    runs: str = typer.Option("runs", "--runs", help="Where to look for the latest run."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
    triton: str = typer.Option(None, "--triton", help="Also write a Triton model repository "
                               "entry for the artifact under this folder (DIR/<name>/"
                               "config.pbtxt, labels.txt, 1/model.onnx); onnx only."),
) -> None:
    """Export a trained model to an artifact format, verified against PyTorch: the artifact
    is loaded as serving loads it and must agree with the model."""
    from epdo.exporters.export import VerificationError, export_model
    from epdo.zoo.checkpoint import latest_checkpoint

    if format not in FORMATS:
        fail(f"--format {format!r}: use {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    if atol is not None and (not math.isfinite(atol) or atol < 0):
        fail(f"--atol {atol:g}: the tolerance must be a finite number >= 0")
    from epdo.exporters.formats import format_named

    if triton is not None and format_named(format).triton_platform is None:
        fail(f"--triton: Triton has no backend epdo targets for --format {format}; use "
             "--format onnx")
    if checkpoint is None:
        source = latest_checkpoint(runs)
        print_note(f"exporting the latest run's checkpoint: {source}")
    else:
        source = Path(checkpoint)
    try:
        report = export_model(source, format, output, opset=opset, atol=atol, force=force)
    except VerificationError as exc:
        if exc.report is not None and not as_json:
            console.print(report_table(exc.report))
        raise
    repository = None
    if triton is not None:
        from epdo.exporters.triton import write_repository

        repository = write_repository(report.path, triton)
    result_is_final()
    if as_json:
        print_json({**report.to_dict(), "triton": os.fspath(repository) if repository else None})
        return
    _print_report(report)
    _line(f"wrote {os.fspath(report.path)}")
    if repository is not None:
        _line(f"wrote the Triton model {repository} (config.pbtxt, labels.txt, 1/)")
