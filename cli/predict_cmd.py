"""`epdo predict`: classify (or segment) image and ``.npy`` files with an exported ONNX,
TorchScript, ``.pt2`` or ``.aoti.pt2`` model (a thin layer over
:mod:`epdo.exporters.runtime` and, for a segmentation, :mod:`epdo.exporters.masks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from epdo.cli.app import console, fail, print_error, print_json, print_note
from epdo.cli.text import literal, shown

SOME_INPUTS_FAILED = 1


def _segment(classifier: Any, model: Path, inputs: list[Path], out: Path | None,
             overlay: bool, top_k: int, batch_size: int, as_json: bool) -> None:
    """Segment the inputs (masks written under ``out`` when given); print the shares of the
    classes."""
    from epdo.exporters.masks import segment_files

    results = segment_files(classifier, inputs, out, overlay=overlay, batch_size=batch_size)
    failed = [r for r in results if not r.ok]
    for r in failed:
        print_error(shown(f"{r.input}: {r.error}"))
    good = [r for r in results if r.ok]
    if as_json:
        print_json([r.to_dict(classifier.classes) for r in results])
    elif good:
        table = Table(title=literal(f"{model.name} (segmentation, "
                                    f"{', '.join(classifier.providers)})"))
        for col in ("input", "size", "class", "index", "pixels", "mask"):
            table.add_column(col, justify="right" if col in ("index", "pixels") else "left",
                             no_wrap=col not in ("input", "mask"))
        for r in good:
            for rank, (index, name, fraction) in enumerate(r.dominant(classifier.classes,
                                                                       top_k)):
                first = rank == 0
                table.add_row(literal(r.input if first else ""),
                              f"{r.size[1]}x{r.size[0]}" if first and r.size else "",
                              literal(name), str(index), f"{100 * fraction:.1f}%",
                              literal((r.mask or "") if first else ""))
            table.add_section()
        console.print(table)
    if failed:
        raise typer.Exit(SOME_INPUTS_FAILED)


def predict_command(
    model: Annotated[Path, typer.Argument(
        metavar="MODEL", help="An exported model: .onnx (onnxruntime), .ts (TorchScript), "
        ".pt2 (torch.export program, run by torch) or .aoti.pt2 (AOTInductor package: "
        "compiled native code, CPU only; run only with --trust).")],
    inputs: Annotated[list[Path], typer.Argument(
        metavar="INPUTS", help="Image files (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM) or .npy "
        "arrays (uint8, or float in [0, 1]; HxW, CxHxW or HxWxC).")],
    provider: Annotated[str, typer.Option(
        "--provider", help="auto (CUDA when onnxruntime-gpu, or for .ts/.pt2 torch, and a "
        "GPU are present), cuda or cpu.")] = "auto",
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", min=1, help="Classes to show per input.")] = 3,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Inputs per run.")] = 64,
    trust: Annotated[bool, typer.Option(
        "--trust", help="You vouch for the file: use an artifact that carries no digest (not "
        "written by epdo export, or edited since), and run an .aoti.pt2 package's native "
        "code. A digest that does not match is refused all the same.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list, one object per input in order: {input, top_k, "
        "logits}, and an error (top_k and logits empty) for an input that failed; for a "
        "segmentation {input, size, mask, overlay, classes: [{index, class, color, "
        "fraction}]}, the fractions of the mask's pixels per class.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Segmentation models: write the mask of each input as "
        "DIR/<stem>.png (the input's own size, palette PNG, class names in its 'classes' "
        "text chunk); files there are replaced. Inputs with the same stem are refused.")] = None,
    overlay: Annotated[bool, typer.Option(
        "--overlay", help="With --out: also write DIR/<stem>_overlay.png, the image blended "
        "with the mask's colours.")] = False,
) -> None:
    """Top-k classes and probabilities of each input, preprocessed as the model's metadata
    says (grayscale or RGB, resized, scaled to [0, 1]); for a segmentation model the share
    of the dominant classes of each input's pixels, and with --out its mask.

    The model is checked before anything runs: its digest, its metadata against its graph.
    A bad input (unreadable, not a regular file, not an image, too many pixels, wrong shape)
    gets an error line naming it; the others are predicted all the same.

    Exit code: 0 when all were predicted, 1 when some failed, 2 for usage errors (bad model,
    --out for a classifier, two inputs that would write the same mask).
    """
    from epdo.exporters.runtime import load_classifier, predict_files

    if provider not in ("auto", "cpu", "cuda"):
        fail(f"--provider: choose auto, cpu or cuda, got {provider!r}")
    if overlay and out is None:
        fail("--overlay is written beside the masks: give --out DIR too")
    classifier = load_classifier(model, provider=provider, batch_size=batch_size, trust=trust)
    if not classifier.verified:
        print_note(shown(f"warning: {model}: unverified artifact (no digest), used because "
                         "of --trust"))
    if classifier.segments:
        _segment(classifier, model, inputs, out, overlay, top_k, batch_size, as_json)
        return
    if out is not None:
        fail(f"--out {shown(out)}: writes the masks of a segmentation model; {shown(model)} "
             f"is a classifier (epdo.task {classifier.task!r}): leave --out away")
    results = predict_files(classifier, inputs, top_k=top_k, batch_size=batch_size)
    failed = [r for r in results if not r.ok]
    for r in failed:
        print_error(shown(f"{r.input}: {r.error}"))
    good = [r for r in results if r.ok]
    if as_json:
        print_json([r.to_dict() for r in results])
    elif good:
        table = Table(title=literal(f"{model.name} ({', '.join(classifier.providers)})"))
        for col in ("input", "rank", "class", "index", "probability"):
            table.add_column(col, justify="right" if col in ("rank", "index", "probability")
                             else "left", no_wrap=col != "input")
        for r in good:
            for rank, p in enumerate(r.top_k, start=1):
                table.add_row(literal(r.input if rank == 1 else ""), str(rank), literal(p.label),
                              str(p.index), f"{p.probability:.4f}")
            table.add_section()
        console.print(table)
    if failed:
        raise typer.Exit(SOME_INPUTS_FAILED)
