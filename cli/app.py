"""What every command shares: the Typer ``app``, the consoles, and the one error path.

The command modules import this module (never :mod:`epdo.cli.main`); :mod:`epdo.cli.main`
imports the command modules and registers their commands on :data:`app`, so nothing imports
in a circle.

Errors: a command never prints a traceback for a problem the user can fix. Every such
problem is an :class:`epdo.zoo.errors.EpdoError` (or an OS error about a file): the
:func:`handles_errors` wrapper, put around every command when it is registered, prints
``error: <one line>`` to stderr and exits with the error's ``exit_code`` (2, a usage or input
error, unless the error says otherwise). Under ``torchrun`` only rank 0 prints.

Usage errors found while parsing the command line (an unknown option, a value out of an
option's range, a missing argument) take the same form: :class:`OneLineErrors`, the class of
the app's command group, prints them as ``error: <message> (see 'epdo <command> --help')``
and exits 2, instead of the usage text and the framed box Typer prints by default.

Help texts: the same class passes every command's help, epilog and parameter help (of the
whole tree, sub-groups included) through :func:`epdo.cli.text.flowing` once the command tree
is built, so a docstring's own line breaks never reach the terminal; Rich wraps each
paragraph at the terminal's width. No command does anything for it.
"""

from __future__ import annotations

import errno
import functools
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from epdo.cli.text import flowing, shown

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - typer that depends on click
    from click.exceptions import UsageError

__all__ = [
    "INTERRUPTED",
    "USAGE_ERROR",
    "OneLineErrors",
    "app",
    "console",
    "err_console",
    "fail",
    "flow_help",
    "handles_errors",
    "is_main_process",
    "print_error",
    "print_json",
    "print_note",
]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

USAGE_ERROR = 2
"""The exit code of a usage or input error (:data:`epdo.zoo.errors.USAGE_ERROR`)."""
INTERRUPTED = 130
"""The exit code after Ctrl-C (128 + SIGINT, as shells report it)."""


def is_main_process() -> bool:
    """False on the ranks other than 0 of a ``torchrun`` job (only rank 0 prints)."""
    from epdo.zoo.training.distributed import is_main_process as main_process

    return main_process()


def print_note(text: str) -> None:
    """One plain line (or a few) to stderr, printed literally (no markup, control characters
    escaped, see :mod:`epdo.cli.text`), on rank 0."""
    if is_main_process():
        lines = "\n".join(shown(line) for line in str(text).split("\n"))
        err_console.print(Text(lines), highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: <message>`` to stderr, the message printed literally (no markup, control
    characters escaped), on rank 0."""
    if is_main_process():
        err_console.print(Text.assemble(("error:", "bold red"), " ", shown(message)),
                          highlight=False, soft_wrap=True)


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print one error line to stderr and exit with ``code``."""
    print_error(message)
    raise typer.Exit(code)


def _one_line(exc: BaseException) -> str:
    """The first line of ``str(exc)`` (the class name when it is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def handles_errors(func: F) -> F:
    """The one error path of the command line: an :class:`~epdo.zoo.errors.EpdoError`
    becomes ``error: <its first line>`` on stderr and exit code ``exc.exit_code``; a missing,
    unreadable or wrong-kind file, a full disk (an OS error) becomes ``error: <file>:
    <reason>``, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from epdo.zoo.errors import EpdoError

        try:
            return func(*args, **kwargs)
        except EpdoError as exc:
            fail(_one_line(exc), exc.exit_code)
        except OSError as exc:  # a file the command met: missing, unreadable, disk full, ...
            reason = exc.strerror or _one_line(exc)
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                reason += "; free some space or write elsewhere"
            fail(f"{exc.filename}: {reason}" if exc.filename is not None else reason)

    return wrapper  # type: ignore[return-value]


TERMINATED = 128 + signal.SIGTERM
"""The exit code after SIGTERM (128 + its number, as shells report it)."""


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(TERMINATED)


_PROCESS = {"owned": False}
"""Whether the command line owns this process (the ``epdo`` script, ``python -m epdo.cli``)
rather than running inside another program (a test, a notebook): only then does it change
how the process answers signals."""


def _ignore_signals() -> None:
    if _PROCESS["owned"] and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def result_is_final() -> None:
    """From here on the command's result is on disk: Ctrl-C and SIGTERM no longer change
    its exit code (a signal just after "wrote ..." would otherwise exit 130 or 143 although
    the file was written)."""
    _ignore_signals()


def run() -> None:
    """The ``epdo`` console script: :data:`app` in a process it owns. SIGTERM unwinds the
    command like Ctrl-C does instead of killing it on the spot (temporary files beside a
    target are removed and locks released on the way out; exit :data:`TERMINATED`), and once
    the command has finished, a late signal no longer changes its exit code."""
    _PROCESS["owned"] = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    finally:
        _ignore_signals()


def _usage_line(exc: Any) -> str:
    """A command-line usage error as one line, with where to read the command's help."""
    text = " ".join(str(exc.format_message()).split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        text += f" (see '{ctx.command_path} {ctx.help_option_names[0]}')"
    return text


def flow_help(command: Any) -> None:
    """Pass the help, epilog and parameter help of ``command`` and of every command under it
    through :func:`~epdo.cli.text.flowing` (in place)."""
    command.help = flowing(command.help)
    command.epilog = flowing(command.epilog)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = flowing(param.help)
    for sub in getattr(command, "commands", {}).values():
        flow_help(sub)


class OneLineErrors(TyperGroup):
    """The app's command group: a usage error found while parsing the command line
    (Click's ``UsageError``: a bad option value, an unknown option or command, a missing
    argument) is printed as the one line ``error: ...`` and exits 2. Running a group
    without a command still prints its help. Every help text of the tree flows as
    paragraphs (:func:`flow_help`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        flow_help(self)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


class _one_line_usage_errors:  # noqa: N801 - used as a context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if not isinstance(exc, UsageError) or type(exc).__name__ == "NoArgsIsHelpError":
            return False
        print_error(_usage_line(exc))
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="epdo",
    help="Rotation-equivariant networks from partial differential operators.",
    epilog="Start with 'epdo list' and 'epdo info quickstart', then 'epdo train quickstart'. "
    "Every command has --help; the README and docs/ have worked examples.",
    rich_markup_mode="rich",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (non-ASCII kept)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
