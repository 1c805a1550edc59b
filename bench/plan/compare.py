"""Compare result files side by side, gate regressions, and project to GPUs that were not measured.

Cases are matched across files by CaseResult.key (op, implementation, dtype, shape), so the module
never needs to know which op it is looking at. The first file is the baseline: every other column
shows its speedup over it (baseline time / this time; above 1 is faster).

The regression gate is noise-aware: a change counts only when the two runs' [p20, p80]
intervals do not overlap, i.e. it lies outside the measured spread of both runs. Only comparable
cases (passed, timed on hardware, not interpreted) are ever judged.

A projection turns a measured file into a column for a GPU that was not measured, through the spec
table: each case's time scales by the ratio of the two GPUs' rooflines for its FLOPs and bytes
(bench.record.hardware.projection, the same function the estimate projects with). It assumes the
same fraction of peak on both GPUs, and is labelled as a projection everywhere. Cases of ops this
version does not know are shown and compared like any other.

This module returns data; bench.present.tables shows it.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from bench import BenchError
from bench.measure.ops import OPS, label, load_results
from bench.record.hardware import SPECS, GpuSpec, get_spec, peak_tflops, projection, spec_of
from bench.record.schema import CaseResult, EstimateRecord, ResultDoc, Timing
from bench.record.units import fmt_slowdown


class Verdict(str, Enum):
    """How a case's time in one run compares with the baseline run."""

    # Short words, as tables are narrow; the legend under them explains each.
    SAME = "same"  # within noise: the [p20, p80] intervals overlap
    SLOWER = "slower"  # beyond noise, but not beyond the gate's threshold (or no gate)
    FASTER = "faster"
    REGRESSION = "regressed"  # slower beyond noise and beyond the gate's threshold
    IMPROVEMENT = "improved"  # faster beyond noise and beyond the gate's threshold


def verdict(base: Timing, new: Timing, threshold: float | None = None) -> Verdict:
    """Judge new against base; threshold is the gate's relative change (0.05 for 5%), or None.

    Overlapping [p20, p80] intervals mean the change is inside the spread of the runs: the same.
    Speedups and slowdowns are both measured as ratios above 1, so 5% means the same either way.
    """
    if new.p20_ms <= base.p80_ms and base.p20_ms <= new.p80_ms:
        return Verdict.SAME
    slower = new.median_ms > base.median_ms
    change = (new.median_ms / base.median_ms if slower else base.median_ms / new.median_ms) - 1
    if threshold is None or change <= threshold:
        return Verdict.SLOWER if slower else Verdict.FASTER
    return Verdict.REGRESSION if slower else Verdict.IMPROVEMENT


_FAIL_ON = re.compile(r"slower:(\d+(?:\.\d*)?|\.\d+)%")


def parse_fail_on(text: str) -> float:
    """ "slower:5%" -> 0.05. The % is required: a bare "slower:0.05" could mean 5% or 0.05%."""
    match = _FAIL_ON.fullmatch(text.strip().lower())
    if not match:
        raise BenchError(
            f"bad --fail-on '{text}'; expected slower:PERCENT% with the % sign, e.g. slower:5%"
        )
    return float(match.group(1)) / 100


def parse_prices(items: Sequence[str]) -> dict[str, float]:
    """["h100-sxm=2.5"] -> {"h100-sxm": 2.5}: USD per GPU-hour by spec-table key."""
    prices = {}
    for item in items:
        gpu, _, value = item.partition("=")
        try:
            key = get_spec(gpu).key
        except ValueError as e:
            raise BenchError(f"bad --price '{item}': {e}") from None
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not (math.isfinite(price) and price > 0):
            raise BenchError(f"bad --price '{item}': expected GPU=USD per GPU-hour, e.g. b200=4.5")
        prices[key] = price
    return prices


# --- columns: measured files and projections -----------------------------------------------------


def usable_time(timing: Timing | None) -> bool:
    """Whether a timing's median and [p20, p80] are finite and positive: a time to compare."""
    return timing is not None and all(
        math.isfinite(x) and x > 0 for x in (timing.median_ms, timing.p20_ms, timing.p80_ms)
    )


def usable(case: CaseResult) -> bool:
    """Comparable (passed, timed on hardware, not interpreted) with a usable time."""
    return case.comparable and usable_time(case.timing)


