"""The text files a user hands the planner (published-results CSVs, JSONL traces, model configs)
read one way: UTF-8, with or without the byte-order mark Excel's "CSV UTF-8" and Notepad write;
anything else is one line naming the file, the line and what to do."""

from __future__ import annotations

import codecs
from pathlib import Path

from bench import BenchError

# Beyond any trace or table worth simulating (a million-request trace is about 60 MiB), and a
# bound on what `--workload /dev/zero` makes the planner read.
MAX_BYTES = 256 * 2**20


def read_text(path: Path, what: str) -> str:
    """The text of the `what` (e.g. "trace") at `path`, its byte-order mark dropped."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise BenchError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise BenchError(f"{path}: over {MAX_BYTES // 2**20} MiB, too large for a {what}")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        excel = ' (Excel: "CSV UTF-8")' if path.suffix.lower() == ".csv" else ""
        raise BenchError(f"{path}: UTF-16 text; save the {what} as UTF-8{excel}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BenchError(
            f"{path}: not UTF-8 text (line {line}, byte {e.start}); a {what} is read as UTF-8"
        ) from None
