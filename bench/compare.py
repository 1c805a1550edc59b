"""Compare result files side by side, gate regressions, and project to GPUs that were not measured.

Cases are matched across files by CaseResult.key (op, implementation, dtype, shape), so the module
never needs to know which op it is looking at. The first file is the baseline: every other column
shows its speedup over it (baseline time / this time; above 1 is faster).

The regression gate is noise-aware: a change counts only when the two runs' [p20, p80]
intervals do not overlap, i.e. it lies outside the measured spread of both runs. Only comparable
cases (passed, timed on hardware, not interpreted) are ever judged.

A projection turns a measured file into a column for a GPU that was not measured, through the
spec table: a case whose arithmetic intensity is at or above the source GPU's ridge point for its
dtype scales by the ratio of dense peaks, one below it by the ratio of memory bandwidths. It
assumes the same fraction of peak on both GPUs, and is labelled as a projection everywhere.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import BenchError, results
from bench.hardware import DTYPES, SPECS, GpuSpec, get_spec, match_spec, peak_tflops
from bench.ops import get_op
from bench.report import fmt_ms, key_value_table, new_table
from bench.results import CaseResult, Estimate, ResultDoc
from bench.timing import Timing


class Verdict(str, Enum):
    """How a case's time in one run compares with the baseline run."""

    # Short words, as tables are narrow; the legend under them explains each.
    SAME = "same"  # within noise: the [p20, p80] intervals overlap
    SLOWER = "slower"  # beyond noise, but not beyond the gate's threshold (or no gate)
    FASTER = "faster"
    REGRESSION = "regressed"  # slower beyond noise and beyond the gate's threshold
    IMPROVEMENT = "improved"  # faster beyond noise and beyond the gate's threshold


_STYLE = {
    Verdict.SAME: "dim",
    Verdict.SLOWER: "yellow",
    Verdict.FASTER: "cyan",
    Verdict.REGRESSION: "bold red",
    Verdict.IMPROVEMENT: "bold green",
}


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


def spec_of(doc: ResultDoc) -> GpuSpec | None:
    """The spec-table entry of a file's device: the recorded key, else matched by name."""
    if doc.spec in SPECS:
        return SPECS[doc.spec]
    return match_spec(doc.device.name) if doc.device.kind == "cuda" else None


def measured_column(tag: str, path: Path, doc: ResultDoc) -> Column:
    """A file's cases as a column; a case whose op or shape this tokbench cannot read is a
    BenchError naming the file."""
    for n, c in enumerate(doc.cases):
        try:
            get_op(c.op).label(c.shape)
        except BenchError as e:
            raise BenchError(f"{path}: case {n}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise BenchError(
                f"{path}: case {n}: shape {c.shape} does not fit op '{c.op}' "
                f"({type(e).__name__}: {e})"
            ) from None
    cells = {
        c.key: Cell(
            c, c.timing.median_ms if usable_time(c.timing) else None, c.tflops, c.peak_fraction
        )
        for c in doc.cases
    }
    return Column(tag, doc.device.name, spec_of(doc), doc.created, cells, path=path, doc=doc)


def dense_peak(spec: GpuSpec, dtype: str) -> float | None:
    """The spec's dense peak TFLOP/s for dtype; None when it has none or the dtype is one the
    spec table does not know (an op may add dtypes the table has no column for)."""
    return peak_tflops(spec, dtype) if dtype in DTYPES else None


def ridge_point(spec: GpuSpec, dtype: str) -> float | None:
    """FLOP per byte at which the GPU's dense peak for dtype and its bandwidth meet."""
    peak = dense_peak(spec, dtype)
    return peak * 1e12 / (spec.bandwidth_gbs * 1e9) if peak else None


def projection_factor(
    case: CaseResult, source: GpuSpec, target: GpuSpec
) -> tuple[float, str] | None:
    """(time on target / time on source, "compute" or "memory"), or None when either GPU has no
    peak for the case's dtype."""
    ridge = ridge_point(source, case.dtype)
    target_peak = dense_peak(target, case.dtype)
    if ridge is None or not target_peak:
        return None
    intensity = case.flops / case.bytes if case.bytes > 0 else math.inf
    if intensity >= ridge:
        return dense_peak(source, case.dtype) / target_peak, "compute"
    return source.bandwidth_gbs / target.bandwidth_gbs, "memory"