@dataclass(frozen=True)
class Cell:
    """One case as one column sees it: a measured record, or a projection of one."""

    case: CaseResult  # the measured record; for a projection, the source file's record
    median_ms: float | None  # None when the case was not timed, or its time is not usable
    tflops: float | None
    peak_fraction: float | None
    bound: str | None = None  # projections only: "compute" or "memory"

    @property
    def projected(self) -> bool:
        return self.bound is not None

    @property
    def speed(self) -> bool:
        """Whether the time is a speed figure: measured on hardware, or projected from one."""
        return self.case.comparable and self.median_ms is not None


@dataclass
class Column:
    """One file, or one projection of a file, as a column of the comparison."""

    tag: str  # "A", "B", ...: short name used in the table headers
    device: str
    spec: GpuSpec | None
    created: str
    cells: dict[tuple, Cell]
    path: Path | None = None
    doc: ResultDoc | None = None  # None for a projection
    projected_from: str | None = None  # tag of the measured column a projection comes from

    @property
    def measured(self) -> bool:
        return self.doc is not None

    @property
    def date(self) -> str:
        return self.created[:10]


def measured_column(tag: str, path: Path, doc: ResultDoc) -> Column:
    """A file's cases as a column."""
    cells = {
        c.key: Cell(
            c, c.timing.median_ms if usable_time(c.timing) else None, c.tflops, c.peak_fraction
        )
        for c in doc.cases
    }
    spec = spec_of(doc.device, doc.spec)
    return Column(tag, doc.device.name, spec, doc.created, cells, path=path, doc=doc)


def _tf32(case: CaseResult) -> bool:
    return case.op in OPS and OPS[case.op].tf32


def project_cell(case: CaseResult, source: GpuSpec, target: GpuSpec) -> Cell | None:
    """A comparable case's projected time and roofline figures on target, or None when either
    GPU has no peak for its dtype."""
    if not usable(case):
        return None
    projected = projection(source, target, case.dtype, case.flops, case.bytes, _tf32(case))
    if projected is None:
        return None
    ms = case.timing.median_ms * projected.scale
    tflops = case.flops / (ms / 1e3) / 1e12
    peak = peak_tflops(target, case.dtype, _tf32(case))
    return Cell(case, ms, tflops, tflops / peak, bound=projected.bound)


def projected_column(tag: str, source: Column, target: GpuSpec) -> Column:
    cells = {}
    for key, cell in source.cells.items():
        projected = project_cell(cell.case, source.spec, target)
        if projected is not None:
            cells[key] = projected
    return Column(tag, target.name, target, source.created, cells, projected_from=source.tag)


# --- the comparison ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why a case with a usable time in A has none to judge in a later measured file."""

    word: str  # for the tables: "failed", "skipped", "missing", "bad time", ...
    reason: str  # for the gate's lines, e.g. "failed in B: CUDA error: out of memory"


@dataclass
class Row:
    """One case across all columns."""

    case: CaseResult  # the first record found, for op, implementation, dtype and shape
    cells: list[Cell | None]  # per column; None where the column lacks the case
    speedups: list[float | None]  # baseline time / this time, per column
    verdicts: list[Verdict | None]  # per column; None for A, projections, uncomparable cases
    problems: list[Problem | None] = field(default_factory=list)  # per column; see Problem

    @property
    def label(self) -> str:
        c = self.case
        return f"{c.op} {label(c.op, c.shape)} {c.dtype} {c.impl}"


@dataclass
class Comparison:
    columns: list[Column]
    rows: list[Row]
    threshold: float | None = None
    notes: list[str] = field(default_factory=list)
    prices: dict[str, float] = field(default_factory=dict)  # USD per GPU-hour by spec key

    def regressions(self) -> list[str]:
        """One line per case and column that the gate fails for being slower."""
        out = []
        for row in self.rows:
            for col, v, up in zip(self.columns, row.verdicts, row.speedups, strict=True):
                if v is Verdict.REGRESSION:
                    out.append(f"{row.label}: {col.tag} is {fmt_slowdown(up)} than A")
        return out

    def broken(self) -> list[str]:
        """One line per case with a usable time in A that a later measured file failed,
        skipped, lacks or has no usable time for: the gate fails these too."""
        return [f"{row.label}: {p.reason}" for row in self.rows for p in row.problems if p]

    def judged(self) -> int:
        """How many (case, column) pairs the gate judged by time."""
        return sum(v is not None for row in self.rows for v in row.verdicts)

    def incomplete(self) -> list[Column]:
        """Later measured files whose run was interrupted (or is still running)."""
        return [c for c in self.columns[1:] if c.measured and not c.doc.complete]

    def partial(self) -> list[Row]:
        """Cases missing from at least one measured file."""
        measured = [i for i, c in enumerate(self.columns) if c.measured]
        return [r for r in self.rows if any(r.cells[i] is None for i in measured)]

    def geomeans(self) -> dict[str, list[tuple[float, int] | None]]:
        """Per op, per column: geometric mean of the speedup over the first column and its n."""
        out: dict[str, list[tuple[float, int] | None]] = {}
        for op in dict.fromkeys(r.case.op for r in self.rows):
            per_column: list[tuple[float, int] | None] = []
            for i in range(len(self.columns)):
                ups = [r.speedups[i] for r in self.rows if r.case.op == op and r.speedups[i]]
                per_column.append(_geomean(ups) if ups and i > 0 else None)
            out[op] = per_column
        return out


