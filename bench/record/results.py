"""Result files: locked, atomic, incremental writes, and strict loading.

A result file is one JSON document (bench.record.schema). A writer holds an exclusive lock on its
file for as long as it writes it, creates the file with the first measured case (a run that stops
before measuring anything leaves no file), and rewrites the whole document through a temporary file
and a rename after every case, so an interrupted run leaves a valid file with every case it
measured. A run never replaces a file it did not write unless told to.

Loading checks every field against the schema's dataclasses and what the numbers must satisfy
(a median inside its own [p20, p80], sizes that are not negative, a known status and dtype), and
names the first field that is wrong. It knows no op: whether a case's shape suits its op is
checked where the op is known (bench.measure.ops.load_results), so a file with an op this
version does not know still loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import types
import typing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.record.schema import (
    DTYPE_BYTES,
    FORMAT,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    STATUSES,
    TIMING_MODES,
    CaseResult,
    DeviceInfo,
    EstimateRecord,
    RankInfo,
    ResultDoc,
)

# Larger than any run writes (a case takes about 1 KB): a file beyond it is not a result file.
MAX_FILE_BYTES = 256 * 2**20
# The signals that stop a run: Ctrl-C, and torchrun stopping the ranks.
_STOPS = (signal.SIGINT, signal.SIGTERM)


def default_path(device: DeviceInfo, directory: Path = Path("results")) -> Path:
    """results/<device>-<date>-<id>.json"""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
    return directory / f"{device.slug}-{stamp}-{secrets.token_hex(3)}.json"


def command_line() -> str:
    return " ".join(["tokbench", *sys.argv[1:]])


# --- writing ---------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory and rename it over path; any
    failure is a BenchError naming the path."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except OSError as e:
        raise BenchError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class FileLock:
    """An exclusive lock on a file that is being written, held through a lock file beside it
    (`.NAME.lock`, which names the holder) because each write replaces the file itself. A second
    writer gets a one-line BenchError naming the holder. Taking the lock also removes the
    temporary files an earlier writer killed mid-write left behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self.fd: int | None = None

    def __enter__(self) -> FileLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._acquire()
        except OSError as e:
            raise BenchError(f"cannot lock {self.path}: {e.strerror or e}") from None
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        return self

    def _acquire(self) -> None:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 1000).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise BenchError(
                    f"{self.path} is being written by another tokbench ({holder}); wait for it "
                    "or choose another file"
                ) from None
            # A holder that finished removed the lock file after we opened it: lock the new one.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        since = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, `{command_line()}`, "
                 f"since {since}".encode())  # fmt: skip
        self.fd = fd

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.lock_path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


class ResultWriter:
    """Keeps a locked result file current: every added case is on disk before the next one runs.

    `mode` says what to do with a file already at `path`: "new" refuses it, "replace" writes
    over it (from the first case on), "append" adds the cases to it. Use as a context manager:
    the lock is held from entering until leaving.
    """

    def __init__(self, doc: ResultDoc, path: Path | None, mode: str = "new") -> None:
        """`path` None keeps the document in memory only."""
        self.doc, self.path, self.mode = doc, path, mode
        self.lock = FileLock(path) if path is not None else contextlib.nullcontext()
        self.measured = 0  # cases this writer added and put on disk
        # An appended file is complete only if every run that wrote it finished.
        self.earlier_complete = True

    def __enter__(self) -> ResultWriter:
        self.lock.__enter__()
        try:
            self._take_over()
        except BaseException:
            self.lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(None, None, None)

    def _take_over(self) -> None:
        if self.path is None or not self.path.exists():
            return
        if self.path.is_dir():
            raise BenchError(f"{self.path} is a directory; --out takes a file name")
        _check_writable(self.path)
        if self.mode == "new":
            raise BenchError(
                f"{self.path} exists and tokbench run never replaces a file it did not write: "
                "--append adds this run's cases to it, --force replaces it"
            )
        if self.mode == "append":
            old = load(self.path)
            self.earlier_complete = old.complete
            self.doc = _appended(old, self.doc, self.path)

    def add(self, case: CaseResult) -> None:
        """Put the case on disk; `measured` counts it only once it is there. A write that
        fails (a full disk) or is interrupted leaves the case out of the document too, so
        what the run says it kept is what the file holds."""
        self.doc.cases.append(case)
        with _signals_deferred():
            try:
                self.flush()
            except BaseException:
                self.doc.cases.pop()
                raise
            self.measured += 1

    def finish(self) -> None:
        """Mark the run complete (unless it was appended to the file of a run that was not);
        a run that measured nothing writes nothing."""
        self.doc.complete = self.earlier_complete
        if self.measured:
            self.flush()

    def flush(self) -> None:
        if self.path is not None:
            write_atomic(self.path, self.doc.to_json())


