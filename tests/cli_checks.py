"""Shared checks for tests that run the ``epdo`` command line in-process."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from epdo.cli.main import app

runner = CliRunner()


def cli(*args: object, env: dict[str, str] | None = None) -> Any:
    """``epdo ARGS`` in-process; a Python exception other than the exit is a failure."""
    result = runner.invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}") from result.exception
    assert "Traceback" not in result.stdout + result.stderr
    return result


def refused(result: Any, code: int, *needles: str) -> str:
    """The one ``error:`` line of a refused command, checked for its exit code and text."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