def _geomean(values: list[float]) -> tuple[float, int]:
    return math.exp(sum(map(math.log, values)) / len(values)), len(values)


def compare(
    paths: Sequence[str | Path],
    *,
    threshold: float | None = None,
    project: Sequence[str] = (),
    prices: dict[str, float] | None = None,
) -> Comparison:
    """Load the files, match their cases and add projected columns; the first file is the
    baseline. Raises BenchError for unreadable files and files with nothing in common."""
    if len(paths) < 2 and not project:
        raise BenchError("compare needs at least two result files, or one file and --project GPU")
    if len(paths) + len(project) > len(string.ascii_uppercase):
        raise BenchError(f"too many columns to compare (at most {len(string.ascii_uppercase)})")
    tags = iter(string.ascii_uppercase)
    columns = [measured_column(next(tags), Path(p), load_results(p)) for p in paths]
    _check_overlap(columns)
    columns += [projected_column(next(tags), *_projection(columns, gpu)) for gpu in project]
    rows = _rows(columns, threshold)
    comparison = Comparison(columns, rows, threshold, _notes(columns), prices or {})
    if threshold is not None and not comparison.judged() and not comparison.broken():
        raise BenchError(
            "nothing to gate: no case passed and was timed on hardware (not interpreted) "
            "in both the first file and another"
        )
    return comparison


def _check_overlap(columns: list[Column]) -> None:
    base = columns[0]
    for col in columns[1:]:
        if not base.cells.keys() & col.cells.keys():
            raise BenchError(
                f"{col.path} shares no case (op, implementation, shape, dtype) with "
                f"{base.path}; nothing to compare"
            )


def _projection(columns: list[Column], gpu: str) -> tuple[Column, GpuSpec]:
    """The measured column to project from (the first with a spec entry) and the target spec."""
    try:
        target = get_spec(gpu)
    except ValueError as e:
        raise BenchError(str(e)) from None
    for col in columns:
        if col.measured and col.spec is not None:
            return col, target
    raise BenchError(
        f"cannot project to {target.name}: no file was measured on a GPU in the spec table "
        "(a projection scales measured times by spec ratios)"
    )


def _problem(base: Cell | None, cell: Cell | None, col: Column) -> Problem | None:
    """Why a case usable in A cannot be judged in a later measured column, or None."""
    if not col.measured or base is None or not usable(base.case):
        return None
    if cell is None:
        return Problem("missing", f"missing from {col.tag}")
    c = cell.case
    if c.status != "ok":
        return Problem(c.status, f"{c.status} in {col.tag}" + (f": {c.error}" if c.error else ""))
    if c.timing is None:
        return Problem("untimed", f"not timed in {col.tag}")
    if c.interpreted:
        return Problem("interp.", f"run in Triton's interpreter in {col.tag}, not on hardware")
    if not usable_time(c.timing):
        t = c.timing
        return Problem(
            "bad time",
            f"non-finite or non-positive time in {col.tag} "
            f"(median {t.median_ms}, p20 {t.p20_ms}, p80 {t.p80_ms} ms)",
        )
    return None


