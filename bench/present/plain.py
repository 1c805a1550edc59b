"""tokbench's tables as plain text, for the pages that show them outside a terminal (Markdown
summaries, the HTML report): one table built once, in bench.present.tables, shown everywhere.

Cells there are rich markup with everything taken from a file escaped; reading the markup back
gives the text the terminal shows, unescaped, and each page escapes it again in its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class PlainTable:
    title: str
    headers: list[str]
    right: list[bool]  # per column: right-aligned (numbers)
    rows: list[list[str]]
    caption: str
    show_header: bool = True  # False: a key-value table (a bold key, then its value)


def text(value: RenderableType | None) -> str:
    """The text a cell, title or line shows: markup read, styles dropped."""
    if value is None:
        return ""
    if isinstance(value, Text):
        return value.plain
    return Text.from_markup(value).plain if isinstance(value, str) else str(value)


def plain(table: Table) -> PlainTable:
    """A rich table as its text, row by row."""
    columns = table.columns
    cells = [[text(c) for c in column.cells] for column in columns]
    return PlainTable(
        title=text(table.title),
        headers=[text(c.header) for c in columns],
        right=[c.justify == "right" for c in columns],
        rows=[list(row) for row in zip(*cells, strict=True)],
        caption=text(table.caption),
        show_header=table.show_header,
    )
