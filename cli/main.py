"""The ``epdo`` command line: thin commands over :mod:`epdo.zoo` and :mod:`epdo.exporters`.

Every command parses its arguments, calls one library function and prints the result
(a Rich table, or JSON with ``--json``). A problem the user can fix (a bad spec, a missing
file, ...) prints one line to stderr and exits with its code (2 unless the error says
otherwise), never a traceback: see :mod:`epdo.cli.app`, which holds ``app``, the consoles and
that one error path.

This module registers the commands, each from its own module, in the order ``--help`` lists
them; ``epdo.cli.main:run`` is the console script (:func:`epdo.cli.app.run`: ``app`` in a
process it owns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from epdo import __version__
from epdo.cli import (
    bench_cmd,
    data_cmd,
    eval_cmd,
    export_cmd,
    predict_cmd,
    serve_cmd,
    spec_cmd,
    train_cmd,
)
from epdo.cli.app import app, console, handles_errors, run

__all__ = ["app", "run"]


@app.callback(invoke_without_command=True)
def main(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """epdo: a declarative model zoo of PDO-eConvs and Neural ePDOs."""
    if version:
        console.print(f"epdo {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


def _register(on: typer.Typer, name: str, command: Callable[..., Any]) -> None:
    """Add ``command`` as ``name``, inside the one error path."""
    on.command(name)(handles_errors(command))


_register(app, "list", spec_cmd.list_command)
_register(app, "info", spec_cmd.info_command)
_register(app, "check", spec_cmd.check_command)
_register(app, "bench", bench_cmd.bench_command)
app.add_typer(data_cmd.data_app, name="data")
_register(data_cmd.data_app, "fetch", data_cmd.fetch_command)
_register(data_cmd.data_app, "info", data_cmd.info_command)
_register(app, "eval", eval_cmd.eval_command)
_register(app, "export", export_cmd.export_command)
_register(app, "predict", predict_cmd.predict_command)
_register(app, "serve", serve_cmd.serve_command)
_register(app, "train", train_cmd.train_command)
