"""The results schema, atomic incremental JSON writes, and loading with validation.

A result file is one JSON document: where and how it was measured (device, software, command)
and one record per case. The writer rewrites the whole document through a temporary file and a
rename after every case, so an interrupted sweep leaves a valid file with every case it measured.
Loading checks every field against the dataclasses below and names the first one that is wrong.
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.device import DeviceInfo, Telemetry
from bench.ops import OPS, get_op
from bench.timing import Timing

FORMAT = "tokbench.results"
SCHEMA_VERSION = 1


@dataclass
class CaseResult:
    """One (op, implementation, shape, dtype) case: its check, its timing and its roofline."""

    op: str
    impl: str
    dtype: str
    shape: dict[str, int | bool | str]
    status: str  # "ok", "failed" (wrong result or error) or "skipped" (not supported here)
    flops: float
    bytes: float
    error: str | None = None
    rel_error: float | None = None
    tolerance: float | None = None
    interpreted: bool = False  # Triton's CPU interpreter: a correctness run, not a speed figure
    timing: Timing | None = None
    tflops: float | None = None
    gbps: float | None = None
    peak_fraction: float | None = None  # of the device's dense peak for this dtype
    bandwidth_fraction: float | None = None  # of the device's memory bandwidth
    telemetry: Telemetry | None = None

    @property
    def key(self) -> tuple:
        """What identifies a case across files: op, implementation, dtype and shape."""
        return (self.op, self.impl, self.dtype, tuple(sorted(self.shape.items())))

    @property
    def comparable(self) -> bool:
        """Passed its check and was timed on real hardware (not interpreted)."""
        return self.status == "ok" and self.timing is not None and not self.interpreted


@dataclass
class EstimateRow:
    """One line of a saved estimate: a phase at one batch size, per GPU."""

    phase: str  # "prefill", "decode" or "serving"
    batch: int
    context: int  # prefill: prompt length; decode: mean context; serving: input + output length
    step_ms: float  # prefill: time to first token; decode: time per output token
    tokens_per_s: float  # per GPU
    source: str  # provenance, e.g. "measured 92% · interpolated 8%" or "projection to B200 …"


@dataclass
class Estimate:
    """A saved `tokbench estimate`: one model's per-GPU token throughput from a file's cases."""

    model: str
    gpu: str  # the GPU estimated for: the measured device, or a spec-sheet projection target
    spec: str | None  # hardware.SPECS key of that GPU, when it has one
    projected: bool  # True when gpu is not the measured device
    tp: int
    precision: str
    isl: int
    osl: int
    weights_bytes: float  # per GPU
    kv_bytes_per_token: float  # per GPU
    memory_bytes: float  # per GPU capacity the fit used
    workspace_fraction: float  # of memory_bytes kept free for activations and workspace
    max_batch: int  # largest batch whose weights + KV cache fit
    prefill_tokens_per_s: float  # per GPU, best prefill row
    decode_tokens_per_s: float  # per GPU, at the largest batch estimated
    requests_per_s: float  # per GPU, the serving mix of isl input and osl output tokens
    rows: list[EstimateRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)  # measured / estimated layer time
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    command: str = ""


@dataclass
class ResultDoc:
    """A whole result file."""

    device: DeviceInfo
    software: dict[str, str]
    command: str
    suite: str
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION
    complete: bool = False  # False while running, or when the run was interrupted
    spec: str | None = None  # key of the matched hardware.SPECS entry
    measured_peaks: dict[str, float] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    estimates: list[Estimate] = field(default_factory=list)  # absent in older files: empty

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, allow_nan=False)


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
            _check_case(case, f"cases[{i}]")
    except _FieldError as e:
        raise BenchError(f"{path}: field '{e.where}' {e.problem}") from None
    return doc


def _check_case(case: CaseResult, where: str) -> None:
    """What types alone do not say: a known op, a shape it takes, times that are real times."""
    try:
        get_op(case.op).check_shape(case.shape)
    except BenchError as e:
        field_name = "op" if case.op not in OPS else "shape"
        raise _FieldError(f"{where}.{field_name}", f"is wrong: {e}") from None
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
