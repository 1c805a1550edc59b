"""Result files: atomic incremental writes, and loading with validation.

A result file is one JSON document (bench.schema). The writer rewrites the whole document through
a temporary file and a rename after every case, so an interrupted sweep leaves a valid file with
every case it measured. Loading checks every field against the schema's dataclasses and names the
first one that is wrong. It knows no op: whether a case's shape suits its op is checked where the
op is known (bench.ops.load_results), so a file with an op this version does not know still loads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import sys
import tempfile
import types
import typing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.schema import FORMAT, SCHEMA_VERSION, CaseResult, DeviceInfo, ResultDoc


def default_path(device: DeviceInfo, directory: Path = Path("results")) -> Path:
    """results/<device>-<date>-<id>.json"""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
    return directory / f"{device.slug}-{stamp}-{secrets.token_hex(3)}.json"


def command_line() -> str:
    return " ".join(["tokbench", *sys.argv[1:]])


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory and rename it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class ResultWriter:
    """Keeps a result file current: every added case is on disk before the next one runs."""

    def __init__(self, doc: ResultDoc, path: Path | None) -> None:
        self.doc = doc
        self.path = path
        self.flush()

    def add(self, case: CaseResult) -> None:
        self.doc.cases.append(case)
        self.flush()

    def finish(self) -> None:
        self.doc.complete = True
        self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        try:
            write_atomic(self.path, self.doc.to_json())
        except OSError as e:
            raise BenchError(f"cannot write the result file {self.path}: {e.strerror}") from None


def load(path: str | Path) -> ResultDoc:
    """Read and validate a result file; any problem is a BenchError naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BenchError(f"{path}: cannot read result file ({e.strerror})") from None
    if not text.strip():
        raise BenchError(f"{path}: empty file, not a tokbench result")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}); the file may be truncated"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BenchError(f'{path}: not a tokbench result file (no "format": "{FORMAT}")')
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BenchError(
            f"{path}: schema version {version!r} is not supported; "
            f"this tokbench reads version {SCHEMA_VERSION}"
        )
    try:
        doc = _build(ResultDoc, data, "")
        for i, case in enumerate(doc.cases):
            _check_times(case, f"cases[{i}]")
    except _FieldError as e:
        raise BenchError(f"{path}: field '{e.where}' {e.problem}") from None
    return doc


def _check_times(case: CaseResult, where: str) -> None:
    """What types alone do not say: times that are real times."""
    if case.timing is None:
        return
    for name in ("median_ms", "p20_ms", "p80_ms", "min_ms", "max_ms", "mean_ms"):
        value = getattr(case.timing, name)
        if not math.isfinite(value) or value <= 0:
            raise _FieldError(f"{where}.timing.{name}", f"must be a positive time, got {value}")


class _FieldError(Exception):
    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem


def _build(cls: type, data: Any, where: str) -> Any:
    """Construct dataclass cls from JSON data, checking every field's type."""
    if not isinstance(data, dict):
        raise _FieldError(where or "<document>", f"must be an object, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        here = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _FieldError(here, "is missing")
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], here)
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error names the inner field
            return _convert(options[0], value, where)
        for arg in options:
            try:
                return _convert(arg, value, where)
            except _FieldError:
                continue
        raise _FieldError(where, f"must be {_name(hint)}, got {_kind(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise _FieldError(where, f"must be a list, got {_kind(value)}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _FieldError(where, f"must be an object, got {_kind(value)}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise _FieldError(where, f"must be {_name(hint)}, got {_kind(value)}")


def _name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(hint) if a is not type(None))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:40]}"
