"""`epdo list`, `epdo info` and `epdo check`: the zoo's specs, one spec's layers and exact
input sizes (or an exported artifact's metadata), and a model's equivariance, per layer,
before or after training (thin layers over :mod:`epdo.zoo.catalog`,
:mod:`epdo.zoo.summary`, :mod:`epdo.zoo.exactness`, :mod:`epdo.exporters.loading` and
:mod:`epdo.zoo.check`).
"""

from __future__ import annotations

import re

import typer
from rich import box
from rich.table import Table

from epdo.cli.app import console, print_json, print_note
from epdo.cli.tables import Column, print_table
from epdo.cli.text import literal, shown


def _line(text: str) -> None:
    """A line (or paragraph) on stdout, printed literally (no markup, no emoji codes): in a
    terminal Rich wraps it at word boundaries, in a pipe it stays one line."""
    console.print(literal(text), highlight=False, soft_wrap=not console.is_terminal)


def _headline(text: str) -> str:
    """The first clause of a description (up to ':' or the end of its first sentence)."""
    return text.split(":")[0].split(". ")[0].strip()


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


_FIELD_TYPE = re.compile(r"^(\d+)x(.+) \((\w+)\)$")


def compact_type(name: str, group: str) -> str:
    """A layer's field type as the table shows it: ``4xregular (C8)`` reads ``4×regular``
    when C8 is the model's group (the table's title names it once), ``12x[regular,
    quotient4] (C16)`` reads ``12×regular+quotient4``; a group other than the model's stays
    (after a restriction: ``64×regular (C16)`` in a D16 model); logits stay as they are."""
    match = _FIELD_TYPE.match(name)
    if match is None:
        return name
    count, field, field_group = match.groups()
    if field.startswith("[") and field.endswith("]"):
        field = "+".join(part.strip() for part in field[1:-1].split(","))
    text = f"{count}×{field}"
    return text if field_group == group else f"{text} ({field_group})"


WIDE_HELP = "Show every column and the whole text, wrapped, however narrow the terminal."


def list_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """The shipped specs: name, group, discretization, parameters and what each is (its
    description's first clause; the whole description with --wide, or in 'epdo info
    NAME')."""
    from epdo.zoo.catalog import zoo_listing

    rows = zoo_listing()
    if as_json:
        print_json(rows)
        return
    columns = (Column("name"), Column("group"), Column("stencils"),
               Column("params", "number"), Column("description", "cut"))
    print_table(columns, [
        (r["name"], r["group"], "-" if r["group"] == "C1" else r["discretization"],
         f"{r['params']:,}", r["description"] if wide else _headline(r["description"]))
        for r in rows], title="epdo model zoo", wide=wide)


