"""One table renderer for every report: a :class:`Table` holds raw values, and the terminal and the Markdown
report are both rendered from it with tabulate, so the two never disagree.

Numbers are formatted here (per-column format specs), ``None`` is ``-``, and text is shown as written:
control characters become visible escapes, and in Markdown every character that would end a cell or be read
as markup is escaped, so a task or model name can neither break a pipe table nor be interpreted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Union

from tabulate import tabulate

Cell = Union[str, int, float, None]
MISSING = "-"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")   # what ends a line for str.splitlines, and more
MARKUP = re.compile(r"[\\`*|<]|(?<![^\W_])_|_(?![^\W_])|(?<=\])\(")   # '_' between two letters is no markup
LINE_START = re.compile(r"^[#>+=-]")


@dataclass(frozen=True)
class Table:
    """A titled grid of raw values; ``text`` names the left-aligned columns, every other column is a number
    column (right-aligned) formatted with ``formats[column]`` (``str()`` without one)."""

    title: str                                   # the terminal line above the table
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    text: tuple[str, ...] = ()
    formats: Mapping[str, str] = field(default_factory=dict)
    heading: str | None = None                   # the Markdown heading (a ``###`` line); None: no heading
    notes: tuple[str, ...] = ()                  # lines under the table in both renderings

    def cells(self) -> list[list[str]]:
        """The rows as shown: numbers formatted, None as ``-``, text with control characters made visible."""
        specs = [self.formats.get(column, "") for column in self.columns]
        return [[_cell(value, spec) for value, spec in zip(row, specs)] for row in self.rows]

    def aligns(self) -> list[str]:
        return ["left" if column in self.text else "right" for column in self.columns]


def _cell(value: Cell, spec: str) -> str:
    if value is None:
        return MISSING
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return visible(str(value))


def visible(text: str) -> str:
    """``text`` with control characters (a newline, a tab) written as escapes, so one value stays on one line."""
    return CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def escape(text: str) -> str:
    """``text`` for a Markdown line or cell: visible, and no character of it read as a cell end or markup."""
    return MARKUP.sub(lambda found: "\\" + found.group(), visible(text))


def paragraph(text: str) -> str:
    """``text`` escaped for a line of its own: nor can its first character start a heading, quote or list."""
    return LINE_START.sub(lambda found: "\\" + found.group(), escape(text))


def terminal_lines(tables: Iterable[Table]) -> list[str]:
    """Each table after a blank line: its title, the aligned grid, its notes."""
    lines: list[str] = []
    for table in tables:
        grid = tabulate(table.cells(), headers=[visible(c) for c in table.columns], tablefmt="plain",
                        colalign=table.aligns(), disable_numparse=True)
        lines += ["", *([visible(table.title)] if table.title else []), *(row.rstrip() for row in grid.split("\n")),
                  *map(visible, table.notes)]
    return lines


def markdown_lines(tables: Iterable[Table]) -> list[str]:
    """Each table after a blank line: its heading, the pipe table, each note a paragraph."""
    lines: list[str] = []
    for table in tables:
        cells = [[escape(cell) for cell in row] for row in table.cells()]
        grid = tabulate(cells, headers=[escape(c) for c in table.columns], tablefmt="pipe",
                        colalign=table.aligns(), disable_numparse=True)
        lines += ["", *([f"### {paragraph(table.heading)}", ""] if table.heading else []), *grid.split("\n"),
                  *(line for note in table.notes for line in ("", paragraph(note)))]
    return lines