def _rows(columns: list[Column], threshold: float | None) -> list[Row]:
    keys: dict[tuple, CaseResult] = {}
    for col in columns:
        for key, cell in col.cells.items():
            keys.setdefault(key, cell.case)
    rows = []
    for key, case in keys.items():
        cells = [col.cells.get(key) for col in columns]
        base = cells[0]
        speedups = [
            base.median_ms / c.median_ms if base and c and base.speed and c.speed else None
            for c in cells
        ]
        verdicts = [
            verdict(base.case.timing, c.case.timing, threshold)
            if i > 0 and col.measured and base and c and usable(base.case) and usable(c.case)
            else None
            for i, (col, c) in enumerate(zip(columns, cells, strict=True))
        ]
        problems = [
            _problem(base, c, col) if i > 0 else None
            for i, (col, c) in enumerate(zip(columns, cells, strict=True))
        ]
        rows.append(Row(case, cells, speedups, verdicts, problems))
    # Group by op, keeping first-seen order within each op.
    order = {op: i for i, op in enumerate(dict.fromkeys(r.case.op for r in rows))}
    return sorted(rows, key=lambda r: order[r.case.op])


def _notes(columns: list[Column]) -> list[str]:
    notes = []
    for col in columns:
        if col.measured and not col.doc.complete:
            notes.append(f"{col.tag} is an incomplete run: the sweep was interrupted or is running")
        if col.measured:
            bad = sum(c.comparable and not usable_time(c.timing) for c in col.doc.cases)
            if bad:
                notes.append(
                    f"{col.tag}: {bad} cases have a non-finite or non-positive time; "
                    "not compared (bad time)"
                )
        if col.projected_from:
            source = next(c for c in columns if c.tag == col.projected_from)
            skipped = sum(1 for c in source.cells.values() if usable(c.case)) - len(col.cells)
            if skipped:
                notes.append(
                    f"{col.tag}: {skipped} comparable cases of {source.tag} not projected "
                    f"({col.device} or {source.spec.name} has no peak for their dtype)"
                )
    return notes


# --- the ranks of one run ------------------------------------------------------------------------


@dataclass(frozen=True)
class RankSpread:
    """One case as every rank of a run measured it, on its own GPU: the slow-GPU hunt done
    before a deployment."""

    cases: list[CaseResult]  # in rank order

    @property
    def timed(self) -> list[CaseResult]:
        return sorted((c for c in self.cases if usable(c)), key=lambda c: c.timing.median_ms)

    @property
    def median(self) -> CaseResult:
        """The rank with the median time (the lower middle one), else the first rank."""
        timed = self.timed
        return timed[(len(timed) - 1) // 2] if timed else self.cases[0]

    @property
    def spread(self) -> float | None:
        """Slowest rank's median over the fastest's, less 1; None with fewer than two timed."""
        timed = self.timed
        if len(timed) < 2:
            return None
        return timed[-1].timing.median_ms / timed[0].timing.median_ms - 1

    def slow(self) -> list[CaseResult]:
        """The ranks slower than the median rank beyond noise: their [p20, p80] lies above its."""
        middle = self.median
        return [c for c in self.timed if c.timing.p20_ms > middle.timing.p80_ms]


def rank_spreads(cases: list[CaseResult]) -> list[RankSpread]:
    """Each (problem, implementation) measured on several ranks, in first-seen order."""
    groups: dict[tuple, list[CaseResult]] = {}
    for case in cases:
        groups.setdefault((*case.problem, case.impl), []).append(case)
    return [RankSpread(sorted(g, key=lambda c: c.rank)) for g in groups.values() if len(g) > 1]


# --- estimates -----------------------------------------------------------------------------------


def estimate_groups(comparison: Comparison) -> dict[tuple, list[tuple[Column, EstimateRecord]]]:
    """The measured files' saved estimates, grouped by their setup, in file order."""
    groups: dict[tuple, list[tuple[Column, EstimateRecord]]] = {}
    for col in comparison.columns:
        for e in col.doc.estimates if col.measured else ():
            groups.setdefault(e.setup, []).append((col, e))
    return groups


def tokens_per_watt(e: EstimateRecord) -> float | None:
    """Decode tokens/s per watt of the GPU's spec-sheet power (TDP), when the spec is known."""
    spec = SPECS.get(e.spec or "")
    return e.decode_tokens_per_s / spec.power_w if spec else None


def tokens_per_dollar(e: EstimateRecord, prices: dict[str, float]) -> float | None:
    """Output tokens per USD in the serving mix at a price per GPU-hour (fully utilised), when
    one was given for the GPU."""
    price = prices.get(e.spec or "")
    return e.serving_output_tokens_per_s * 3600 / price if price else None
