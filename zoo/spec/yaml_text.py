"""A spec file's text and its YAML, read safely.

:func:`read_spec_text` reads a regular file of at most ``EPDO_MAX_SPEC_BYTES`` as UTF-8;
:func:`parse_yaml` scans its YAML events first (nesting depth, and the number of values with
every alias use counted as a copy: an alias bomb is refused before anything is composed),
then parses it with a SafeLoader and returns the data with its location tree
(:mod:`.locations`). Every problem is one located :class:`~.errors.SpecError` line that shows
at most a character of the file.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError
from .limits import MAX_SPEC_DEPTH, SPEC_BYTES, SPEC_NODES
from .locations import Node, yaml_tree

__all__ = ["parse_yaml", "read_spec_text"]


def read_spec_text(path: Path, file: str) -> str:
    """The text of a regular file of at most ``EPDO_MAX_SPEC_BYTES``, as UTF-8.

    A FIFO or a device is refused without waiting on it; a byte that is not UTF-8 is
    reported by its line, never shown.
    """
    limit = SPEC_BYTES.value
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise SpecError("not a regular file; a spec is a YAML file", file=file)
            data = handle.read(limit + 1)
    except OSError as exc:
        raise SpecError(f"cannot read the spec: {exc.strerror or exc}", file=file) from None
    if len(data) > limit:
        raise SpecError(f"the spec is larger than {limit:,} bytes; {SPEC_BYTES.hint}", file=file)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"the spec is not UTF-8 text (a byte that is not UTF-8 on line {line}); save it "
            "as UTF-8",
            file=file,
            line=line,
        ) from None


_QUOTED = re.compile(r"'((?:\\.|[^'\\])*)'")
_ONE_CHARACTER = re.compile(r"^(?:\\.|\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|[^\\])$")


def _keep_quoted(match: re.Match[str]) -> str:
    """A quoted character or a ``'<token>'`` name stays; longer quoted text (an alias,
    anchor or tag name from the file) becomes ``'...'``."""
    inner = match.group(1)
    return match.group() if _ONE_CHARACTER.match(inner) or inner.startswith("<") else "'...'"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's description of a parse error, with no more than a character of the file in
    it."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    text = str(problem).strip().splitlines()[0] if problem and str(problem).strip() else ""
    return _QUOTED.sub(_keep_quoted, text) or "unreadable"


def _yaml_error(exc: yaml.YAMLError, text: str, file: str) -> SpecError:
    """A parse error as one located line."""
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return SpecError(
            f"the character U+{char:04X} (a control character) is not allowed in a spec "
            f"(line {line}, column {column})",
            file=file,
            line=line,
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return SpecError(
        f"malformed YAML: {_yaml_problem(exc)}{where}",
        file=file,
        line=mark.line + 1 if mark else None,
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader whose value errors (an integer of 5000 digits, the date 2001-02-30) are
    YAML errors at the value's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            if isinstance(exc, yaml.YAMLError):
                raise
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({str(exc).splitlines()[0][:80]})",
                node.start_mark,
            ) from None


def _scan_yaml(text: str, file: str) -> None:
    """Refuse YAML that nests deeper than :data:`MAX_SPEC_DEPTH`, that holds more than
    ``EPDO_MAX_SPEC_NODES`` values counting each alias use as a copy of what it names, or
    whose alias names a collection that contains it; from the event stream alone, before
    anything is composed."""
    budget = SPEC_NODES.value
    sizes: dict[str, int] = {}  # anchor -> the values it stands for
    open_: list[list[Any]] = []  # [anchor, values so far] of each open collection
    total = 0
    try:
        loader = _Loader(text)  # the reader refuses control characters here
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, file) from None
    try:
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_) >= MAX_SPEC_DEPTH:
                    raise SpecError(
                        f"the spec nests deeper than {MAX_SPEC_DEPTH} levels", file=file, line=line
                    )
                open_.append([event.anchor, 1])
                count = 1
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, count = open_.pop()
                if anchor is not None:
                    sizes[anchor] = count
                if open_:
                    open_[-1][1] += count
                continue
            elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                if isinstance(event, yaml.AliasEvent) and any(
                    entry[0] == event.anchor for entry in open_
                ):
                    raise SpecError(
                        "an alias names a mapping or list that contains it (a cycle)",
                        file=file,
                        line=line,
                    )
                count = sizes.get(event.anchor, 1) if isinstance(event, yaml.AliasEvent) else 1
                if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                    sizes[event.anchor] = 1
                if open_:
                    open_[-1][1] += count
            else:
                continue
            total += count
            if total > budget:
                raise SpecError(
                    f"the spec holds more than {budget:,} values (YAML aliases counted "
                    f"as copies); {SPEC_NODES.hint}",
                    file=file,
                    line=line,
                )
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, file) from None
    finally:
        loader.dispose()


def parse_yaml(text: str, file: str) -> tuple[Any, Node]:
    """The data of a YAML text and its location tree."""
    _scan_yaml(text, file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, Node(file, None)
        tree = yaml_tree(node, file, {})
        return loader.construct_document(node), tree
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, file) from None
    finally:
        loader.dispose()
