"""Short names for the files a command was given, as charts, chart files and reports show them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def short_names(paths: Sequence[Path]) -> list[str]:
    """Each file's stem, with as many of its folders as tell it apart from the others
    (a/run.json and b/run.json are a/run and b/run); a file given twice gets its position."""
    stems = [Path(p).with_suffix("").parts for p in paths]
    for depth in range(1, max((len(s) for s in stems), default=1) + 1):
        names = ["/".join(s[-depth:]) for s in stems]
        if len(set(names)) == len(names):
            return names
    return [f"{name} ({i})" for i, name in enumerate(names, start=1)]