@contextlib.contextmanager
def _signals_deferred() -> typing.Iterator[None]:
    """Hold Ctrl-C and SIGTERM (torchrun's stop) until the block ends, so that a case is written
    and counted, or neither. The handlers are swapped rather than the signals masked: a signal
    sent to the process reaches any thread that does not mask it (torch starts several), and
    its Python handler then runs in the main thread all the same. Python runs handlers in the
    main thread only, so elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda n, _: caught.append(n)) for s in _STOPS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler or signal.SIG_DFL)  # None: set outside Python
        for number in caught:  # now to the handler the run had
            signal.raise_signal(number)


def _check_writable(path: Path) -> None:
    """A file nobody may write is one its owner keeps as it is, even where a rename could
    replace it (the directory is writable, or we are root)."""
    if path.exists() and not path.stat().st_mode & 0o222:
        raise BenchError(f"{path} is read-only; tokbench leaves it as it is")


def _appended(old: ResultDoc, new: ResultDoc, path: Path) -> ResultDoc:
    """The document `new`'s cases go into when appended to `old`."""
    if (old.device.kind, old.device.name) != (new.device.kind, new.device.name):
        raise BenchError(
            f"--append: {path} was measured on {old.device.name}, this is {new.device.name}; "
            "a result file holds one device"
        )
    old.complete = False
    old.notes.append(f"appended by `{new.command}` at {new.created}")
    old.measured_peaks = old.measured_peaks or new.measured_peaks
    return old


def check_output(path: Path, inputs: typing.Iterable[str | Path] = ()) -> None:
    """Raise a BenchError when writing a document at `path` would lose data: it is a directory,
    one of the command's inputs, or a tokbench result file (tokbench writes other documents,
    such as exports, only where no result is)."""
    if path.is_dir():
        raise BenchError(f"{path} is a directory; give a file name")
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise BenchError(f"{path} is an input of this command; tokbench never writes over one")
    if path.is_file() and _is_result(path):
        raise BenchError(f"{path} is a tokbench result file; choose another file name")
    _check_writable(path)


def _is_result(path: Path) -> bool:
    try:
        data = read_json(path)
    except BenchError:
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


@contextlib.contextmanager
def updating(path: str | Path) -> typing.Iterator[ResultDoc]:
    """A result file, locked and loaded, written back when the block ends without error."""
    path = Path(path)
    with FileLock(path):
        _check_writable(path)
        doc = load(path)
        yield doc
        write_atomic(path, doc.to_json())


# --- loading ---------------------------------------------------------------------------------


def load(path: str | Path) -> ResultDoc:
    """Read and validate a result file; any problem is a BenchError naming the file and field."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BenchError(f'{path}: not a tokbench result file (no "format": "{FORMAT}")')
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise BenchError(
            f"{path}: schema version {_short(version)} is not supported; this tokbench reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        doc = _build(ResultDoc, data, "")
        _migrate(doc)
        _check_doc(doc)
    except _FieldError as e:
        raise BenchError(f"{path}: field '{e.where}' {e.problem}") from None
    return doc


def _migrate(doc: ResultDoc) -> None:
    """A version-1 file as the current schema: a run of one rank, on its device."""
    if doc.schema_version == 1:
        doc.ranks = [RankInfo(0, "", doc.device)]
        doc.schema_version = SCHEMA_VERSION


def read_json(path: Path) -> Any:
    """A tokbench JSON document (a result file, or what a planning command's --json printed),
    read within the result file's limits; any problem is a one-line BenchError."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BenchError(
                f"{path}: {size / 2**20:,.0f} MiB is larger than a result file can be "
                f"(tokbench reads up to {MAX_FILE_BYTES // 2**20} MiB)"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise BenchError(f"{path}: cannot read result file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM: the file went through an editor that adds one
    except UnicodeDecodeError as e:
        raise BenchError(
            f"{path}: not UTF-8 text (byte {e.start}), not a tokbench result"
        ) from None
    if not text.strip():
        raise BenchError(f"{path}: empty file, not a tokbench result")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}); the file may be truncated"
        ) from None
    except RecursionError:
        raise BenchError(f"{path}: JSON nested too deeply to be a tokbench result") from None
    except ValueError as e:  # an integer longer than Python converts
        raise BenchError(f"{path}: not a tokbench result ({e})") from None


