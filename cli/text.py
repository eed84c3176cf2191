"""User-controlled text for the terminal, printed as it is and harmless.

A file name, a class label from an artifact's metadata, a spec's name or description are
the user's (or an attacker's) text: printed through Rich as a plain ``str`` they would be
read as markup (``[/]`` crashes, ``[bold]x.yaml`` prints ``x.yaml``) and emoji codes
(``:100:``); printed raw, a control character (``ESC``, a newline) could move the cursor,
recolour the terminal or forge a second line. :func:`literal` gives a Rich ``Text`` (no markup,
no emoji) with every non-printable character shown as its escape (``\\x1b``, ``\\n``);
:func:`shown` is the same as a ``str``, for messages that are printed literally anyway.

The help texts are the project's own text; :func:`flowing` turns a docstring into the
paragraphs Typer's Rich help wraps at the terminal's width.
"""

from __future__ import annotations

import inspect
import re

from rich.markup import escape
from rich.text import Text

__all__ = ["flowing", "literal", "shown"]

_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s")


def shown(text: object) -> str:
    """``str(text)`` with every non-printable character (controls, line breaks) escaped."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in value)


def literal(text: object, style: str = "") -> Text:
    """``text`` as a Rich ``Text``: printed as it is (no markup, no emoji codes), control
    characters escaped (see :func:`shown`)."""
    return Text(shown(text), style=style)


def flowing(text: str | None) -> str | None:
    """A docstring or help string as paragraphs for Rich to wrap: the source's own line
    breaks inside a paragraph become spaces, blank lines still separate paragraphs, and a
    list item (``- ...``, ``1. ...``) or a paragraph marked with Click's ``\\b`` keeps its
    lines. Square brackets are escaped, so the text renders as written under Typer's
    ``rich_markup_mode="rich"``. ``None`` stays ``None``."""
    if text is None:
        return None
    paragraphs = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b"):
            paragraphs.append(block)
            continue
        lines: list[str] = []
        for line in block.splitlines():
            if lines and not _LIST_ITEM.match(line):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append(escape("\n".join(lines)))
    return "\n\n".join(paragraphs)
