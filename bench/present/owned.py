"""tokbench never destroys a file it did not write: the one check, for every command that writes
over an existing file only when that file is its own earlier output (charts, exports, the report).
Each writer says how it recognises its own files and which option names another place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import BenchError


def refuse_foreign(
    path: Path, ours: Callable[[Path], bool], what: str, elsewhere: str, force: bool
) -> None:
    """Raise a BenchError when path exists, `ours` says tokbench did not write it, and `force`
    is off. `what` completes "PATH exists and …" (e.g. "is not a tokbench export"), `elsewhere`
    names the command's own option for another place (e.g. "another --out")."""
    if force or not path.exists() or ours(path):
        return
    raise BenchError(
        f"{path} exists and {what}; tokbench never replaces a file it did not write: choose "
        f"{elsewhere}, or --force replaces it"
    )
