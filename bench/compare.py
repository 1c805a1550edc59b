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

from rich.markup import escape
from rich.table import Table

from bench import BenchError, results
from bench.hardware import DTYPES, SPECS, GpuSpec, get_spec, match_spec, peak_tflops
from bench.ops import get_op
from bench.report import fmt_ms
from bench.results import CaseResult, Estimate, ResultDoc
from bench.timing import Timing


class Verdict(str, Enum):
    """How a case's time in one run compares with the baseline run."""

    SAME = "same (within noise)"  # the [p20, p80] intervals overlap
    SLOWER = "slower"  # beyond noise, but not beyond the gate's threshold (or no gate)
    FASTER = "faster"
    REGRESSION = "regression"  # slower beyond noise and beyond the gate's threshold
    IMPROVEMENT = "improvement"  # faster beyond noise and beyond the gate's threshold


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


_FAIL_ON = re.compile(r"slower:(\d+(?:\.\d*)?)%?")


def parse_fail_on(text: str) -> float:
    """ "slower:5%" -> 0.05."""
    match = _FAIL_ON.fullmatch(text.strip().lower())
    if not match:
        raise BenchError(f"bad --fail-on '{text}'; expected slower:PERCENT, e.g. slower:5%")
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


@dataclass(frozen=True)
class Cell:
    """One case as one column sees it: a measured record, or a projection of one."""

    case: CaseResult  # the measured record; for a projection, the source file's record
    median_ms: float | None  # None when the case was not timed
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
    cells = {
        c.key: Cell(c, c.timing.median_ms if c.timing else None, c.tflops, c.peak_fraction)
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
    if factor is None or not case.comparable:
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


@dataclass
class Row:
    """One case across all columns."""

    case: CaseResult  # the first record found, for op, implementation, dtype and shape
    cells: list[Cell | None]  # per column; None where the column lacks the case
    speedups: list[float | None]  # baseline time / this time, per column
    verdicts: list[Verdict | None]  # per column; None for A, projections, uncomparable cases

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
        """One line per case and column that the gate fails."""
        out = []
        for row in self.rows:
            for col, v, up in zip(self.columns, row.verdicts, row.speedups, strict=True):
                if v is Verdict.REGRESSION:
                    out.append(f"{row.label}: {col.tag} is {_slowdown(up)} than A")
        return out

    def judged(self) -> int:
        """How many (case, column) pairs the gate judged."""
        return sum(v is not None for row in self.rows for v in row.verdicts)

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
    if threshold is not None and not comparison.judged():
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
            if i > 0 and col.measured and base and c and base.case.comparable and c.case.comparable
            else None
            for i, (col, c) in enumerate(zip(columns, cells, strict=True))
        ]
        rows.append(Row(case, cells, speedups, verdicts))
    # Group by op, keeping first-seen order within each op.
    order = {op: i for i, op in enumerate(dict.fromkeys(r.case.op for r in rows))}
    return sorted(rows, key=lambda r: order[r.case.op])


def _notes(columns: list[Column]) -> list[str]:
    notes = []
    for col in columns:
        if col.measured and not col.doc.complete:
            notes.append(f"{col.tag} is an incomplete run: the sweep was interrupted or is running")
        if col.projected_from:
            source = next(c for c in columns if c.tag == col.projected_from)
            skipped = sum(1 for c in source.cells.values() if c.case.comparable) - len(col.cells)
            if skipped:
                notes.append(
                    f"{col.tag}: {skipped} comparable cases of {source.tag} not projected "
                    f"({col.device} or {source.spec.name} has no peak for their dtype)"
                )
    return notes


# --- tables --------------------------------------------------------------------------------------


def tables(comparison: Comparison) -> list[Table]:
    """Legend, one side-by-side table per op, geometric means, and cases in only some files."""
    out = [_legend(comparison)]
    for op in dict.fromkeys(r.case.op for r in comparison.rows):
        out.append(_op_table(comparison, op))
    if len(comparison.columns) > 1:
        out.append(_geomean_table(comparison))
    if comparison.partial():
        out.append(_partial_table(comparison))
    if estimate_groups(comparison):
        out.append(_estimates_table(comparison))
    return out