def project_cell(case: CaseResult, source: GpuSpec, target: GpuSpec) -> Cell | None:
    """A comparable case's projected time and roofline figures on target, or None."""
    factor = projection_factor(case, source, target)
    if factor is None or not usable(case):
        return None
    scale, bound = factor
    ms = case.timing.median_ms * scale
    tflops = case.flops / (ms / 1e3) / 1e12
    return Cell(case, ms, tflops, tflops / dense_peak(target, case.dtype), bound=bound)


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
        return f"{c.op} {get_op(c.op).label(c.shape)} {c.dtype} {c.impl}"


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
                    out.append(f"{row.label}: {col.tag} is {_slowdown(up)} than A")
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


def _slowdown(speedup: float) -> str:
    """0.9 -> "11.1% slower"; 0.1 -> "10.0× slower" (a percentage in the thousands reads badly)."""
    ratio = 1 / speedup
    return f"{ratio:.1f}× slower" if ratio >= 2 else f"{ratio - 1:.1%} slower"


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
    columns = [measured_column(next(tags), Path(p), results.load(p)) for p in paths]
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


# --- tables --------------------------------------------------------------------------------------


def tables(comparison: Comparison, width: int = 120) -> list[Table]:
    """Legend, side-by-side tables per op, and geometric means, laid out for a console of width
    columns: when every column side by side is wider, one table per later column beside A."""
    out = [_legend(comparison)]
    for op in dict.fromkeys(r.case.op for r in comparison.rows):
        out += _op_tables(comparison, op, width)
    if len(comparison.columns) > 1:
        geomeans = _geomean_table(comparison)
        if geomeans.row_count:
            out.append(geomeans)
    if estimate_groups(comparison):
        out.append(_estimates_table(comparison))
    return out


def _legend(comparison: Comparison) -> Table:
    table = key_value_table("compare", no_wrap_keys=True)
    for col in comparison.columns:
        device = f"{col.device} ({col.spec.name})" if col.spec else col.device
        if col.measured:
            what = f"{escape(str(col.path))}: {escape(device)}, {col.date}, suite {col.doc.suite}"
        else:
            what = (
                f"[italic]{escape(col.device)}: PROJECTION from {col.projected_from} through the "
                "spec table (dense-peak ratio when compute-bound, bandwidth ratio when "
                "memory-bound); not measured[/italic]"
            )
        table.add_row(col.tag, what)
    table.add_row("vs A", "speedup over A: A time / this time, above 1 is faster")
    for word, meaning in _words(comparison):
        table.add_row(word, escape(meaning))
    if comparison.threshold is not None:
        gate = f"a case more than {comparison.threshold:.0%} slower than in A, outside both runs'"
        table.add_row(
            "gate",
            escape(
                f"{gate} [p20, p80] spread, fails (exit 1); so does a case timed in A that a "
                "later file failed, skipped, lacks or has no usable time for"
            ),
        )
    for note in comparison.notes:
        table.add_row("note", escape(note))
    return table


def _words(comparison: Comparison) -> list[tuple[str, str]]:
    """The short words the side-by-side tables use that this comparison shows, explained."""
    seen = {v for r in comparison.rows for v in r.verdicts if v}
    gate = comparison.threshold
    under = f" but within the {gate:.0%} gate" if gate is not None else ""
    out = []
    if Verdict.SAME in seen:
        out.append(("same", "within noise: the two runs' [p20, p80] spreads overlap"))
    if seen & {Verdict.SLOWER, Verdict.FASTER}:
        out.append(("slower, faster", f"beyond noise (the spreads do not overlap){under}"))
    if seen & {Verdict.REGRESSION, Verdict.IMPROVEMENT}:
        out.append(
            ("regressed, improved", f"beyond noise and beyond the {gate:.0%} gate (either way)")
        )
    if any(not c.measured for c in comparison.columns):
        out.append(("memory, compute", "the bound a projection scaled by"))
    problems = sorted({p.word for r in comparison.rows for p in r.problems if p})
    if problems:
        fails = "; fails the gate" if gate is not None else ""
        out.append((", ".join(problems), f"timed in A, no usable time in this file{fails}"))
    partial = len(comparison.partial())
    if partial:
        out.append(("—", f"not in that file ({partial} cases are in only some files)"))
    return out


def _op_tables(comparison: Comparison, op: str, width: int) -> list[Table]:
    """All columns side by side when that fits width; else A beside each later column."""
    n = len(comparison.columns)
    table = _op_table(comparison, op, range(n))
    if n <= 2 or Console(width=10_000).measure(table).maximum <= width:
        return [table]
    return [_op_table(comparison, op, (0, i)) for i in range(1, n)]


