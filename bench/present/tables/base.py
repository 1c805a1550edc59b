"""What every table is built from: a column as its header and the cell it shows for an item,
declared together so that the two cannot drift apart, and the tables made of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rich.console import JustifyMethod, OverflowMethod
from rich.table import Table

Item = TypeVar("Item")


@dataclass(frozen=True)
class Column(Generic[Item]):
    """A column: its header, and its cell for one item (a row's thing). Numbers are
    right-aligned; text columns say "left"."""

    header: str
    cell: Callable[[Item], str]
    justify: JustifyMethod = "right"
    no_wrap: bool = False
    overflow: OverflowMethod = "ellipsis"


def text(header: str, cell: Callable[[Item], str], **options: bool | str) -> Column[Item]:
    """A left-aligned column."""
    return Column(header, cell, "left", **options)


def titled(title: str, show_header: bool = True) -> Table:
    """An empty table with its title and caption on the left, as every tokbench table has them."""
    return Table(title=title, show_header=show_header, title_justify="left", caption_justify="left")


def column_table(
    title: str,
    columns: Sequence[Column[Item]],
    items: Iterable[Item],
    *,
    drop_empty: bool = False,
    caption: str | None = None,
) -> Table:
    """One row per item; with drop_empty, a column whose every cell is empty is left out. The
    cells are made row by row, left to right (a cell may number a footnote as it goes)."""
    rows = [[column.cell(item) for column in columns] for item in items]
    shown = [i for i in range(len(columns)) if not drop_empty or any(row[i] for row in rows)]
    table = titled(title)
    for i in shown:
        c = columns[i]
        table.add_column(c.header, justify=c.justify, no_wrap=c.no_wrap, overflow=c.overflow)
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    table.caption = caption
    return table


def key_value_table(title: str, no_wrap_keys: bool = False) -> Table:
    """A headerless two-column table: a bold key, then its value."""
    table = titled(title, show_header=False)
    table.add_column(style="bold", no_wrap=no_wrap_keys)
    table.add_column()
    return table


def bullets(notes: Iterable[str]) -> str:
    """Notes as one caption paragraph, each after a bullet."""
    return "  ".join(f"• {n}" for n in notes)
