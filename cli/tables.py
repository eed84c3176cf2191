"""Tables on stdout: a Rich table that fits the terminal, or plain aligned text in a pipe.

A command describes its table once (:class:`Column` s and rows of strings) and
:func:`print_table` decides how it looks:

- in a terminal, a borderless Rich table at the console's width. Names, field types and
  numbers (``key`` and ``number`` columns) are never cut or wrapped; free text (a ``cut``
  column) gets the width that is left, on one line, cut with "…". An ``optional`` column
  (one whose content the table shows elsewhere) is left out when the table would not fit
  otherwise. With ``wide`` (the commands' ``--wide``) every column is shown and free text
  wraps, whole, in its column (at least :data:`WIDE_TEXT` cells wide, the table growing
  past the terminal's width if it must);
- in a pipe (stdout not a terminal), plain text that greps well: a header line, then one
  line per row, columns aligned with two spaces, every cell whole, no box characters.

Every cell is user text to the terminal: printed literally (see :mod:`epdo.cli.text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.segment import Segments
from rich.table import Table

from epdo.cli.app import console
from epdo.cli.text import literal, shown

__all__ = ["Column", "print_table", "table_fits"]

KINDS = ("key", "number", "cut", "wrap")
"""Column kinds: ``key`` (a name or type: whole, left), ``number`` (whole, right),
``cut`` (free text: one line, cut with "…" to fit, wrapped with ``wide``), ``wrap`` (free
text wrapped in its column)."""

GAP = 2
"""Spaces between two columns (the terminal table and the plain text alike)."""

MIN_TEXT = 12
"""The narrowest a free-text column gets before an optional column is left out for it."""

WIDE_TEXT = 40
"""The narrowest a free-text column gets with ``wide`` (the table grows past the terminal's
width for it)."""


@dataclass(frozen=True)
class Column:
    """One column of a table: its header, its kind (:data:`KINDS`) and whether it may be
    left out of a terminal table that would not fit otherwise."""

    name: str
    kind: str = "key"
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column kind {self.kind!r} is not one of {KINDS}")


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    """The width of each column's widest cell (header included), in terminal cells."""
    return [max([cell_len(c.name)] + [cell_len(shown(r[i])) for r in rows])
            for i, c in enumerate(columns)]


def _fixed_width(columns: Sequence[Column], widths: Sequence[int]) -> int:
    """The width the ``key`` and ``number`` columns and the gaps take, and the narrowest
    each free-text column may get (:data:`MIN_TEXT`, or less when its text is shorter)."""
    text = sum(w if c.kind in ("key", "number") else min(w, MIN_TEXT)
               for c, w in zip(columns, widths, strict=True))
    return text + GAP * (len(columns) - 1)


def table_fits(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> bool:
    """Whether the whole names and numbers of ``rows`` fit ``width`` cells (free text cut to
    :data:`MIN_TEXT`)."""
    return _fixed_width(columns, _widths(columns, rows)) <= width


def _plain(columns: Sequence[Column], rows: Sequence[Sequence[str]],
           footer: Sequence[str] | None) -> None:
    """The table as aligned plain lines (header first), every cell whole."""
    body = [list(r) for r in rows] + ([list(footer)] if footer is not None else [])
    widths = _widths(columns, body)
    for cells in [[c.name for c in columns]] + body:
        parts = []
        for i, (col, cell) in enumerate(zip(columns, cells, strict=True)):
            text = shown(cell)
            pad = " " * (widths[i] - cell_len(text))
            last = i == len(columns) - 1
            parts.append(pad + text if col.kind == "number" else text + ("" if last else pad))
        line = (" " * GAP).join(parts).rstrip()
        console.print(literal(line), highlight=False, soft_wrap=True)


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], *,
                title: str | None = None, footer: Sequence[str] | None = None,
                wide: bool = False) -> None:
    """Print ``rows`` (one string per column) under ``columns``: a Rich table that fits the
    terminal, or plain text in a pipe (see the module's docstring). ``title`` heads the
    terminal table (a pipe gets it as a first line); ``footer`` (a total) follows a rule
    (in a pipe: a last line)."""
    if not console.is_terminal:
        if title:
            console.print(literal(title), highlight=False, soft_wrap=True)
        _plain(columns, rows, footer)
        return
    body = list(rows) + ([footer] if footer is not None else [])
    fits = table_fits(columns, body, console.width)
    keep = [i for i, c in enumerate(columns) if wide or fits or not c.optional]
    table = Table(title=literal(title) if title else None, box=box.SIMPLE,
                  show_edge=False, pad_edge=False, padding=(0, GAP - 1, 0, 0),
                  title_justify="left", show_footer=footer is not None)
    widths = _widths(columns, body)
    fixed = [i for i in keep if columns[i].kind in ("key", "number")]
    texts = len(keep) - len(fixed)
    room = console.width - GAP * (len(keep) - 1) - sum(widths[i] for i in fixed)
    text_width = max(room // texts, WIDE_TEXT if wide else 1) if texts else 0
    for i in keep:
        col = columns[i]
        foot = literal(footer[i]) if footer is not None else ""
        justify = "right" if col.kind == "number" else "left"
        if col.kind in ("key", "number"):
            table.add_column(col.name, foot, justify=justify, no_wrap=True, min_width=widths[i])
        else:
            one_line = col.kind == "cut" and not wide
            table.add_column(col.name, foot, no_wrap=one_line,
                             overflow="ellipsis" if one_line else "fold", max_width=text_width)
    for r in rows:
        table.add_row(*(literal(r[i]) for i in keep))
    width = console.width - room + texts * text_width
    if width <= console.width:
        console.print(table)
        return
    options = console.options.update_width(width)  # --wide beyond the terminal's width
    for line in console.render_lines(table, options, pad=False, new_lines=True):
        console.print(Segments(line), soft_wrap=True, end="")