def info_command(
    spec: str = typer.Argument(
        ..., help="A spec (a YAML file or a shipped spec name) or an exported artifact "
        "(.onnx / .ts / .pt2 / .aoti.pt2)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    trust: bool = typer.Option(False, "--trust", help="Show an artifact that carries no "
                               "digest (unverified) instead of refusing it."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Layer table, total parameters, forward FLOPs per image and the input sizes at which
    it is exactly equivariant (the rule, from the plan) of a spec; for an exported artifact
    (.onnx / .ts / .pt2 / .aoti.pt2), its metadata, once its digest and metadata are
    checked.

    A narrow terminal leaves out the 'fields in' column (each layer's input is the previous
    layer's output); --wide shows it."""
    from epdo.exporters.formats import find_format

    if find_format(spec) is not None:
        _artifact_info(spec, as_json, trust, wide)
        return
    from epdo.zoo import build_model
    from epdo.zoo.exactness import size_rule
    from epdo.zoo.summary import summarize

    model = build_model(spec)
    summary = summarize(model)
    rule = size_rule(model.spec)
    if as_json:
        print_json({**summary.to_dict(), "exactness": rule.to_dict()})
        return
    c, h, w = summary.input_shape
    columns = (Column("layer"), Column("op"), Column("fields in", optional=True),
               Column("fields out"), Column("channels", "number"), Column("output"),
               Column("params", "number"), Column("FLOPs", "number"))
    group = summary.group
    rows = [(r.path, r.op, compact_type(r.type_in, group), compact_type(r.type_out, group),
             f"{r.channels_in}→{r.channels_out}", r.size_out, f"{r.params:,}",
             _human(r.flops)) for r in summary.rows]
    footer = ("total", "", "", "", "", "", f"{summary.params:,}", _human(summary.flops))
    print_table(columns, rows, footer=footer, wide=wide,
                title=f"{summary.name}: {group}, {summary.discretization}, "
                      f"input {c}x{h}x{w}")
    if summary.description:
        _line(summary.description)
    _line(f"parameters: {summary.params:,}   forward FLOPs per image: "
          f"{_human(summary.flops)} ({summary.flops:,})")
    _line(rule.line())


def _artifact_info(path: str, as_json: bool, trust: bool = False, wide: bool = False) -> None:
    """Print the metadata of an exported artifact (one error line if unreadable, tampered or
    of the wrong types; see :func:`epdo.exporters.loading.read_metadata`)."""
    from epdo.exporters.artifact import DIGEST_KEY
    from epdo.exporters.info import artifact_rows
    from epdo.exporters.loading import read_metadata

    meta = read_metadata(path, trust=trust)
    ver = meta["epdo.verification"]
    digest = ver.get(DIGEST_KEY)
    if digest is None:
        print_note(shown(f"warning: {path}: unverified artifact (no digest), shown because "
                         "of --trust"))
    if as_json:
        print_json(meta)
        return
    print_table((Column("key"), Column("value", "wrap")), artifact_rows(path, meta),
                title=f"{path}: exported {meta['epdo.spec_name']}", wide=wide)


def check_command(
    target: str = typer.Argument(
        ..., metavar="SPEC|RUN", help="A spec (a YAML file or a shipped spec name: random "
        "weights) or a run (a run directory or a .pt checkpoint: its trained weights)."),
    batch: int = typer.Option(8, "--batch", min=2, help="Number of test inputs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and inputs."),
    angles: str = typer.Option("15,45", "--angles",
                               help="Comma-separated rotations (degrees) that need resampling."),
    float32: bool = typer.Option(False, "--float32",
                                 help="Check in float32 instead of float64."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Equivariance of a model, before training (a spec, random weights) or after (a run):
    the final logits beside a plain CNN, every layer's error at the quarter turns (and flips)
    and at --angles, where exactness breaks and why, and the exact input sizes."""
    from epdo.zoo.check import run_check
    from epdo.zoo.eval_args import parse_angles

    extra = tuple(parse_angles(angles, option="--angles", allow_empty=True))
    result = run_check(target, batch=batch, seed=seed, angles=extra, float64=not float32,
                       warn=lambda line: print_note(f"note: {line}"))
    if as_json:
        print_json(result.to_dict())
        return
    report = result.logits
    table = Table(title=literal(f"equivariance of {target} ({report.group}, {report.dtype}, "
                             f"{report.batch} inputs)"))
    for col in ("transform", "grid-exact", "in group", "model", "model floor", "plain CNN",
                "CNN floor"):
        table.add_column(col, justify="left" if col == "transform" else "right", no_wrap=True)

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2e}"

    for r in report.rows:
        table.add_row(literal(r.transform), "yes" if r.grid_exact else "no",
                      "yes" if r.in_group else "no",
                      fmt(r.model_error), fmt(r.model_floor), fmt(r.cnn_error), fmt(r.cnn_floor))
    _line(result.source)
    console.print(table)
    if report.maps:
        _line("errors: ||f(g.x) - g.f(x)|| / ||f(x) - mean f|| over the inputs, inside the "
              "inscribed disk (the map of per-pixel logits turns with the input); floor: the "
              "same for an input rotated there and back (interpolation error alone)")
    else:
        _line("errors: ||f(g.x) - f(x)|| / ||f(x) - mean f|| over the inputs; floor: the "
              "same for an input rotated there and back (interpolation error alone)")
    what = "equivariance" if report.maps else "invariance"
    _line(f"logit variation across inputs: {report.output_variation:.3f} "
          f"(non-zero: the {what} is not vacuous)")
    _line(f"max error over grid-exact group elements: {report.max_exact_error:.2e}")
    _layer_table(result.layers)
    _line(result.rule.line())


def _layer_table(report) -> None:
    """The per-layer report (:class:`epdo.zoo.layer_equivariance.LayerReport`): a row per
    block, a column per transformation, then where exactness breaks."""
    table = Table(title=literal(f"per-layer equivariance error of {report.name} "
                                f"({report.group}, {report.dtype})"),
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  padding=(0, 1, 0, 0))
    for col in ("layer", "op", "output", "size"):
        table.add_column(col, no_wrap=col != "output")
    for c in report.columns:
        table.add_column(literal(c.name), justify="right", no_wrap=True)
    def cell(err: float | None, symmetric: bool) -> str:
        if err is None:
            return "-"
        text = f"{err:.0e}" if err < 1e-3 else f"{err:.2f}"  # round-off: its magnitude
        return text if symmetric else f"[dim]{text}[/dim]"

    for row in report.rows:
        cells = [cell(e, s) for e, s in zip(row.errors, row.symmetric, strict=True)]
        table.add_row(literal(row.label), literal(row.op), literal(row.fields),
                      literal(row.size), *cells)
    console.print(table)
    _line("per layer: ||f_i(g.x) - g.f_i(x)|| / ||f_i(x) - mean f_i||, g acting on the "
          "layer's fields by their representation (on a classifier's logits: not at all; on "
          "per-pixel logits: the map moves); resampled angles are "
          "compared inside the inscribed disk; dim: g is not a symmetry of that layer "
          "(not expected to be small); -: g does not act on its fields")
    if report.restricted is not None:
        row = report.rows[report.restricted]
        _line(f"the flips stop acting at {row.label} ({row.op}: {report.group} -> "
              f"{row.group})")
    _line(report.verdict())