def _op_table(comparison: Comparison, op_name: str, shown: Sequence[int]) -> Table:
    op = get_op(op_name)
    columns = [(i, comparison.columns[i]) for i in shown]
    title = f"{op.name}: {op.description}"
    if len(columns) < len(comparison.columns):
        title += f" — {columns[-1][1].tag} vs A"
    table = new_table(escape(title))
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", overflow="fold")
    table.add_column("impl", overflow="fold")
    for i, col in columns:
        proj = " proj." if col.projected_from else ""
        table.add_column(f"{col.tag}{proj}\ntime", justify="right", no_wrap=True)
        table.add_column(f"{col.tag}\nTFLOP/s", justify="right", no_wrap=True)
        if col.spec is not None:
            table.add_column(f"{col.tag} %\npeak", justify="right", no_wrap=True)
        if i > 0:
            table.add_column(f"{col.tag}\nvs A", no_wrap=True)
    for row in (r for r in comparison.rows if r.case.op == op_name):
        if all(row.cells[i] is None for i, _ in columns):
            continue
        cells = [op.label(row.case.shape), row.case.dtype, row.case.impl]
        for i, col in columns:
            cells += _cells(row, i, col, comparison.threshold)
        table.add_row(*cells)
    return table


def _cells(row: Row, i: int, col: Column, threshold: float | None) -> list[str]:
    """time, TFLOP/s, [% peak], [vs A] for one row in one column."""
    cell = row.cells[i]
    out = [_time_text(cell)]
    out.append(f"{cell.tflops:.3g}" if cell and cell.speed and cell.tflops is not None else "")
    if col.spec is not None:
        frac = cell.peak_fraction if cell and cell.speed else None
        out.append(f"{100 * frac:.0f}%" if frac is not None else "")
    if i > 0:
        problem = row.problems[i] if row.problems else None
        if problem is not None:
            out.append(f"[{'bold red' if threshold is not None else 'red'}]{problem.word}[/]")
        else:
            out.append(_vs_text(row.speedups[i], row.verdicts[i], cell))
    return out


def times(ratio: float) -> str:
    """1.234 -> "1.23×"; ratios too small or large for two decimals keep two figures."""
    return f"{ratio:.2f}×" if 0.01 <= ratio < 1000 else f"{ratio:.2g}×"


def _time_text(cell: Cell | None) -> str:
    if cell is None:
        return "[dim]—[/dim]"
    c = cell.case
    if c.status != "ok":
        return "[red]failed[/red]" if c.status == "failed" else "[dim]skipped[/dim]"
    if cell.median_ms is None:
        return "[red]bad time[/red]" if c.timing is not None else ""
    text = fmt_ms(cell.median_ms)
    return f"[dim]{text} interp.[/dim]" if c.interpreted else text


def _vs_text(speedup: float | None, v: Verdict | None, cell: Cell | None) -> str:
    if speedup is None:
        return ""
    text = times(speedup)
    if cell is not None and cell.projected:
        return f"{text} [dim]{cell.bound}[/dim]"
    if v is None:
        return text
    return f"{text} [{_STYLE[v]}]{v.value}[/]"


def _geomean_table(comparison: Comparison) -> Table:
    """Per op and later column with at least one case timed in both: the geometric mean."""
    table = new_table(
        "per op: geometric mean of the speedup over A",
        ("op", "column", "geomean vs A", "cases", "verdicts"),
        left={"op", "column", "verdicts"},
    )
    for op, per_column in comparison.geomeans().items():
        for i, col in enumerate(comparison.columns[1:], start=1):
            gm = per_column[i]
            if gm is None:
                continue
            name = f"{col.tag} (projection)" if col.projected_from else col.tag
            table.add_row(op, name, times(gm[0]), str(gm[1]), _verdict_counts(comparison, op, i))
    return table


def _verdict_counts(comparison: Comparison, op: str, i: int) -> str:
    tally: dict[str, int] = {}
    for row in comparison.rows:
        if row.case.op != op:
            continue
        v, p = row.verdicts[i], row.problems[i] if row.problems else None
        word = v.value if v is not None else p.word if p is not None else None
        if word is not None:
            tally[word] = tally.get(word, 0) + 1
    return ", ".join(f"{n} {word}" for word, n in tally.items())


# --- estimates -----------------------------------------------------------------------------------


def estimate_key(e: Estimate) -> tuple:
    """What identifies an estimate across files: the model and how it is served."""
    return (e.model, e.tp, e.precision, e.isl, e.osl)


