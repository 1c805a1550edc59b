"""The files a report is made of: result files, and what the planning commands print with --json,
told apart by their fields and read field by field.

A planning command's JSON carries no marker of its kind, so each kind is known by fields only
it has (bench.present.report.planning lists them). Fields a kind does not know are kept and
shown as they are, so that a command's JSON can grow before the report learns its new fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.measure.ops import load_results
from bench.present.names import short_names
from bench.record import results
from bench.record.schema import FORMAT, ResultDoc
from bench.record.units import fmt_big

RESULT_FILE = "result file"


class Fields:
    """A JSON object read field by field: a missing or mistyped field is a one-line error that
    names the file and the field."""

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str = "") -> None:
        self.data, self.where, self.prefix = data, where, prefix

    def _error(self, key: str, problem: str) -> BenchError:
        return BenchError(f"{self.where}: field '{self.prefix}{key}' {problem}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def number(self, key: str) -> float:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._error(key, f"must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self._error(key, "must be a finite number")
        return float(value)

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self._error(key, f"must be text, got {_kind(value)}")
        return str(value)

    def texts(self, key: str) -> list[str]:
        """A list of text; absent: none."""
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._error(key, "must be a list of text")
        return value

    def records(self, key: str) -> list[Fields]:
        """A list of objects; absent: none."""
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._error(key, "must be a list of objects")
        return [Fields(v, self.where, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


@dataclass(frozen=True)
class Input:
    """One file given: its short name, its kind and what it holds (a ResultDoc for a result
    file, else its Fields)."""

    path: Path
    name: str
    kind: str
    doc: ResultDoc | None = None
    fields: Fields | None = None


def read_inputs(paths: list[Path], kinds: Mapping[str, tuple[str, ...]]) -> list[Input]:
    """Each file as an Input; kinds: each planning JSON's kind and the fields that tell it."""
    return [_read(p, name, kinds) for p, name in zip(paths, short_names(paths), strict=True)]


def _read(path: Path, name: str, kinds: Mapping[str, tuple[str, ...]]) -> Input:
    data = results.read_json(path)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return Input(path, name, RESULT_FILE, doc=load_results(path))
    for kind, keys in kinds.items():
        if isinstance(data, dict) and all(k in data for k in keys):
            return Input(path, name, kind, fields=Fields(data, str(path)))
    raise BenchError(
        f"{path}: neither a tokbench result file nor what `{' --json`, `'.join(kinds)} --json` "
        "prints"
    )


def shown(value: Any) -> str:
    """A value of a field the report does not know, as text: large numbers with a unit
    (18.41 B), others to four figures; lists and objects as compact JSON."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "—"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return fmt_big(value) if abs(value) >= 1e4 else f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": ")) if value else "—"
    return str(value)