class _FieldError(Exception):
    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem


def _need(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise _FieldError(where, problem)


def _check_doc(doc: ResultDoc) -> None:
    """What types alone do not say: sizes, statuses, dtypes and statistics that agree."""
    _need(doc.device.memory_bytes > 0, "device.memory_bytes", "must be positive")
    _need(doc.device.cores > 0, "device.cores", "must be positive")
    ranks = [r.rank for r in doc.ranks]
    _need(ranks == list(range(len(ranks))), "ranks", "must list ranks 0, 1, … in order")
    for i, case in enumerate(doc.cases):
        _need(0 <= case.rank < max(len(ranks), 1), f"cases[{i}].rank", "must be a rank of the run")
    for name, value in doc.measured_peaks.items():
        _need(value > 0, f"measured_peaks.{name}", f"must be positive, got {value}")
    for i, case in enumerate(doc.cases):
        _check_case(case, f"cases[{i}]")
    for i, estimate in enumerate(doc.estimates):
        _check_estimate(estimate, f"estimates[{i}]")


def _check_case(case: CaseResult, where: str) -> None:
    _need(case.status in STATUSES, f"{where}.status", f"must be one of {', '.join(STATUSES)}")
    known = ", ".join(DTYPE_BYTES)
    _need(case.dtype in DTYPE_BYTES, f"{where}.dtype", f"must be one of {known}")
    for name in ("flops", "bytes", "rel_error", "tflops", "gbps", "bus_gbps"):
        value = getattr(case, name)
        _need(value is None or value >= 0, f"{where}.{name}", f"must not be negative, got {value}")
    _need(
        (case.status == "ok") == (case.timing is not None),
        f"{where}.timing",
        "must be present exactly when the status is ok (only a case that passed is timed)",
    )
    if case.timing is None:
        return
    t, here = case.timing, f"{where}.timing"
    for name in ("median_ms", "p20_ms", "p80_ms", "min_ms", "max_ms", "mean_ms"):
        value = getattr(t, name)
        _need(value > 0, f"{here}.{name}", f"must be a positive time, got {value}")
    order = (t.min_ms, t.p20_ms, t.median_ms, t.p80_ms, t.max_ms)
    # The mean of equal samples may round a unit in the last place above them.
    mean_ok = t.min_ms * (1 - 1e-9) <= t.mean_ms <= t.max_ms * (1 + 1e-9)
    _need(
        list(order) == sorted(order) and mean_ok,
        here,
        "must have min <= p20 <= median <= p80 <= max and the mean between min and max, got "
        + ", ".join(f"{v:g}" for v in order),
    )
    _need(t.n >= 1, f"{here}.n", f"must be at least 1, got {t.n}")
    _need(t.cv >= 0, f"{here}.cv", f"must not be negative, got {t.cv}")
    _need(t.mode in TIMING_MODES, f"{here}.mode", f"must be one of {', '.join(TIMING_MODES)}")


def _check_estimate(e: EstimateRecord, where: str) -> None:
    for name in ("prefill_tokens_per_s", "decode_tokens_per_s", "requests_per_s", "memory_bytes"):
        value = getattr(e, name)
        _need(value > 0, f"{where}.{name}", f"must be positive, got {value}")
    for name in ("tp", "isl", "osl"):
        _need(getattr(e, name) >= 1, f"{where}.{name}", "must be at least 1")
    for name in ("weights_bytes", "kv_bytes_per_token", "max_batch"):
        _need(getattr(e, name) >= 0, f"{where}.{name}", "must not be negative")
    _need(0 <= e.workspace_fraction < 1, f"{where}.workspace_fraction", "must be in [0, 1)")
    for i, row in enumerate(e.rows):
        here = f"{where}.rows[{i}]"
        _need(row.tokens_per_s > 0, f"{here}.tokens_per_s", "must be positive")
        _need(row.step_ms > 0, f"{here}.step_ms", "must be positive")


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
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        # tokbench never writes NaN or infinity (allow_nan=False): one in a file is damage.
        if not math.isfinite(value) or abs(value) > 1e300:
            raise _FieldError(where, f"must be a finite number, got {_kind(value)}")
        return float(value)
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise _FieldError(where, f"must be {_name(hint)}, got {_kind(value)}")


def _name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(hint) if a is not type(None))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _short(value: Any) -> str:
    """A value as JSON, at most 40 characters (a 5,000-digit integer included)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"an integer of about {value.bit_length() * math.log10(2):.0f} digits"
    return json.dumps(value)[:40]


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {_short(value)}"