def estimate_groups(comparison: Comparison) -> dict[tuple, list[tuple[Column, Estimate]]]:
    """The measured files' saved estimates, grouped by estimate_key, in file order."""
    groups: dict[tuple, list[tuple[Column, Estimate]]] = {}
    for col in comparison.columns:
        for e in col.doc.estimates if col.measured else ():
            groups.setdefault(estimate_key(e), []).append((col, e))
    return groups


def tokens_per_watt(e: Estimate) -> float | None:
    """Decode tokens/s per watt of the GPU's spec-sheet power (TDP), when the spec is known."""
    spec = SPECS.get(e.spec or "")
    return e.decode_tokens_per_s / spec.power_w if spec else None


def serving_output_tokens_per_s(e: Estimate) -> float:
    """Output tokens/s per GPU in the serving mix (isl in, osl out per request), as `capacity`
    plans with: lower than decode alone at the largest batch, which is an upper bound."""
    return e.requests_per_s * e.osl


def tokens_per_dollar(e: Estimate, prices: dict[str, float]) -> float | None:
    """Output tokens per USD in the serving mix at a price per GPU-hour (fully utilised), when
    one was given for the GPU."""
    price = prices.get(e.spec or "")
    return serving_output_tokens_per_s(e) * 3600 / price if price else None


def _estimates_table(comparison: Comparison) -> Table:
    groups = estimate_groups(comparison)
    entries = [e for group in groups.values() for _, e in group]
    per_watt = any(tokens_per_watt(e) is not None for e in entries)
    per_dollar = any(tokens_per_dollar(e, comparison.prices) is not None for e in entries)
    title = (
        "per-model estimates, per GPU; decode at the largest batch estimated"
        + ("; per W: decode tok/s per watt of spec-sheet power" if per_watt else "")
        + (
            "; serving out Mtok/$: output tokens per USD at --price in the serving mix "
            "(isl in, osl out; req/s × osl), as capacity plans, at full utilisation"
            if per_dollar
            else ""
        )
    )
    heads = ["model", "file", "GPU", "prefill tok/s", "decode tok/s", "vs first", "max batch"]
    heads += ["req/s"] + ["per W"] * per_watt + ["serving out Mtok/$"] * per_dollar
    table = new_table(title, heads, left=heads[:3])
    for (model, tp, precision, isl, osl), group in groups.items():
        first = group[0][1].decode_tokens_per_s
        for col, e in group:
            cells = [
                escape(f"{model} TP{tp} {precision} {isl}→{osl}"),
                col.tag,
                escape(e.gpu) + (" [italic](projection)[/italic]" if e.projected else ""),
                f"{e.prefill_tokens_per_s:,.0f}",
                f"{e.decode_tokens_per_s:,.0f}",
                times(e.decode_tokens_per_s / first) if first > 0 else "",
                str(e.max_batch),
                f"{e.requests_per_s:.3g}",
            ]
            if per_watt:
                watt = tokens_per_watt(e)
                cells.append(f"{watt:.3g}" if watt is not None else "")
            if per_dollar:
                dollar = tokens_per_dollar(e, comparison.prices)
                cells.append(f"{dollar / 1e6:.3g}" if dollar is not None else "")
            table.add_row(*cells)
    return table


# --- the gate's verdict ---------------------------------------------------------------------------


def gate_report(comparison: Comparison, fail_on: str) -> tuple[list[str], bool]:
    """The gate's lines (console markup) and whether it passed: a warning per later file whose
    run is incomplete, a line per regression and per broken case, then the outcome."""
    lines = [
        f"[yellow]warning:[/yellow] {col.tag} ({escape(str(col.path))}) is an incomplete run: "
        "it was interrupted or is still running; cases it lacks count as missing"
        for col in comparison.incomplete()
    ]
    regressions, broken = comparison.regressions(), comparison.broken()
    lines += [f"[bold red]regression:[/bold red] {escape(line)}" for line in regressions]
    lines += [f"[bold red]broken:[/bold red] {escape(line)}" for line in broken]
    gate = f"gate {escape(fail_on)}"
    if regressions or broken:
        lines.append(
            f"{gate}: [bold red]failed[/bold red] ({_count(len(regressions), 'regression')}, "
            f"{_count(len(broken), 'broken case')}; {_count(comparison.judged(), 'comparison')})"
        )
        return lines, False
    lines.append(f"{gate}: passed ({_count(comparison.judged(), 'comparison')})")
    return lines, True


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