def _legend(comparison: Comparison) -> Table:
    table = Table(title="compare", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
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
    if comparison.threshold is not None:
        gate = f"a case more than {comparison.threshold:.0%} slower than in A, outside both runs'"
        table.add_row("gate", escape(f"{gate} [p20, p80] spread, fails (exit 1)"))
    for note in comparison.notes:
        table.add_row("note", escape(note))
    return table


def _op_table(comparison: Comparison, op_name: str) -> Table:
    op = get_op(op_name)
    table = Table(title=f"{op.name}: {op.description}", title_justify="left")
    for name in ("shape", "dtype", "impl"):
        table.add_column(name)
    for i, col in enumerate(comparison.columns):
        proj = " (proj.)" if col.projected_from else ""
        table.add_column(f"{col.tag} time{proj}", justify="right")
        table.add_column(f"{col.tag} TFLOP/s", justify="right")
        if col.spec is not None:
            table.add_column(f"{col.tag} % peak", justify="right")
        if i > 0:
            table.add_column(f"{col.tag} vs A", justify="left")
    for row in (r for r in comparison.rows if r.case.op == op_name):
        cells = [op.label(row.case.shape), row.case.dtype, row.case.impl]
        for i, col in enumerate(comparison.columns):
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
        out.append(_vs_text(row.speedups[i], row.verdicts[i], cell, threshold))
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
        return ""
    text = fmt_ms(cell.median_ms)
    return f"[dim]{text} interp.[/dim]" if c.interpreted else text


def _vs_text(
    speedup: float | None, v: Verdict | None, cell: Cell | None, threshold: float | None
) -> str:
    if speedup is None:
        return ""
    text = times(speedup)
    if cell is not None and cell.projected:
        return f"{text} [dim]{cell.bound}-bound[/dim]"
    if v is None:
        return text
    label = v.value
    if threshold is not None and v in (Verdict.SLOWER, Verdict.FASTER):
        label += f" (< {threshold:.0%})"
    return f"{text} [{_STYLE[v]}]{label}[/]"


def _geomean_table(comparison: Comparison) -> Table:
    table = Table(title="per op: geometric mean of the speedup over A", title_justify="left")
    for name in ("op", "column", "geomean vs A", "cases", "verdicts"):
        table.add_column(name, justify="right" if name in ("geomean vs A", "cases") else "left")
    for op, per_column in comparison.geomeans().items():
        for i, col in enumerate(comparison.columns[1:], start=1):
            gm = per_column[i]
            name = f"{col.tag} (projection)" if col.projected_from else col.tag
            table.add_row(
                op,
                name,
                times(gm[0]) if gm else "",
                str(gm[1]) if gm else "0",
                _verdict_counts(comparison, op, i),
            )
    return table


def _verdict_counts(comparison: Comparison, op: str, i: int) -> str:
    tally: dict[Verdict, int] = {}
    for row in comparison.rows:
        v = row.verdicts[i]
        if row.case.op == op and v is not None:
            tally[v] = tally.get(v, 0) + 1
    return ", ".join(f"{n} {v.value}" for v, n in tally.items())


def _partial_table(comparison: Comparison) -> Table:
    table = Table(title="cases present in only some files", title_justify="left")
    for name in ("op", "shape", "dtype", "impl", "in", "missing from"):
        table.add_column(name)
    measured = [(i, c) for i, c in enumerate(comparison.columns) if c.measured]
    for row in comparison.partial():
        c = row.case
        have = [col.tag for i, col in measured if row.cells[i] is not None]
        lack = [col.tag for i, col in measured if row.cells[i] is None]
        table.add_row(
            c.op, get_op(c.op).label(c.shape), c.dtype, c.impl, ", ".join(have), ", ".join(lack)
        )
    return table


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


def tokens_per_dollar(e: Estimate, prices: dict[str, float]) -> float | None:
    """Decode tokens per USD at a price per GPU-hour, when one was given for the GPU."""
    price = prices.get(e.spec or "")
    return e.decode_tokens_per_s * 3600 / price if price else None


def _estimates_table(comparison: Comparison) -> Table:
    groups = estimate_groups(comparison)
    entries = [e for group in groups.values() for _, e in group]
    per_watt = any(tokens_per_watt(e) is not None for e in entries)
    per_dollar = any(tokens_per_dollar(e, comparison.prices) is not None for e in entries)
    table = Table(
        title="per-model estimates, per GPU; decode at the largest batch estimated"
        + ("; per W: decode tok/s per watt of spec-sheet power" if per_watt else "")
        + ("; per $: decode tokens per USD at --price" if per_dollar else ""),
        title_justify="left",
    )
    heads = ["model", "file", "GPU", "prefill tok/s", "decode tok/s", "vs first", "max batch"]
    heads += ["req/s"] + ["per W"] * per_watt + ["Mtok per $"] * per_dollar
    for head in heads:
        table.add_column(head, justify="left" if head in heads[:3] else "right")
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
