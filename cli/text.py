"""User-controlled text for the terminal, printed as it is and harmless.

A file name, a class label from an artifact's metadata, a spec's name or description are
the user's (or an attacker's) text: printed through Rich as a plain ``str`` they would be
read as markup (``[/]`` crashes, ``[bold]x.yaml`` prints ``x.yaml``) and emoji codes
(``:100:``); printed raw, a control character (``ESC``, a newline) could move the cursor,
recolour the terminal or forge a second line. :func:`literal` gives a Rich ``Text`` (no markup,
no emoji) with every non-printable character shown as its escape (``\\x1b``, ``\\n``);
:func:`shown` is the same as a ``str``, for messages that are printed literally anyway.
"""

from __future__ import annotations

from rich.text import Text

__all__ = ["literal", "shown"]


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
