"""Markdown for pages that render it (docs, CI job summaries): tables with escaped cells, and
tokbench's own tables and lines (bench.present.plain) as Markdown."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rich.table import Table

from bench.present.plain import PlainTable, plain, text

# What Markdown or the HTML inside it would read as markup: a name from a file such as `<script>`
# or `a|b` shows as it is written. Underscores are left: GitHub reads none inside a word, and
# op names are full of them.
_MARKUP = re.compile(r"([\\`*\[\]<>|~&])")


def cell(value: object) -> str:
    """A value as Markdown text on one line (a table cell): markup escaped, line breaks folded."""
    return " ".join(_MARKUP.sub(r"\\\1", str(value)).split())


def table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[bool] = ()
) -> str:
    """A GitHub-flavoured Markdown table; columns marked in `right` are right-aligned."""
    aligned = [*right, *[False] * (len(columns) - len(right))]
    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "|".join("---:" if r else "---" for r in aligned) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def from_plain(t: PlainTable) -> str:
    """A table with its title in bold above and its caption below; a key-value table as a list
    of bold keys."""
    parts = [f"**{cell(t.title)}**\n"] if t.title else []
    if t.show_header:
        parts.append(table(t.headers, t.rows, t.right))
    else:
        parts.append("".join(f"- **{cell(k)}**: {cell(' '.join(rest))}\n" for k, *rest in t.rows))
    if t.caption:
        parts.append(cell(t.caption) + "\n")
    return "\n".join(parts)


def tables(shown: Iterable[Table], lines: Iterable[str] = ()) -> str:
    """rich tables, then console lines (markup) as a list: what a command printed, as Markdown."""
    parts = [from_plain(plain(t)) for t in shown]
    items = "".join(f"- {cell(text(line))}\n" for line in lines)
    return "\n".join([*parts, items] if items else parts)
